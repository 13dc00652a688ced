"""``ecom ui``: the address of the MLflow UI (started if needed) and of every Spark UI that is up.

MLflow: with a local tracking store (``sqlite:///...``) it serves ``mlflow ui`` on
``127.0.0.1:<mlflow.ui_port>`` over that store and registry, as the background process ``mlflow-ui``
(``ecom logs mlflow-ui``; ``ecom down`` stops it); a tracking server (``http(s)://...``) is its own UI.

Spark: each Spark application (``ecom stream``, the gold batch, ...) serves its UI when ``spark.ui_enabled``
is true, the first on ``spark.ui_port`` and the next ones on the ports after it; the applications found
there (Spark's REST API) are listed by name.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from typing import TYPE_CHECKING

from ecom.errors import ServiceError
from ecom.runtime.process import ManagedProcess, port_open, wait_until

if TYPE_CHECKING:
    from ecom.settings import Settings

HOST = "127.0.0.1"
MLFLOW_PROCESS = "mlflow-ui"
SPARK_UI_PORTS = 16  # Spark's default spark.port.maxRetries: how far past ui_port a UI may be
START_TIMEOUT_S = 90.0


def mlflow_command(settings: Settings) -> list[str]:
    """``mlflow ui`` over the configured tracking store and registry, one worker, on 127.0.0.1 only."""
    m = settings.mlflow
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", m.tracking_uri, "--registry-store-uri", m.tracking_uri,
        "--default-artifact-root", m.artifact_root,
        "--host", HOST, "--port", str(m.ui_port), "--workers", "1",
    ]  # fmt: skip


def mlflow_url(settings: Settings, start: bool = True, echo=print) -> str:
    """The MLflow UI's address; a local store's UI is started first if it is not up (and ``start``)."""
    uri = settings.mlflow.tracking_uri
    if uri.startswith(("http://", "https://")):
        return uri
    url = f"http://{HOST}:{settings.mlflow.ui_port}/"
    proc = ManagedProcess(MLFLOW_PROCESS, settings.run_dir)
    if port_open(HOST, settings.mlflow.ui_port):
        if not proc.is_running():
            echo(f"note: port {settings.mlflow.ui_port} is served by a process `ecom` did not start")
        return url
    if not start:
        raise ServiceError(f"the MLflow UI is not running; `ecom ui` starts it on {url}")
    from ecom.runtime.stack import prepare_mlflow

    prepare_mlflow(settings)  # the store and experiment exist before the UI opens them
    echo(f"starting the MLflow UI on {url} (log: {proc.log_file}) ...")
    proc.start(mlflow_command(settings))
    if not wait_until(lambda: port_open(HOST, settings.mlflow.ui_port) or not proc.is_running(), START_TIMEOUT_S):
        proc.stop()
        raise ServiceError(f"the MLflow UI did not come up on {url} in {START_TIMEOUT_S:.0f} s; see {proc.log_file}")
    if not proc.is_running():
        raise ServiceError(f"the MLflow UI exited: {proc.log_tail(3)}")
    return url


def spark_uis(settings: Settings, timeout_s: float = 2.0) -> list[tuple[str, str]]:
    """(url, application names) of every Spark UI answering on ``spark.ui_port`` and the ports after it."""
    found = []
    for port in range(settings.spark.ui_port, settings.spark.ui_port + SPARK_UI_PORTS):
        if not port_open(HOST, port, timeout=0.2):
            continue
        url = f"http://{HOST}:{port}/"
        try:
            with urllib.request.urlopen(f"{url}api/v1/applications", timeout=timeout_s) as response:
                apps = json.loads(response.read())
        except (OSError, ValueError):
            continue  # another kind of server on that port
        if isinstance(apps, list) and apps:
            found.append((url, ", ".join(str(a.get("name", "?")) for a in apps)))
    return found


def add_ui_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-start", action="store_true", help="only print addresses; do not start the MLflow UI")
    parser.add_argument("--stop", action="store_true", help="stop the MLflow UI that `ecom ui` started")


def run_ui(settings: Settings, args: argparse.Namespace) -> int:
    if args.stop:
        stopped = ManagedProcess(MLFLOW_PROCESS, settings.run_dir).stop()
        print("MLflow UI stopped" if stopped else "the MLflow UI was not running")
        return 0
    try:
        print(f"MLflow UI  {mlflow_url(settings, start=not args.no_start)}", flush=True)
    except ServiceError as exc:
        if not args.no_start:
            raise
        print(f"MLflow UI  not running ({exc})")
    uis = spark_uis(settings)
    for url, apps in uis:
        print(f"Spark UI   {url}  ({apps})")
    if not uis:
        if settings.spark.ui_enabled:
            print(f"Spark UI   none: no Spark application runs (they serve it from port {settings.spark.ui_port} on)")
        else:
            print(
                "Spark UI   off (spark.ui_enabled: false); start the stream with ECOM_SPARK__UI_ENABLED=true to serve it"
            )
    return 0
