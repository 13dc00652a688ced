"""Serving the dashboard: gunicorn in-process (production), or Flask's development server (``--dev``).

Layer: dashboard. Input: the settings (``dashboard.host``, ``port``,
``workers``, ``threads``). The app is built once in the master process
(sign-in is checked before anything listens) and forked into the workers;
each worker opens its own PostgreSQL pool on first use.
"""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from dashboard.app import create_app
from ecom.settings import Settings


class _Gunicorn(BaseApplication):
    def __init__(self, wsgi_app, options: dict):
        self.wsgi_app = wsgi_app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.wsgi_app


def gunicorn_options(settings: Settings) -> dict:
    d = settings.dashboard
    return {
        "bind": f"{d.host}:{d.port}",
        "workers": d.workers,
        "threads": d.threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "ecom-dashboard",
    }


def serve(settings: Settings, dev: bool = False) -> None:
    """Serve until stopped (SIGTERM or Ctrl-C)."""
    app = create_app(settings)
    d = settings.dashboard
    if dev:
        app.run(host=d.host, port=d.port, debug=True, use_reloader=False)
        return
    _Gunicorn(app.server, gunicorn_options(settings)).run()
