"""Plotly Dash dashboard (Bootstrap CYBORG theme): reads PostgreSQL only, refreshes every few seconds.

Pages live in ``dashboard/pages/``, one module each, registered with
``dash.register_page``. Data comes only through ``serving.queries``.
Run with ``ecom dashboard`` (or ``python -m dashboard.app``).
"""

from __future__ import annotations

from pathlib import Path

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

from dashboard import ids
from ecom.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> dash.Dash:
    settings = settings or get_settings()
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder=str(Path(__file__).parent / "pages"),
        # Bootswatch CYBORG is served from dashboard/assets/, so the page is styled offline too.
        title="E-commerce lakehouse",
        suppress_callback_exceptions=True,
    )
    nav = dbc.NavbarSimple(
        brand="E-commerce lakehouse",
        children=[
            dbc.NavItem(dbc.NavLink(page["name"], href=page["relative_path"])) for page in dash.page_registry.values()
        ],
        color="dark",
        dark=True,
    )
    app.layout = html.Div(
        [
            nav,
            dcc.Interval(id=ids.REFRESH, interval=settings.dashboard.refresh_ms, n_intervals=0),
            dbc.Container(dash.page_container, fluid=True, className="pt-3"),
        ]
    )
    return app


def main() -> None:
    settings = get_settings()
    create_app(settings).run(host=settings.dashboard.host, port=settings.dashboard.port, debug=False)


if __name__ == "__main__":
    main()
