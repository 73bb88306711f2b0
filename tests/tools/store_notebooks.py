"""Store executed chapters so that a reader without a kernel sees clean text and pictures.

An executed notebook keeps its widgets as views of models that live in the kernel, plus a copy of every model's
state in the notebook's metadata. Without a kernel (GitHub, an untrusted notebook, a fresh JupyterLab before
the cell is run) a view shows its plain-text fallback instead, written when the widget first appeared: tqdm's
bar read ``0% | 0/1000`` above a finished training, and the playground's spelled out its child widgets, PNG bytes
included. This script rewrites each widget output from the stored final state:

- a tqdm bar that was left on screen becomes its last text line (``epoch 10/10: 100%|██████████| 1000/1000
  [...]``); one that hid itself when done (``leave=False``) is dropped, as it disappeared live;
- a widget showing ``ipywidgets.Image`` panels (the defect playground) keeps its text line and gets the last
  panel it showed as a static picture;
- any other widget keeps its text line;

- a cell tagged ``real-pixels`` (it shows real defect images, whose terms forbid redistribution) keeps its
  printed text but loses every picture, replaced by one line saying so;

then drops the widget state and stores the kernelspec JupyterLab writes on open (``Python 3 (ipykernel)``), so
that opening a chapter does not mark it modified. Re-running a cell brings its live widget back. Only the
standard library is used; notebooks are written exactly as nbformat writes them.

    python tests/tools/store_notebooks.py notebooks/*.ipynb     # ``make notebooks`` runs it after executing
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
REAL_PIXELS_NOTE = {"output_type": "stream", "name": "stdout",
                    "text": ["(pictures of real images are not stored: run the chapter with the data to see them)\n"]}
BAR_WIDTH = 10  # characters of tqdm's text bar in a notebook


def _model(state: dict, ref: str) -> dict | None:
    """The stored model ``ref`` points to ("IPY_MODEL_<id>" or a bare id), or None when it was not stored."""
    return state.get(ref.removeprefix("IPY_MODEL_"))


def _text(value: str) -> str:
    """An HTML widget value as plain text (tqdm writes its spaces as U+2007 figure spaces)."""
    return html.unescape(value).replace("\u2007", " ")


def _tqdm_line(state: dict, root: dict) -> str | None:
    """The last text line of a tqdm bar (an HBox of HTML, FloatProgress, HTML), "" for one that hid itself when
    done, or None when ``root`` is not a tqdm bar."""
    children = [_model(state, ref) for ref in root["state"].get("children", [])]
    kinds = [child and child["model_name"] for child in children]
    if root["model_name"] != "HBoxModel" or kinds != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    layout = _model(state, root["state"].get("layout", "")) or {"state": {}}
    if layout["state"].get("visibility") == "hidden":
        return ""
    left, bar, right = (child["state"] for child in children)
    filled = round(BAR_WIDTH * bar["value"] / bar["max"]) if bar.get("max") else 0
    return f"{_text(left['value'])}|{'█' * filled}{' ' * (BAR_WIDTH - filled)}|{_text(right['value'])}".strip()


def _last_image(state: dict, root: dict) -> str | None:
    """The base64 PNG of the last ``ipywidgets.Image`` under ``root`` (depth first, in display order), or None."""
    found = None
    stack = [root]
    while stack:
        model = stack.pop()
        if model["model_name"] == "ImageModel" and model["state"].get("format") == "png":
            found = next((b["data"] for b in model.get("buffers", []) if b.get("path") == ["value"]), found)
        stack.extend(reversed([m for m in map(lambda r: _model(state, r), model["state"].get("children", [])) if m]))
    return found


def store(nb: dict) -> dict:
    """``nb`` with every widget output rewritten for a reader without a kernel (see the module docstring)."""
    state = nb["metadata"].get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb["cells"]:
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW not in data:
                outputs.append(out)
                continue
            root = _model(state, data[WIDGET_VIEW]["model_id"])
            line = _tqdm_line(state, root) if root else None
            if line == "":
                continue
            fallback = {"text/plain": line if line is not None else data.get("text/plain", "")}
            picture = _last_image(state, root) if root and line is None else None
            if picture:
                fallback["image/png"] = picture
            outputs.append({**out, "data": fallback})
        if "real-pixels" in cell.get("metadata", {}).get("tags", []):
            text = [out for out in outputs if out["output_type"] == "stream" and out != REAL_PIXELS_NOTE]
            outputs = text + [REAL_PIXELS_NOTE] if len(text) < len(outputs) else text
        if "outputs" in cell:
            cell["outputs"] = outputs
    nb["metadata"].pop("widgets", None)
    nb["metadata"]["kernelspec"] = dict(KERNELSPEC)
    return nb


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[-1].strip())
        return 2
    for name in paths:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        stored = json.dumps(store(json.loads(text)), sort_keys=True, indent=1, ensure_ascii=False) + "\n"
        if stored != text:
            path.write_text(stored, encoding="utf-8")
        print(f"{path}: {'rewritten' if stored != text else 'already clean'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
