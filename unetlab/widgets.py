"""A slider playground for the defect generator: one control per :class:`~unetlab.synth.DefectConfig` knob.

Move a slider and the preview (image | mask | overlay) is drawn again at once. The controls are built from the
dataclass fields and their metadata (``range``, ``step``, ``help``, ``unit`` or ``choices``), so a knob added
to ``DefectConfig`` appears here without touching this file.

Only core ipywidgets are used (they render in JupyterLab and Colab without a custom widget manager), and both
ipywidgets 7 (Colab keeps 7.7.1) and 8 work. The preview panels are ``ipywidgets.Image`` PNGs encoded with OpenCV
at the displayed size, which is several times faster than redrawing a matplotlib figure.

A widget lives in the kernel that made it: after a kernel restart its sliders still move in the browser but
nothing redraws the preview. The status line names the last change it drew, and a note under it says to run the
cell again.
"""

from __future__ import annotations

import dataclasses
import html
import math
import time
from typing import NamedTuple

import cv2
import ipywidgets as widgets
import numpy as np
from traitlets import validate

from .checks import is_int
from .synth import CLASS_NAMES, Backgrounds, DefectConfig, make_sample
from .viz import CLASS_COLORS, label_overlay

SEED_RANGE = (0, 999)  # the seed slider's range; any non-negative int works in make_sample itself
PANEL_PX = 256  # displayed side of each preview panel, whatever the image size
# The hover text of a control: ``tooltip`` since ipywidgets 8, ``description_tooltip`` before (8 still accepts it,
# with a deprecation warning).
TOOLTIP = "tooltip" if int(widgets.__version__.split(".")[0]) >= 8 else "description_tooltip"
STALE_HINT = ("The preview follows the sliders while the kernel that drew it runs. If it stops following them "
              "(after a kernel restart), run this cell again.")


class Preview(NamedTuple):
    """What the playground shows for one (config, seed).

    Attributes:
        image: (H, W) float32 in [0, 1], as :func:`~unetlab.synth.make_sample` returns it.
        labels: (H, W) uint8 class ids (0 background, 1 scratch, 2 crack, 3 stain).
        overlay: (H, W, 3) float32 RGB in [0, 1]: the image with defects tinted by class.
    """

    image: np.ndarray
    labels: np.ndarray
    overlay: np.ndarray


def render_preview(cfg: DefectConfig, seed: int, backgrounds: Backgrounds | None = None) -> Preview:
    """The sample for ``(cfg, seed)`` (painted on ``backgrounds`` when given) and its overlay: a pure function,
    what the playground displays."""
    image, labels = make_sample(cfg, seed, backgrounds=backgrounds)
    return Preview(image, labels, label_overlay(image, labels))


def _png(array: np.ndarray, side: int = PANEL_PX) -> bytes:
    """PNG bytes of a (H, W) gray or (H, W, 3) RGB float image in [0, 1], resized to ``side`` x ``side``.

    Only what is shown gets encoded: a 1024 px sample is averaged down (area interpolation keeps thin scratches
    visible as fainter lines), a small one is enlarged with crisp pixels.
    """
    if array.shape[0] != side:
        shrink = array.shape[0] > side
        array = cv2.resize(array, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)
    u8 = np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8)
    if u8.ndim == 3:
        u8 = cv2.cvtColor(u8, cv2.COLOR_RGB2BGR)
    _, buf = cv2.imencode(".png", u8, [cv2.IMWRITE_PNG_COMPRESSION, 1])  # level 1: fast, still compact
    return buf.tobytes()


def _places(x: float) -> int:
    """The decimal places ``x`` is written with (0.05 -> 2, 0.5 -> 1, 30.0 -> 0), at most 9."""
    return next(d for d in range(10) if d == 9 or math.isclose(round(x, d), x, rel_tol=0, abs_tol=1e-12))


class _OnTheGrid:
    """Float sliders that hold exact grid values: ``min + k * step``, rounded to the decimals of min and step.

    The browser computes a slider's values in binary floating point and sends them back as soon as the slider is
    drawn: an untouched range slider at (70, 170) on a 30..220 grid comes back as (70.0, 169.99999999999997). This
    validator puts every value, from the browser or from Python, back on the grid, so an untouched slider equals
    its knob's default and a moved one reads as the number its readout shows.
    """

    @validate("value")
    def _validate_value(self, proposal):
        if not self.step:  # ipywidgets 8 allows step=None: any value
            return super()._validate_value(proposal)
        places = max(_places(self.step), _places(self.min))

        def on_grid(v: float) -> float:
            return round(self.min + round((v - self.min) / self.step) * self.step, places)

        value = proposal["value"]
        snapped = tuple(on_grid(v) for v in value) if isinstance(value, (tuple, list)) else on_grid(value)
        return super()._validate_value({**proposal, "value": snapped})  # ipywidgets' own bounds and order checks


class _GridFloatSlider(_OnTheGrid, widgets.FloatSlider):
    """A ``FloatSlider`` whose value is always on its step grid (see :class:`_OnTheGrid`)."""


class _GridFloatRangeSlider(_OnTheGrid, widgets.FloatRangeSlider):
    """A ``FloatRangeSlider`` whose two values are always on its step grid (see :class:`_OnTheGrid`)."""


def _look() -> dict:
    """Size and label width of one control (a fresh Layout each: widgets must not share one)."""
    return dict(style={"description_width": "130px"}, layout=widgets.Layout(width="440px"))


def _control(f: dataclasses.Field, value) -> widgets.ValueWidget:
    """The widget for one DefectConfig field, set to ``value``: a slider, a range slider or a dropdown."""
    help_text, unit = f.metadata.get("help", ""), f.metadata.get("unit", "")
    common = {"description": f.name, TOOLTIP: f"{help_text} ({unit})" if unit else help_text, **_look()}
    if "choices" in f.metadata:
        return widgets.Dropdown(options=list(f.metadata["choices"]), value=value, **common)
    lo, hi = f.metadata["range"]
    step = f.metadata["step"]
    is_pair = isinstance(f.default, tuple)
    if isinstance(f.default[0] if is_pair else f.default, int):
        cls = widgets.IntRangeSlider if is_pair else widgets.IntSlider
        return cls(min=lo, max=hi, step=step, value=value, **common)
    cls = _GridFloatRangeSlider if is_pair else _GridFloatSlider
    return cls(min=lo, max=hi, step=step, value=value, readout_format=f".{_places(step)}f", **common)


def _legend_html() -> str:
    swatches = []
    for k in range(1, len(CLASS_NAMES)):
        r, g, b = (round(255 * c) for c in CLASS_COLORS[k])
        swatches.append(f'<span style="display:inline-block;width:12px;height:12px;background:rgb({r},{g},{b});'
                        f'margin:0 4px 0 12px;vertical-align:middle"></span>{CLASS_NAMES[k]}')
    return "".join(swatches)


class DefectPlayground(widgets.VBox):
    """The playground widget (build it with :func:`defect_playground`).

    Attributes:
        controls: field name -> widget, one per DefectConfig knob, plus ``"seed"``.
        panels: the three ``ipywidgets.Image`` panels (image, mask, overlay).
        status: an ``ipywidgets.HTML`` line: the last change drawn, defect pixel shares and render time, or the
            error message.
        backgrounds: the bank of defect-free images painted on, or ``None`` (procedural surfaces).
        last: the :class:`Preview` shown now (``None`` only if the first render failed).
        renders: how many times the preview has been drawn.
        error: the message of the last rejected configuration, ``""`` when the preview is current.
    """

    def __init__(self, cfg: DefectConfig, seed: int, backgrounds: Backgrounds | None = None) -> None:
        self.backgrounds = backgrounds
        self.controls: dict[str, widgets.ValueWidget] = {
            f.name: _control(f, getattr(cfg, f.name)) for f in dataclasses.fields(DefectConfig)}
        self.controls["seed"] = widgets.IntSlider(
            min=SEED_RANGE[0], max=SEED_RANGE[1], value=seed, description="seed",
            **{TOOLTIP: "random seed: same seed and knobs give the same image"}, **_look())
        self.panels = tuple(widgets.Image(format="png", width=str(PANEL_PX), height=str(PANEL_PX))
                            for _ in range(3))
        self.status = widgets.HTML()
        self.last: Preview | None = None
        self.renders = 0
        self.error = ""

        captions = ("image", "mask (class colours)", "overlay")
        preview = widgets.HBox([widgets.VBox([widgets.HTML(f"<b>{c}</b>"), panel])
                                for c, panel in zip(captions, self.panels)],
                               layout=widgets.Layout(flex_flow="row wrap"))  # narrow screens stack the panels
        knobs = list(self.controls.values())
        half = (len(knobs) + 1) // 2
        sliders = widgets.HBox([widgets.VBox(knobs[:half]), widgets.VBox(knobs[half:])],
                               layout=widgets.Layout(flex_flow="row wrap"))
        hint = widgets.HTML(f'<span style="color:#666;font-size:90%">{STALE_HINT}</span>')
        super().__init__([preview, widgets.HTML(_legend_html()), self.status, hint, sliders])
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.render()

    def __repr__(self) -> str:
        # What a reader without a live kernel sees as text (ipywidgets' own repr spells out every child widget,
        # PNG bytes included).
        return f"DefectPlayground: {len(self.controls) - 1} knobs and a seed; run the cell to use the sliders"

    def current_config(self) -> DefectConfig:
        """The DefectConfig the controls describe now (raises ValueError if they describe an invalid one)."""
        return DefectConfig(**{name: c.value for name, c in self.controls.items() if name != "seed"})

    @property
    def seed(self) -> int:
        return self.controls["seed"].value

    def render(self, changed: str = "") -> None:
        """Draw the preview for the current controls; an invalid config shows its message instead of raising.

        ``changed`` (e.g. ``"noise 2.0 – 6.0"``) leads the status line: when a slider says otherwise, the kernel
        behind the widget is gone.
        """
        start = time.perf_counter()
        try:
            preview = render_preview(self.current_config(), self.seed, self.backgrounds)
        except ValueError as e:
            self.error = str(e)
            self.status.value = f'<span style="color:#b00020">Not drawn: {html.escape(self.error)}</span>'
            return
        mask_rgb = label_overlay(np.zeros_like(preview.image), preview.labels, alpha=1.0)
        for panel, array in zip(self.panels, (preview.image, mask_rgb, preview.overlay)):
            panel.value = _png(array)
        self.last, self.error = preview, ""
        self.renders += 1
        share = np.bincount(preview.labels.ravel(), minlength=len(CLASS_NAMES)) / preview.labels.size
        shares = ", ".join(f"{name} {100 * s:.2f}%" for name, s in zip(CLASS_NAMES[1:], share[1:]))
        side = preview.image.shape[0]
        lead = f"drawn for <b>{html.escape(changed)}</b> &nbsp; " if changed else ""
        if self.backgrounds is not None:
            lead += f"on your {len(self.backgrounds)} background image(s) &nbsp; "
        self.status.value = (f"{lead}{side}x{side} px &nbsp; defect pixels: {shares} &nbsp; "
                             f"(drawn in {1000 * (time.perf_counter() - start):.0f} ms)")

    def _on_change(self, change: dict) -> None:
        self.render(f"{change['owner'].description} {_shown(change['owner'])}")


def _shown(control: widgets.ValueWidget) -> str:
    """The value of ``control`` as its readout shows it: ``2.0 – 6.0``, ``0.40``, ``cast``."""
    fmt = getattr(control, "readout_format", "d")
    if not isinstance(control.value, (int, float, tuple)):
        return str(control.value)
    values = control.value if isinstance(control.value, tuple) else (control.value,)
    return " – ".join(format(v, fmt) for v in values)


def defect_playground(cfg: DefectConfig | None = None, seed: int = 0,
                      backgrounds: Backgrounds | None = None) -> DefectPlayground:
    """A widget with a control for every DefectConfig knob (plus the seed) and a live image | mask | overlay view.

    Display it as the last expression of a notebook cell. Every change re-renders the preview (a 256x256 sample
    takes a few milliseconds); a configuration DefectConfig rejects is reported in the widget, never raised.

    Args:
        cfg: the starting knobs; ``None`` means ``DefectConfig()``.
        seed: the starting seed, in ``SEED_RANGE``.
        backgrounds: paint on windows of your own defect-free images (:class:`unetlab.Backgrounds`, e.g. from
            :func:`unetlab.load_backgrounds`) instead of procedural surfaces; the surface sliders then do nothing
            and ``background_gain`` / ``background_shift`` vary the windows.

    Returns:
        A :class:`DefectPlayground` (an ``ipywidgets.VBox``); ``.current_config()`` gives the config to reuse,
        e.g. ``SyntheticDefects(100, cfg=playground.current_config())``.
    """
    if cfg is None:
        cfg = DefectConfig()
    if not isinstance(cfg, DefectConfig):
        raise ValueError(f"defect_playground expects a DefectConfig (or None); got {type(cfg).__name__} {cfg!r}")
    lo, hi = SEED_RANGE
    if not is_int(seed) or not lo <= seed <= hi:
        raise ValueError(f"defect_playground expects an int seed in [{lo}, {hi}]; got {seed!r}")
    if backgrounds is not None and not isinstance(backgrounds, Backgrounds):
        raise ValueError(f"defect_playground expects backgrounds=unetlab.Backgrounds (e.g. "
                         f"unetlab.load_backgrounds(folder)) or None; got {type(backgrounds).__name__}")
    return DefectPlayground(cfg, int(seed), backgrounds)
