"""``ecom notebook``: the project's kernel (this interpreter, for Spark's Python workers too) and JupyterLab on loopback."""

from __future__ import annotations

import json
import sys

from ecom.notebook import KERNEL_NAME, NOTEBOOKS_DIR, install_kernel, jupyter_command


def test_kernel_runs_this_interpreter_and_spark_workers_too(tmp_path):
    folder = install_kernel(prefix=str(tmp_path), python="/opt/py/bin/python")
    assert folder == tmp_path / "share" / "jupyter" / "kernels" / KERNEL_NAME
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["argv"][:3] == ["/opt/py/bin/python", "-m", "ipykernel_launcher"]
    assert spec["env"]["PYSPARK_PYTHON"] == "/opt/py/bin/python"
    assert install_kernel(prefix=str(tmp_path)) == folder  # a second install rewrites it
    assert json.loads((folder / "kernel.json").read_text())["argv"][0] == sys.executable


def test_jupyter_listens_on_loopback_only_with_the_ecom_kernel():
    command = jupyter_command(8899, open_browser=False)
    assert command[:3] == [sys.executable, "-m", "jupyterlab"]
    assert "--ServerApp.ip=127.0.0.1" in command and "--ServerApp.port=8899" in command
    assert f"--ServerApp.root_dir={NOTEBOOKS_DIR}" in command
    assert f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}" in command
    assert "--ServerApp.allow_root=True" not in command
    assert jupyter_command(8899, open_browser=False, as_root=True)[-1] == "--ServerApp.allow_root=True"


def test_without_jupyterlab_the_command_says_how_to_install_it(monkeypatch, capsys):
    import argparse
    import importlib.util

    from ecom.notebook import run_notebook
    from ecom.settings import load_settings

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jupyterlab" else real(name, *a))
    assert run_notebook(load_settings("test"), argparse.Namespace(port=8899, browser=False)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make notebook" in err and "pip install -e '.[notebook]'" in err


def test_lab_settings_turn_off_the_rebuild_prompt(tmp_path):
    from ecom.notebook import install_lab_settings

    path = install_lab_settings(prefix=str(tmp_path))
    assert path == tmp_path / "etc" / "jupyter" / "labconfig" / "page_config.d" / f"{KERNEL_NAME}.json"
    assert json.loads(path.read_text()) == {"buildCheck": False, "buildAvailable": False}
