"""The per-order scoring path beside the micro-batch (issue 15): ``validate`` checks one order as silver would."""
