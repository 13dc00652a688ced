"""Reference data shared by the simulator and the serving queries."""

# Units of each currency per US dollar (fixed demo rates; a real shop would load daily rates).
FX_PER_USD = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "CAD": 1.36, "AUD": 1.52, "JPY": 150.0, "BRL": 5.0, "INR": 83.0}
