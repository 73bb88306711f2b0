"""The slider playground (unetlab.widgets) and the sample pictures it shares with unetlab.viz, headless."""

import dataclasses

import cv2
import ipywidgets
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import unetlab.widgets as widgets_module  # noqa: E402
from unetlab.synth import CLASS_NAMES, Backgrounds, DefectConfig, make_sample  # noqa: E402
from unetlab.viz import CLASS_COLORS, label_overlay, show_samples  # noqa: E402
from unetlab.widgets import PANEL_PX, SEED_RANGE, defect_playground, render_preview  # noqa: E402

KNOBS = [f.name for f in dataclasses.fields(DefectConfig)]


def _extremes(control) -> list:
    """The values that put ``control`` at its minimum and at its maximum (every option of a dropdown)."""
    if hasattr(control, "options"):  # every option, the current one last so that each step is a change
        options = list(control.options)
        i = options.index(control.value)
        return options[i + 1:] + options[:i + 1]
    if isinstance(control.value, tuple):  # a range slider: both handles at the bottom, then both at the top
        extremes = [(control.min, control.min), (control.max, control.max)]
    else:
        extremes = [control.min, control.max]
    # A knob that starts at its minimum (e.g. distractors, off by default) goes to the top first: every step
    # must be a change, or no re-render is due.
    return extremes[::-1] if control.value == extremes[0] else extremes


def _decoded(panel) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(panel.value, np.uint8), cv2.IMREAD_UNCHANGED)


def test_a_control_for_every_knob_plus_the_seed():
    pg = defect_playground()
    assert set(pg.controls) == set(KNOBS) | {"seed"}
    assert pg.current_config() == DefectConfig()
    assert pg.renders == 1 and pg.error == ""


@pytest.mark.parametrize("name", KNOBS + ["seed"])
def test_every_control_at_its_minimum_and_maximum_rerenders(name):
    pg = defect_playground(DefectConfig(size=64), seed=3)
    control = pg.controls[name]
    for value in _extremes(control):
        before = pg.renders
        control.value = value
        assert pg.error == "", pg.error
        assert pg.renders == before + 1
        cfg = pg.current_config()
        if name == "seed":
            assert pg.seed == value
        else:
            assert getattr(cfg, name) == pytest.approx(value)
        # The preview holds exactly the sample of the new knobs, and the panels show it.
        image, labels = make_sample(cfg, pg.seed)
        np.testing.assert_array_equal(pg.last.image, image)
        np.testing.assert_array_equal(pg.last.labels, labels)
        shown = _decoded(pg.panels[0])
        assert shown.shape == (PANEL_PX, PANEL_PX)
        if cfg.size == PANEL_PX:
            np.testing.assert_array_equal(shown, np.rint(image * 255).astype(np.uint8))
        assert _decoded(pg.panels[2]).shape == (PANEL_PX, PANEL_PX, 3)


def test_moving_a_slider_changes_the_picture():
    pg = defect_playground(DefectConfig(size=256, defect_free=0.0), seed=1)
    first = pg.panels[0].value
    pg.controls["brightness"].value = (200.0, 200.0)
    assert pg.panels[0].value != first
    assert pg.last.image.mean() > 0.6  # 200 gray levels is bright


FLOAT_KNOBS = [f.name for f in dataclasses.fields(DefectConfig)
               if "range" in f.metadata and isinstance(f.default[0] if isinstance(f.default, tuple) else f.default,
                                                       float)]


@pytest.mark.parametrize("name", FLOAT_KNOBS)
def test_float_sliders_hold_the_numbers_their_readout_shows(name):
    """The browser sends grid values computed in binary floating point (an untouched brightness slider came back
    as (70.0, 169.99999999999997), and the notebook reported it as changed): they land back on the grid."""
    field = next(f for f in dataclasses.fields(DefectConfig) if f.name == name)
    control = widgets_module._control(field, field.default)  # the playground's control, without the redraws
    places = widgets_module._places(control.step)
    steps = round((control.max - control.min) / control.step)
    for k in range(steps + 1):
        sent = control.min + k * control.step  # as the browser computes it, e.g. 0.25 + 25 * 0.05 = 1.5000000000000002
        control.value = (control.min, sent) if isinstance(control.value, tuple) else sent
        shown = control.value[-1] if isinstance(control.value, tuple) else control.value
        assert shown == float(f"{sent:.{places}f}"), (k, sent, shown)


def test_an_untouched_playground_reports_no_change_after_the_browser_echoes_it():
    pg = defect_playground()
    for name, sent in (("brightness", (70.0, 169.99999999999997)), ("texture_scale", (0.75, 1.4999999999999998)),
                       ("crack_length", (70.0, 170.00000000000003)), ("crack_branching", 0.39999999999999997)):
        pg.controls[name].value = sent
    assert pg.current_config() == DefectConfig()
    assert pg.renders == 1  # values equal to the old ones: no change, no redraw
    pg.controls["noise"].value = (2.0, 6.000000000000001)
    assert pg.current_config().noise == (2.0, 6.0) and pg.renders == 2


def test_bounds_still_hold_on_the_grid():
    control = defect_playground(DefectConfig(size=32)).controls["texture_scale"]
    control.value = (0.1, 9.0)  # below min and above max: clipped, as plain ipywidgets do
    assert control.value == (0.25, 4.0)
    control.value = (1.02, 1.03)  # between grid points: the nearest ones
    assert control.value == (1.0, 1.05)


def test_every_control_has_its_help_as_tooltip():
    pg = defect_playground(DefectConfig(size=32))
    fields = {f.name: f for f in dataclasses.fields(DefectConfig)}
    key = "tooltip" if int(ipywidgets.__version__.split(".")[0]) >= 8 else "description_tooltip"
    assert widgets_module.TOOLTIP == key
    for name, control in pg.controls.items():
        tip = getattr(control, key)
        if name == "seed":
            assert "random seed" in tip
        else:
            assert tip.startswith(fields[name].metadata["help"]) and fields[name].metadata.get("unit", "") in tip


def test_the_status_line_names_the_change_it_drew_and_the_widget_says_what_a_restart_does():
    pg = defect_playground(DefectConfig(size=32))
    assert "drawn for" not in pg.status.value  # the first drawing follows no change
    pg.controls["noise"].value = (2.0, 6.0)
    assert "drawn for <b>noise 2.0 – 6.0</b>" in pg.status.value
    pg.controls["surface"].value = "cast"
    assert "drawn for <b>surface cast</b>" in pg.status.value
    pg.controls["seed"].value = 12
    assert "drawn for <b>seed 12</b>" in pg.status.value
    assert any(isinstance(w, ipywidgets.HTML) and widgets_module.STALE_HINT in w.value for w in pg.children)


def test_a_reader_without_a_kernel_sees_one_short_line():
    text = repr(defect_playground(DefectConfig(size=32)))
    assert text == f"DefectPlayground: {len(KNOBS)} knobs and a seed; run the cell to use the sliders"


def test_invalid_config_is_shown_not_raised():
    pg = defect_playground(DefectConfig(size=64))
    good = pg.last
    slider = pg.controls["defect_free"]
    slider.max = 2.0  # a slider the dataclass range does not bound any more
    slider.value = 1.5
    assert "defect_free" in pg.error and "[0.0, 1.0]" in pg.error
    assert "Not drawn" in pg.status.value and "defect_free" in pg.status.value
    assert pg.last is good and pg.renders == 1
    slider.value = 0.5  # back to a valid value: drawn again, message gone
    assert pg.error == "" and pg.renders == 2 and "Not drawn" not in pg.status.value


def test_playgrounds_are_independent():
    a, b = defect_playground(DefectConfig(size=64)), defect_playground(DefectConfig(size=64))
    a.controls["seed"].value = 7
    assert (a.renders, b.renders) == (2, 1)
    assert b.seed == 0


def test_an_update_draws_one_sample_once(monkeypatch):
    # What keeps an update within its 150 ms budget (measured: benchmarks/bench_widgets.py): one moved slider
    # costs one sample and one redraw, never a cascade of them.
    pg = defect_playground()
    drawn = []
    monkeypatch.setattr(widgets_module, "make_sample",
                        lambda cfg, seed, **kw: drawn.append(seed) or make_sample(cfg, seed, **kw))
    for seed in range(1, 6):
        pg.controls["seed"].value = seed
    pg.controls["brightness"].value = (90.0, 90.0)
    assert drawn == [1, 2, 3, 4, 5, 5] and pg.renders == 7


def test_render_preview_is_pure():
    cfg = DefectConfig(size=64, defect_free=0.0)
    a, b = render_preview(cfg, 5), render_preview(cfg, 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a.overlay.shape == (64, 64, 3) and a.labels.any()


def test_the_playground_paints_on_your_own_backgrounds():
    rng = np.random.default_rng(0)
    bank = Backgrounds([np.full((90, 120), 0.3, np.float32) + 0.05 * rng.random((90, 120), np.float32)])
    cfg = DefectConfig(size=64, defect_free=0.0)
    playground = defect_playground(cfg, seed=3, backgrounds=bank)
    expected = make_sample(cfg, 3, backgrounds=bank)
    np.testing.assert_array_equal(playground.last.image, expected[0])
    np.testing.assert_array_equal(playground.last.labels, expected[1])
    assert not np.array_equal(playground.last.image, make_sample(cfg, 3)[0])  # not the procedural surface
    assert "your 1 background image" in playground.status.value
    before = playground.last.image
    shift = playground.controls["background_shift"]
    shift.value = (shift.max, shift.max)
    assert not np.array_equal(playground.last.image, before)  # its slider moves the windows' brightness
    with pytest.raises(ValueError, match="backgrounds=unetlab.Backgrounds .*got list"):
        defect_playground(backgrounds=[np.zeros((8, 8))])


def test_bad_input():
    with pytest.raises(ValueError, match="defect_playground expects a DefectConfig .*got str 'nonsense'"):
        defect_playground(cfg="nonsense")
    with pytest.raises(ValueError, match=r"int seed in \[0, 999\]; got -1"):
        defect_playground(seed=-1)
    with pytest.raises(ValueError, match="int seed"):
        defect_playground(seed=2.5)
    assert SEED_RANGE == (0, 999)


# --------------------------------------------------------------------------------------------------------------
# viz: label_overlay and show_samples


def test_label_overlay_tints_defects_only():
    image = np.full((4, 5), 0.5, np.float32)
    labels = np.zeros((4, 5), np.uint8)
    labels[0, 0], labels[1, 1], labels[2, 2] = 1, 2, 3
    rgb = label_overlay(image, labels, alpha=1.0)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.float32
    for k in (1, 2, 3):
        np.testing.assert_allclose(rgb[k - 1, k - 1], CLASS_COLORS[k])
    np.testing.assert_array_equal(rgb[labels == 0], 0.5)  # background stays gray
    half = label_overlay(image, labels, alpha=0.5)
    np.testing.assert_allclose(half[1, 1], 0.25 + 0.5 * np.asarray(CLASS_COLORS[2]), rtol=1e-6)


def test_label_overlay_bad_input():
    image = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="one size"):
        label_overlay(image, np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="integer class ids"):
        label_overlay(image, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"class ids 0..6; got values 0..7"):
        label_overlay(image, np.full((4, 4), 7, np.uint8) * np.eye(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="alpha in"):
        label_overlay(image, np.zeros((4, 4), np.uint8), alpha=2)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        label_overlay(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), np.uint8))


def test_show_samples_grid_and_legend():
    cfg = DefectConfig(size=32, defect_free=0.0)
    pairs = [make_sample(cfg, s) for s in range(5)]
    images, labels = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    fig = show_samples(images, labels, titles=[f"#{i}" for i in range(5)], ncols=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and len(fig.axes) == 6  # 2 rows x 3 columns, one cell empty
    np.testing.assert_allclose(shown[0].images[0].get_array(), label_overlay(images[0], labels[0]))
    assert [ax.get_title() for ax in shown] == [f"#{i}" for i in range(5)]
    # the three kinds of the default data (the other kinds join the legend only where they are drawn)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(CLASS_NAMES[1:4])
    plt.close(fig)
    fig = show_samples(images[:2, None], labels[:2], overlay=False)  # (N, 1, H, W) images work too
    assert sum(bool(ax.images) for ax in fig.axes) == 4  # image | label map per sample
    plt.close(fig)
    fig = show_samples(list(images[:3]), list(labels[:3]))  # lists of (H, W) arrays too
    assert sum(bool(ax.images) for ax in fig.axes) == 3
    plt.close(fig)
    fig = show_samples(images[:2], np.zeros_like(labels[:2]))  # nothing labelled: no legend
    assert not fig.legends
    plt.close(fig)


def test_show_samples_bad_input():
    images, labels = np.zeros((2, 8, 8)), np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="one shape"):
        show_samples(images, labels[:1])
    with pytest.raises(ValueError, match="3 titles for 2 images"):
        show_samples(images, labels, titles=["a", "b", "c"])
    with pytest.raises(ValueError, match="ncols >= 1"):
        show_samples(images, labels, ncols=0)
    with pytest.raises(ValueError, match="images of one size"):
        show_samples([np.zeros((8, 8)), np.zeros((4, 4))], labels)
