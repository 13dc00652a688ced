"""``ecom notebook``: JupyterLab on 127.0.0.1 over ``notebooks/``, with the project's interpreter as the kernel.

The kernel ``ecom`` is a kernelspec installed into the running environment
(``<sys.prefix>/share/jupyter/kernels/ecom``, so ``.venv`` for the project):
it runs this interpreter, and Spark's Python workers run it too
(``PYSPARK_PYTHON``). The notebooks name that kernel, and the notebook test
executes them with it. The settings profile (``--profile`` or
``ECOM_PROFILE``) and every ``ECOM_*`` override reach the kernels through the
environment, so a notebook's ``ecom.settings.get_settings()`` sees the same
lake, database and MLflow store as the command that started Jupyter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ecom.settings import ROOT, Settings

KERNEL_NAME = "ecom"
NOTEBOOKS_DIR = ROOT / "notebooks"


def kernel_spec(python: str = sys.executable) -> dict:
    """The kernelspec of the ``ecom`` kernel: ``python`` runs the kernel and Spark's Python workers."""
    return {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ecom (project .venv)",
        "language": "python",
        "env": {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python},
        "metadata": {"debugger": True},
    }


def install_kernel(prefix: str = sys.prefix, python: str = sys.executable) -> Path:
    """Write the ``ecom`` kernelspec under ``prefix``/share/jupyter/kernels (idempotent); returns its folder."""
    folder = Path(prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(kernel_spec(python), indent=1) + "\n")
    return folder


def install_lab_settings(prefix: str = sys.prefix) -> Path:
    """JupyterLab page settings for this environment: no prompt to rebuild JupyterLab (the Dash package ships a
    source extension the notebooks do not need). Returns the file written."""
    path = Path(prefix) / "etc" / "jupyter" / "labconfig" / "page_config.d" / f"{KERNEL_NAME}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"buildCheck": False, "buildAvailable": False}, indent=1) + "\n")
    return path


def jupyter_command(port: int, open_browser: bool, as_root: bool = False) -> list[str]:
    """JupyterLab on 127.0.0.1:``port`` rooted at ``notebooks/``, the ``ecom`` kernel by default.

    Jupyter refuses to run as root unless told; ``as_root`` tells it (containers and CI machines run as root,
    and the server listens on loopback only, behind its token)."""
    command = [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--ServerApp.root_dir={NOTEBOOKS_DIR}",
        f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}",
        f"--ServerApp.open_browser={open_browser}",
    ]  # fmt: skip
    return command + ["--ServerApp.allow_root=True"] if as_root else command


def add_notebook_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8888, help="JupyterLab's port on 127.0.0.1 (default 8888)")
    parser.add_argument("--browser", action="store_true", help="open a browser tab")


def run_notebook(settings: Settings, args: argparse.Namespace) -> int:
    """Install the kernel, then run JupyterLab in the foreground until Ctrl-C."""
    import importlib.util

    if importlib.util.find_spec("jupyterlab") is None:
        print(
            "ecom notebook: JupyterLab is not installed; run `make notebook`, or "
            "`.venv/bin/pip install -e '.[notebook]'` and try again",
            file=sys.stderr,
        )
        return 2
    folder = install_kernel()
    install_lab_settings()
    print(f"kernel {KERNEL_NAME}: {sys.executable} ({folder})", flush=True)
    print(f"profile {settings.profile}: lake {settings.lake.root}", flush=True)
    env = {**os.environ, "ECOM_PROFILE": settings.profile, "PYSPARK_PYTHON": sys.executable}
    try:
        return subprocess.run(
            jupyter_command(args.port, args.browser, os.geteuid() == 0), env=env, check=False
        ).returncode
    except KeyboardInterrupt:
        return 130
