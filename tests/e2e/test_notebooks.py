"""The notebooks of ``notebooks/``, executed top to bottom with papermill on one small shop.

One isolated shop for the module (own topics, lake, database, MLflow registry),
built the way a user builds one: backfilled history (``ecom generate``),
streamed into bronze and silver (``ecom stream all --once``), then, at the
same time, a fraud model trained on it (``ecom train``) and the daily gold
batch (``ecom batch daily``).
Each notebook runs in the project's kernel (``ecom``: this interpreter, which
Spark's Python workers use too), reads its settings from the environment (the
test profile pointed at the shop), and asserts what it shows: a failing cell
fails the test. The executed copies are kept under
``<data_dir>/artifacts/notebooks/``. The amount of data: ``ECOM_NB_BACKFILL``
orders (default 3,000) over 75 days.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from ecom.notebook import KERNEL_NAME, NOTEBOOKS_DIR, install_kernel
from tests.conftest import run_ecom as ecom
from tests.conftest import run_ecom_together, shop_environment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

NOTEBOOKS = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
BACKFILL = os.environ.get("ECOM_NB_BACKFILL", "3000")


@pytest.fixture(scope="module")
def shop(stack, tmp_path_factory):
    """Isolated settings holding streamed history, a trained champion and gold."""
    from ecom.runtime.kafka import ensure_topics
    from serving.db import drop_database, recreate_database
    from tests.conftest import isolated_settings, with_registry, with_topic

    root = tmp_path_factory.mktemp("notebooks")
    name = "nb" + uuid.uuid4().hex[:8]
    settings = with_topic(with_registry(isolated_settings(stack, root, name), root), "labels", name)
    recreate_database(settings.postgres.dsn)
    ensure_topics(settings)
    ecom(settings, "generate", "--backfill-days", "75", "--count", BACKFILL, "--seed", "13", "--no-progress")
    ecom(settings, "stream", "all", "--once")
    run_ecom_together(settings, ("train",), ("batch", "daily"))  # independent: both read silver only
    yield settings
    drop_database(settings.postgres.dsn)


@pytest.fixture(scope="module")
def artefacts(shop) -> Path:
    folder = Path(shop.data_dir) / "artifacts" / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, shop, artefacts, monkeypatch):
    import nbformat
    import papermill

    install_kernel()  # into this interpreter's environment (.venv), as `ecom notebook` does
    for key, value in shop_environment(shop).items():
        monkeypatch.setenv(key, value)  # the kernel inherits them: get_settings() sees the shop
    executed = artefacts / name
    papermill.execute_notebook(
        NOTEBOOKS_DIR / name, executed, kernel_name=KERNEL_NAME, cwd=str(artefacts), progress_bar=False,
        execution_timeout=300,
    )  # fmt: skip
    book = nbformat.read(executed, as_version=4)
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code), "every code cell ran"
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert book.metadata.kernelspec.name == KERNEL_NAME
