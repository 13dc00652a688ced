"""Small layout pieces shared by the pages."""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import html


def kpi_card(title: str, value_id: str) -> dbc.Card:
    """A card with a title and one big number, filled by a callback through ``value_id``."""
    return dbc.Card(dbc.CardBody([html.H6(title, className="text-muted"), html.H3("–", id=value_id)]))
