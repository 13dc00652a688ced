"""``ecom ui``: starts the real MLflow UI on 127.0.0.1 over the configured tracking store, answers over HTTP,
is found again rather than started twice, and stops; lists a Spark UI found on the configured ports.

The tracking store is a temporary SQLite file; the Spark UI is a stand-in HTTP server answering Spark's REST
path ``/api/v1/applications`` (a real Spark UI needs a Spark job with ``spark.ui_enabled``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ecom.runtime.process import port_open
from tests.faults import free_port_in

pytestmark = pytest.mark.integration

PORTS = range(39100, 39200)  # ECOM_TEST_UI_PORTS="first-last" moves them


def free_port() -> int:
    """A free port on 127.0.0.1 in the test's range."""
    first, last = (int(p) for p in os.environ.get("ECOM_TEST_UI_PORTS", f"{PORTS[0]}-{PORTS[-1]}").split("-"))
    candidates = list(range(first, last + 1))
    random.shuffle(candidates)
    return free_port_in(candidates)


class SparkRestStandIn(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps([{"id": "local-1", "name": "ecom-stream-all"}]).encode()
        self.send_response(200 if self.path == "/api/v1/applications" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def spark_ui():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), SparkRestStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_ui_starts_mlflow_over_the_tracking_store_finds_a_spark_ui_and_stops(tmp_path, spark_ui):
    mlflow_port = free_port()
    env = {
        **os.environ,
        "ECOM_PROFILE": "test",
        "ECOM_MLFLOW__UI_PORT": str(mlflow_port),
        "ECOM_MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "ECOM_MLFLOW__ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "ECOM_MLFLOW__EXPERIMENT": "ui-test",
        "ECOM_SPARK__UI_PORT": str(spark_ui),
    }

    def ecom_ui(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "ecom.cli", "ui", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)

    url = f"http://127.0.0.1:{mlflow_port}/"
    try:
        first = ecom_ui()
        assert first.returncode == 0, first.stderr[-2000:]
        assert f"MLflow UI  {url}" in first.stdout.splitlines()
        assert f"Spark UI   http://127.0.0.1:{spark_ui}/  (ecom-stream-all)" in first.stdout.splitlines()
        assert "starting the MLflow UI" in first.stdout

        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
        by_name = f"{url}api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-test"
        with urllib.request.urlopen(by_name, timeout=30) as response:  # the configured store, prepared by `ecom ui`
            experiment = json.loads(response.read())["experiment"]
        assert experiment["artifact_location"] == (tmp_path / "artifacts").as_uri()

        again = ecom_ui("--no-start")
        assert again.returncode == 0 and "starting" not in again.stdout
        assert f"MLflow UI  {url}" in again.stdout.splitlines()
    finally:
        stopped = ecom_ui("--stop")
    assert stopped.stdout == "MLflow UI stopped\n"
    assert not port_open("127.0.0.1", mlflow_port)
    after = ecom_ui("--no-start")
    assert f"MLflow UI  not running (the MLflow UI is not running; `ecom ui` starts it on {url})" in after.stdout
