"""The classroom check: JupyterLab in headless Chromium, as a student meets it.

Starts JupyterLab on a copy of the chapters (quick mode), then in Debian's Chromium driven by Playwright:

1. opens every chapter: it must not turn "modified" on open, and its stored outputs must read cleanly without
   running it (no ``0%|`` progress bars, no "could not be displayed" widgets; chapter 02's playground a picture);
2. runs chapter 02: the untouched playground must report no changed knob, even after the browser has echoed
   every slider's value back to the kernel;
3. moves sliders with the keyboard: the preview must change, the status line must name the change, and the
   knobs cell must report exactly the values the readouts show;
4. restarts the kernel: the widget must say what to do, and running the cell again must bring a working
   playground back.

Prints each check with its time and exits 1 if any failed. ``make browser-check`` installs Chromium (apt) and
Playwright (pip) and runs it; it is a release step, not part of ``make test``. It tests ipywidgets 8 in JupyterLab
(this repository's environment); Colab's own front end and its ipywidgets 7 cannot be driven from here.

    python tests/browser/check_playground.py [--chromium PATH] [--notebooks DIR] [--keep-screenshots DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from unetlab.widgets import STALE_HINT

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NB = "window.jupyterapp.shell.currentWidget"  # the notebook panel in front (JupyterLab's app is exposed below)
PLAYGROUND_CELL = "playground = defect_playground("
KNOBS_CELL = "chosen = playground.current_config()"
WAIT_MS = 120_000


class Checks:
    """Collects pass/fail lines with the seconds since the start."""

    def __init__(self) -> None:
        self.start, self.failed = time.perf_counter(), 0

    def __call__(self, ok: bool, what: str, detail: str = "") -> bool:
        self.failed += not ok
        print(f"[{time.perf_counter() - self.start:6.1f} s] {'ok  ' if ok else 'FAIL'} {what}"
              + (f": {detail}" if detail else ""), flush=True)
        return ok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(workdir: Path, port: int, token: str) -> subprocess.Popen:
    """JupyterLab on ``workdir`` in quick mode, with its own workspace and settings: no news pop-up, and every
    cell rendered (JupyterLab 4 otherwise renders only the cells in view, and a check of the text would miss the
    rest)."""
    settings = workdir.parent / "lab-settings"
    for extension, values in (("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                              ("notebook-extension/tracker", {"windowingMode": "none"})):
        path = settings / "@jupyterlab" / f"{extension}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ, UNETLAB_QUICK="1", JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(workdir.parent / "lab-workspaces"))
    jupyter = Path(sys.executable).with_name("jupyter")
    command = [str(jupyter), "lab", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={workdir}", "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    lab = subprocess.Popen(command, env=env, stdout=open(workdir.parent / "lab.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return lab
        except OSError:
            if lab.poll() is not None:
                break
            time.sleep(0.5)
    lab.terminate()
    raise RuntimeError(f"JupyterLab did not start; see {workdir.parent / 'lab.log'}")


def wait_idle(page: Page) -> None:
    page.wait_for_function(f"{NB} && {NB}.sessionContext && {NB}.sessionContext.session && "
                           f"{NB}.sessionContext.session.kernel && "
                           f"{NB}.sessionContext.session.kernel.status === 'idle'", timeout=WAIT_MS)


def open_notebook(page: Page, name: str) -> None:
    page.evaluate(f"window.jupyterapp.commands.execute('docmanager:open', {{path: {json.dumps(name)}}})")
    page.wait_for_function(f"{NB} && {NB}.context && {NB}.context.path === {json.dumps(name)} && "
                           f"{NB}.context.isReady", timeout=WAIT_MS)
    wait_idle(page)
    page.wait_for_timeout(1000)  # the session writes the kernelspec once the kernel is up


def cell_index(page: Page, starts_with: str) -> int:
    return page.evaluate(f"{NB}.content.widgets.findIndex(c => c.model.sharedModel.getSource()"
                         f".startsWith({json.dumps(starts_with)}))")


def output_text(page: Page, index: int) -> str:
    return page.evaluate(f"{NB}.content.widgets[{index}].outputArea.node.innerText")


def run_cell(page: Page, index: int) -> None:
    """Run cell ``index`` and wait until it has finished (an execution count again, kernel idle)."""
    cell = f"{NB}.content.widgets[{index}].model"
    page.evaluate(f"{cell}.executionCount = null; {NB}.content.activeCellIndex = {index}; "
                  f"window.jupyterapp.commands.execute('notebook:run-cell')")
    page.wait_for_function(f"{cell}.executionCount !== null", timeout=WAIT_MS)
    wait_idle(page)


class Playground:
    """The playground's controls and preview in the page (the last one drawn, after a re-run)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.root = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-image")).last

    def slider(self, name: str):
        label = self.page.locator(".widget-label", has_text=re.compile(f"^{re.escape(name)}$"))
        return self.root.locator(".widget-slider").filter(has=label)

    def status(self) -> str:
        return self.root.locator(".widget-html-content", has_text="defect pixels").inner_text()

    def preview(self) -> str:
        return self.root.locator("img.widget-image").first.get_attribute("src") or ""

    def press(self, name: str, key: str, times: int = 1, expect: str = "", handle: str = ".noUi-handle-upper"
              ) -> float:
        """Press ``key`` ``times`` on a handle of slider ``name``; the seconds until the status line contains
        ``expect`` (or 5 s, when it never does: a stale preview is a result here, not an error)."""
        start = time.perf_counter()
        self.slider(name).locator(handle).focus()
        for _ in range(times):
            self.page.keyboard.press(key)
        try:
            self.root.locator(".widget-html-content", has_text=expect).wait_for(timeout=5000)
        except PlaywrightTimeout:
            pass
        return time.perf_counter() - start

    def readout(self, name: str) -> str:
        return self.slider(name).locator(".widget-readout").inner_text().strip()


def check_chapters(page: Page, names: list[str], check: Checks) -> None:
    for name in names:
        open_notebook(page, name)
        dirty = page.evaluate(f"{NB}.context.model.dirty")
        check(not dirty, f"{name} opens unmodified",
              "" if not dirty else page.evaluate(f"JSON.stringify({NB}.context.model.getMetadata('kernelspec'))"))
        text = page.evaluate(f"{NB}.node.innerText")
        bad = [t for t in (" 0%|", "could not be displayed", "Error displaying widget", "Image(value=b'")
               if t in text]
        check(not bad, f"{name} reads cleanly before it is run", ", ".join(bad))
        if name.startswith("02_"):
            i = cell_index(page, PLAYGROUND_CELL)
            pictures = page.evaluate(f"{NB}.content.widgets[{i}].outputArea.node.querySelectorAll('img').length")
            check(pictures == 1, "02's stored playground is a picture", f"{pictures} images")
        page.evaluate(f"{NB}.sessionContext.shutdown()")
        page.evaluate(f"{NB}.context.model.dirty = false")  # close without a "save changes?" dialog
        page.evaluate("window.jupyterapp.commands.execute('application:close-all')")


def check_playground(page: Page, check: Checks) -> None:
    open_notebook(page, "02_inspect_masks.ipynb")
    start = time.perf_counter()
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(".widget-slider", timeout=WAIT_MS)
    wait_idle(page)
    check(True, f"chapter 02 ran in quick mode ({time.perf_counter() - start:.1f} s)")
    pg = Playground(page)
    page.wait_for_timeout(3000)  # every slider has been drawn and has echoed its value to the kernel
    knobs = cell_index(page, KNOBS_CELL)
    run_cell(page, knobs)
    said = output_text(page, knobs).strip()
    check(said == "knobs you changed: none yet", "an untouched playground reports no changed knob", said)

    shown = pg.preview()
    seconds = pg.press("noise", "ArrowRight", 2, expect="drawn for noise 2.0 – 6.0")
    check(pg.readout("noise") == "2.0 – 6.0", "the noise slider moved two steps", pg.readout("noise"))
    check(pg.preview() != shown, "the preview changed")
    check("drawn for noise 2.0 – 6.0" in pg.status(), f"the status line names the change ({1000 * seconds:.0f} ms "
          f"from the first key press)", pg.status())
    seconds = pg.press("texture_scale", "ArrowLeft", 2, expect="drawn for texture_scale 0.75 – 1.40")
    check("drawn for texture_scale 0.75 – 1.40" in pg.status(), f"texture_scale moved two steps down "
          f"({1000 * seconds:.0f} ms)", pg.status())
    seconds = pg.press("seed", "ArrowRight", expect="drawn for seed 1", handle=".noUi-handle")
    check("drawn for seed 1" in pg.status(), f"the seed slider redraws ({1000 * seconds:.0f} ms)", pg.status())
    run_cell(page, knobs)
    said = output_text(page, knobs).strip()
    expected = "knobs you changed: {'texture_scale': [0.75, 1.4], 'noise': [2.0, 6.0]}"
    check(said == expected, "the knobs cell reports exactly the moved knobs, at their readout values", said)

    page.evaluate(f"{NB}.sessionContext.session.kernel.restart()")
    wait_idle(page)
    check(STALE_HINT in pg.root.inner_text(), "after a kernel restart the widget says to run the cell again")
    before = pg.status()
    pg.press("noise", "ArrowRight", expect="drawn for noise 2.0 – 6.5")
    check(pg.status() == before and pg.readout("noise") == "2.0 – 6.5",
          "a stale preview is visible: the status line still names the last change it drew, not the slider's",
          f"status {before!r}, slider {pg.readout('noise')}")
    for index in range(cell_index(page, PLAYGROUND_CELL) + 1):  # what a student does: run down to the cell
        if page.evaluate(f"{NB}.content.widgets[{index}].model.type") == "code":
            run_cell(page, index)
    page.wait_for_timeout(1000)
    pg = Playground(page)
    seconds = pg.press("noise", "ArrowRight", expect="drawn for noise 2.0 – 5.5")
    check("drawn for noise 2.0 – 5.5" in pg.status(), f"re-running the cell brings a working playground back "
          f"({1000 * seconds:.0f} ms)", pg.status())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="the chapters to check "
                        "(default: this checkout's; a copy is served, the originals are never written)")
    parser.add_argument("--keep-screenshots", type=Path, help="save a screenshot at the end (and on failure) here")
    args = parser.parse_args(argv)
    check = Checks()
    with tempfile.TemporaryDirectory(prefix="unetlab-browser-") as tmp:
        workdir = Path(tmp) / "notebooks"
        shutil.copytree(args.notebooks, workdir, ignore=shutil.ignore_patterns("data", "runs", ".ipynb_*"))
        names = sorted(p.name for p in workdir.glob("[0-9][0-9]_*.ipynb"))
        port, token = free_port(), os.urandom(8).hex()
        lab = start_lab(workdir, port, token)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch_persistent_context(Path(tmp) / "chromium", executable_path=args.chromium,
                                                               args=CHROMIUM_FLAGS, viewport={"width": 1400,
                                                                                              "height": 1000})
                page = browser.pages[0] if browser.pages else browser.new_page()
                page.on("pageerror", lambda err: print(f"           page error: {err}", flush=True))
                page.goto(f"http://127.0.0.1:{port}/lab?token={token}")
                page.wait_for_function("window.jupyterapp && window.jupyterapp.started !== undefined",
                                       timeout=WAIT_MS)
                page.wait_for_selector(".jp-LabShell", timeout=WAIT_MS)
                check(True, f"JupyterLab is up in Chromium ({page.evaluate('navigator.userAgent').split()[-2]})")
                try:
                    check_chapters(page, names, check)
                    check_playground(page, check)
                finally:
                    if args.keep_screenshots:
                        args.keep_screenshots.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(args.keep_screenshots / "playground.png"), full_page=True)
                browser.close()
        finally:
            lab.terminate()
            lab.wait(timeout=30)
    total = time.perf_counter() - check.start
    print(f"browser check: {'FAILED ' + str(check.failed) + ' check(s)' if check.failed else 'all checks passed'} "
          f"in {total:.0f} s")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
