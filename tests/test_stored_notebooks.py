"""Stored chapters read cleanly without a kernel (tests/tools/store_notebooks.py), checked on the chapters and
on a notebook whose widgets a real kernel made."""

import base64
import copy
import json
from pathlib import Path

import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from tools.store_notebooks import KERNELSPEC, REAL_PIXELS_NOTE, WIDGET_VIEW, store

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapters_are_stored_for_readers_without_a_kernel(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert store(copy.deepcopy(nb)) == nb, "run: python tests/tools/store_notebooks.py " + str(path)
    assert "widgets" not in nb["metadata"]
    assert nb["metadata"]["kernelspec"] == KERNELSPEC  # what JupyterLab writes on open: the chapter stays unmodified
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("data", {}).get("text/plain", "")) + "".join(out.get("text", ""))
            assert WIDGET_VIEW not in out.get("data", {})
            assert " 0%|" not in text and "Image(value=b'" not in text
            if "real-pixels" in cell["metadata"].get("tags", []):
                assert out["output_type"] == "stream"  # no real defect image leaves the machine it was run on


def test_cells_tagged_real_pixels_keep_their_text_but_no_picture():
    cell = new_code_cell("show_real_predictions(...)", metadata={"tags": ["real-pixels"]})
    cell.outputs = [{"output_type": "stream", "name": "stdout", "text": ["20 backgrounds\n"]},
                    {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR", "text/plain": "F"}}]
    untagged = new_code_cell("plt.show()")
    untagged.outputs = copy.deepcopy(cell.outputs)
    stored = store(json.loads(json.dumps(new_notebook(cells=[cell, untagged]))))
    assert stored["cells"][0]["outputs"] == [cell.outputs[0], REAL_PIXELS_NOTE]
    assert stored["cells"][1]["outputs"] == untagged.outputs
    assert store(copy.deepcopy(stored)) == stored


def test_store_turns_live_widgets_into_text_and_pictures():
    cells = [
        "from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='kept'): pass",
        "for _ in tqdm(range(3), desc='hidden', leave=False): pass\nprint('after the hidden bar')",
        "import cv2, numpy as np, ipywidgets as w\n"
        "png = lambda v: cv2.imencode('.png', np.full((4, 4), v, np.uint8))[1].tobytes()\n"
        "w.VBox([w.HBox([w.Image(value=png(10), format='png'), w.Image(value=png(200), format='png')])])",
        "w.IntSlider(value=3)",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    NotebookClient(nb, kernel_name="python3", timeout=60).execute()  # stores the widget state, as nbconvert does
    assert "widgets" in nb.metadata and WIDGET_VIEW in nb.cells[0].outputs[0]["data"]

    live = json.loads(json.dumps(nb))
    stored = store(json.loads(json.dumps(nb)))
    kept, hidden, images, slider = (cell["outputs"] for cell in stored["cells"])
    assert [o["data"] for o in kept] == [{"text/plain": kept[0]["data"]["text/plain"]}]
    line = kept[0]["data"]["text/plain"]
    assert line.startswith("kept: 100%|██████████| 3/3 [") and "it/s]" in line
    assert [o["output_type"] for o in hidden] == ["stream"]  # the bar that hid itself is gone, the print stays
    (picture,) = images
    # The output keeps its kind and count (ipywidgets 8 returns an execute_result, 7 displays a display_data).
    assert {k: v for k, v in picture.items() if k != "data"} == {
        k: v for k, v in live["cells"][2]["outputs"][0].items() if k != "data"}
    decoded = base64.b64decode(picture["data"]["image/png"])
    assert decoded[:8] == b"\x89PNG\r\n\x1a\n" and decoded == _png(200)  # the last image it showed
    assert set(slider[0]["data"]) == {"text/plain"} and "IntSlider" in slider[0]["data"]["text/plain"]
    assert "widgets" not in stored["metadata"] and stored["metadata"]["kernelspec"] == KERNELSPEC
    assert store(copy.deepcopy(stored)) == stored


def _png(value: int) -> bytes:
    import cv2
    import numpy as np

    return cv2.imencode(".png", np.full((4, 4), value, np.uint8))[1].tobytes()
