"""The notebooks' conventions, and the quick-mode switch reaching a Jupyter kernel (as it must under nbval in CI)."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# unetlab.synth._noise or `from unetlab.x import _helper` (dunders such as unetlab.__version__ are public).
PRIVATE_NAME = re.compile(r"\bunetlab(\.\w+)*\._(?!_)|\bfrom unetlab(\.\w+)* import [^\n]*\b_(?!_)\w")


def _run_in_kernel(source: str) -> str:
    """Run ``source`` in a fresh python3 kernel (which inherits this process's environment); return its stdout."""
    nb = new_notebook(cells=[new_code_cell(source)])
    NotebookClient(nb, kernel_name="python3", timeout=60).execute()
    return "".join(out.get("text", "") for out in nb.cells[0].outputs if out["output_type"] == "stream")


@pytest.mark.parametrize("value, quick", [("1", True), ("0", False)])
def test_quick_mode_variable_reaches_the_kernel(monkeypatch, value, quick):
    monkeypatch.setenv("UNETLAB_QUICK", value)
    out = _run_in_kernel('import os, unetlab\nprint(os.environ.get("UNETLAB_QUICK"), unetlab.is_quick(), '
                         'unetlab.run_sizes() == (unetlab.QUICK if unetlab.is_quick() else unetlab.FULL))')
    assert out.split() == [value, str(quick), "True"]


def test_there_are_notebooks():
    names = [nb.name for nb in NOTEBOOKS]
    assert "01_generate_data.ipynb" in names and "02_inspect_masks.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"

    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    assert len(code) >= 2, "a chapter needs a Colab cell, a Setup cell and some work"
    colab, setup = (nb.cells[i].source for i in code[:2])
    # First code cell: the Colab set-up, a no-op anywhere else.
    assert 'if "google.colab" in sys.modules:' in colab and "pip install" in colab
    # Second code cell, under a "Setup" heading: reads quick mode (CI), through the run sizes or, for a chapter
    # whose sizes are recipe settings rather than RunSizes (06: FinetuneConfig, PretrainConfig), unetlab.is_quick().
    heading = nb.cells[code[1] - 1]
    assert heading.cell_type == "markdown" and re.search(r"^#+ Setup\b", heading.source, re.M)
    assert re.search(r"run_sizes\((\"multiclass\")?\)|unetlab\.is_quick\(\)", setup)

    for i in code:
        cell = nb.cells[i]
        assert not PRIVATE_NAME.search(cell.source), f"cell {i} uses a private unetlab name"
        assert all(out["output_type"] != "error" for out in cell.outputs), f"cell {i} has a stored error"
        if cell.outputs:
            assert cell.execution_count is not None, f"cell {i} has outputs but no execution count"

    last = nb.cells[-1]
    assert last.cell_type == "markdown" and "Exercises" in last.source


def test_sim_to_real_chapter_without_real_data_says_how_to_get_it_and_skips(monkeypatch):
    """CI has the real images, so nbval never sees this path: run chapter 06 here without them (quick mode)."""
    path = next(p for p in NOTEBOOKS if p.name.startswith("06_"))
    monkeypatch.setenv("UNETLAB_QUICK", "1")
    monkeypatch.delenv("UNETLAB_REAL_DATA", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(path.parent)}}).execute()
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
                      if out["output_type"] == "stream")
    assert "No real images found" in printed and "download_magnetic_tile" in printed
    assert "zero-shot" not in printed  # the real-data cells did nothing
