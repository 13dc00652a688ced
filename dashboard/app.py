"""Plotly Dash dashboard (Bootstrap CYBORG theme): reads PostgreSQL only, refreshes every few seconds, signed in.

Layer: dashboard. Input: PostgreSQL through ``serving.queries`` (the
read-only role, ``dashboard.data``), Kafka end offsets and the stream's
checkpoint for the lag, the MLflow registry for the champion. Output: five
pages in ``dashboard/pages/`` (Overview, Fraud, Customers, Products &
recommendations, Pipeline health), one module each, registered with
``dash.register_page``. ``create_app(settings).server`` is the WSGI app for
gunicorn (``dashboard.wsgi:server``); ``ecom dashboard`` serves it with
gunicorn (``--dev``: Flask's development server).
"""

from __future__ import annotations

from pathlib import Path

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html
from flask import current_app, has_app_context, has_request_context

from dashboard import auth, ids
from dashboard.data import Reader, reader_for
from ecom.settings import Settings, get_settings

TITLE = "E-commerce lakehouse"


def settings_and_reader() -> tuple[Settings, Reader]:
    """The app's settings and this process's reader, inside a request (callbacks)."""
    settings = (current_app.config.get("ECOM_SETTINGS") if has_app_context() else None) or get_settings()
    return settings, reader_for(settings)


def _nav() -> dbc.Navbar:
    links = [
        dbc.NavItem(dbc.NavLink(page["name"], href=page["relative_path"], active="exact"))
        for page in dash.page_registry.values()
    ]
    signed_in = has_request_context() and current_app.config.get("ECOM_AUTH_ENABLED")
    user = auth.current_user() if signed_in else None
    if user:
        links.append(dbc.NavItem(dbc.NavLink(f"Sign out ({user})", href="/logout", external_link=True, id=ids.USER)))
    return dbc.NavbarSimple(brand=TITLE, brand_href="/", children=links, color="dark", dark=True, fluid=True)


def create_app(settings: Settings | None = None, users: dict[str, str] | None = None) -> dash.Dash:
    """The Dash app. ``users`` default: from the environment (``dashboard.auth``); outside the test
    profile it raises ``auth.AuthConfigError`` when there are none."""
    settings = settings or get_settings()
    if users is None:
        users = auth.required_users(settings.profile)
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder=str(Path(__file__).parent / "pages"),
        # Bootswatch CYBORG is served from dashboard/assets/, so the page is styled offline too.
        title=TITLE,
        update_title=None,  # no "Updating..." in the tab title on every refresh
        suppress_callback_exceptions=True,
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    app.server.config["ECOM_SETTINGS"] = settings
    auth.install(app.server, users)

    def layout() -> html.Div:
        return html.Div(
            [
                dcc.Location(id=ids.URL),
                _nav(),
                dcc.Interval(id=ids.REFRESH, interval=settings.dashboard.refresh_ms, n_intervals=0),
                dbc.Container(dash.page_container, fluid=True, className="pt-3 pb-5"),
            ]
        )

    app.layout = layout
    # Register the scripts now, in every process that builds the app: Dash does it when it renders the index
    # page, and a gunicorn worker asked for a script by a page another worker rendered would refuse it.
    with app.server.test_request_context("/"):
        app._setup_server()
        app.index()
    return app
