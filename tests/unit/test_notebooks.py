"""The notebooks as files: each opens with what it shows and what must run, names the project's kernel,
asserts what it shows, and is committed without outputs. ``tests/e2e/test_notebooks.py`` executes them."""

from __future__ import annotations

import json

import pytest

from ecom.notebook import KERNEL_NAME, NOTEBOOKS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01_lake_with_spark.ipynb",
        "02_sql_with_duckdb.ipynb",
        "03_fraud_model.ipynb",
        "04_rfm_and_cohorts.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_what_it_shows_and_what_must_run(path):
    book = json.loads(path.read_text())
    first = book["cells"][0]
    text = "".join(first["source"])
    assert first["cell_type"] == "markdown" and text.startswith("# ")
    assert "**What it shows.**" in text and "**What must be running.**" in text
    assert book["metadata"]["kernelspec"]["name"] == KERNEL_NAME
    code = [cell for cell in book["cells"] if cell["cell_type"] == "code"]
    assert sum("assert " in "".join(cell["source"]) for cell in code) >= 2
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code), "clear the outputs"
