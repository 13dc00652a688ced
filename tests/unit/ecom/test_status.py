"""How `ecom status` reads a process's health endpoint, without the stack."""

import os
import socket

import pytest

from ecom import metrics
from ecom.health import Check
from ecom.runtime.stack import ServiceStatus, _process_status
from ecom.settings import load_settings


@pytest.fixture
def stage():
    """A served ``stream_silver`` endpoint on a free port: (its Health, its /healthz URL)."""
    settings = load_settings("test", environ={"ECOM_METRICS__PORTS__STREAM_SILVER": "0"})
    metrics.stop_serving("stream_silver")
    health = metrics.serve(settings, "stream_silver")
    host, port = metrics.serving_address("stream_silver")
    yield health, f"http://{host}:{port}/healthz"
    metrics.stop_serving("stream_silver")


def test_a_process_answering_200_runs_and_one_answering_503_is_down(stage):
    health, url = stage
    health.add("query", lambda: Check(True, "query silver_transactions active"))
    up = _process_status("stream_silver", url, pid=None)  # started by hand: no pid file, its /healthz names it
    assert (up.running, up.ok, up.detail, up.pid) == (True, True, "query silver_transactions active", os.getpid())
    health.add("sinks", lambda: Check(False, "batch 9 waits for postgres, away for 12 s"))
    down = _process_status("stream_silver", url, pid=4242)
    assert (down.running, down.ok, down.state) == (True, False, "down")
    assert "batch 9 waits for postgres" in down.line()


def test_nothing_listening_is_stopped_unless_a_pid_file_says_it_lives():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/healthz"
    stopped = _process_status("stream_gold", url, pid=None)
    assert (stopped.running, stopped.ok, stopped.state) == (False, True, "stopped")
    starting = _process_status("stream-gold", url, pid=4242)
    assert (starting.running, starting.ok) == (True, True) and "no answer" in starting.detail


def test_a_status_line_names_state_place_pid_and_detail():
    line = ServiceStatus("postgres", False, "127.0.0.1:5433/ecom", 17, "connection refused", ok=False).line()
    assert line.split()[:3] == ["postgres", "down", "127.0.0.1:5433/ecom"]
    assert line.endswith("pid 17  (connection refused)")
