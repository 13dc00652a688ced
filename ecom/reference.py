"""Reference data shared by the simulator and the gold layer.

``FX_PER_USD`` is the project's one foreign-exchange reference: units of each
order currency per US dollar. The simulator prices its catalogue with it, and
the gold layer publishes it as the ``gold/fx_rates`` dimension (and PostgreSQL
``fx_rates``), from which every gold figure and the dashboard convert to the
reporting currency. The rates are fixed demo rates, rounded mid-market rates
of the date below; a real shop would load a daily feed into the same table.
"""

from datetime import date

FX_PER_USD = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "CAD": 1.36, "AUD": 1.52, "JPY": 150.0, "BRL": 5.0, "INR": 83.0}
FX_SOURCE = "ecom demo reference rates: rounded mid-market rates, fixed (ecom/reference.py)"
FX_AS_OF = date(2024, 6, 3)


def units_per(currency: str, reporting_currency: str = "USD") -> float:
    """Units of ``currency`` per one unit of ``reporting_currency`` (``amount / units_per`` converts)."""
    return FX_PER_USD[currency] / FX_PER_USD[reporting_currency]
