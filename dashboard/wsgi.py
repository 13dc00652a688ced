"""WSGI entry point: ``gunicorn 'dashboard.wsgi:server'`` (settings from ``ECOM_PROFILE`` and the environment).

Layer: dashboard. ``ecom dashboard`` runs the same app with gunicorn itself
(``dashboard.server``); this module is for running it under a WSGI server of
your own.
"""

from dashboard.app import create_app

app = create_app()
server = app.server
