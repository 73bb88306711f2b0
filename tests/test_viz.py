"""Figures: error overlay colours, prediction rows, curves, sweeps, and atomic saving."""

from __future__ import annotations

import errno
import os

import matplotlib

matplotlib.use("Agg")  # no window, whatever MPLBACKEND says

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from unetlab.history import History  # noqa: E402
from unetlab.viz import (  # noqa: E402
    ERROR_COLORS,
    overlay_errors,
    plot_history,
    plot_threshold_sweep,
    save_figure,
    show_predictions,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_overlay_paints_each_outcome_in_its_colour():
    image = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    truth = np.array([[1, 0], [1, 0]], bool)
    pred = np.array([[1, 1], [0, 0]], bool)
    rgb = overlay_errors(image, truth, pred)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0, 0], to_rgb(ERROR_COLORS["true positive"]), rtol=1e-6)
    np.testing.assert_allclose(rgb[0, 1], to_rgb(ERROR_COLORS["false positive"]), rtol=1e-6)
    np.testing.assert_allclose(rgb[1, 0], to_rgb(ERROR_COLORS["false negative"]), rtol=1e-6)
    np.testing.assert_allclose(rgb[1, 1], [0.4, 0.4, 0.4])  # true negative: the gray image
    assert len({tuple(to_rgb(c)) for c in ERROR_COLORS.values()}) == 3


def test_overlay_accepts_channel_first_tensors_and_rejects_mismatched_shapes():
    rgb = overlay_errors(torch.rand(1, 8, 8), torch.zeros(1, 8, 8), torch.ones(1, 8, 8))
    assert rgb.shape == (8, 8, 3)
    with pytest.raises(ValueError, match="of one shape"):
        overlay_errors(np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match=r"grayscale image of shape \(H, W\)"):
        overlay_errors(np.zeros((8, 8, 3)), np.zeros((8, 8)), np.zeros((8, 8)))


def test_show_predictions_has_one_row_per_sample_with_its_dice():
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    truths = (images > 0.5).float()
    probs = images.clone()
    probs[1] = 0.0  # misses everything: Dice 0
    fig = show_predictions(images, truths, probs, titles=["a", "b", "c"])
    assert isinstance(fig, Figure)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 12
    titles = [ax.get_title() for ax in image_axes]
    assert titles[0] == "a" and titles[3] == "errors: Dice 1.000" and titles[7] == "errors: Dice 0.000"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(ERROR_COLORS)


def test_show_predictions_rejects_bad_input():
    images = np.zeros((2, 16, 16))
    with pytest.raises(ValueError, match="of one shape"):
        show_predictions(images, np.zeros((3, 16, 16)), images)
    with pytest.raises(ValueError, match="got 1 titles for 2 images"):
        show_predictions(images, images, images, titles=["only one"])
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        show_predictions(images, images, images, threshold=1.5)


def test_plot_history_takes_a_history_or_a_dict():
    history = History(train_loss=[1.0, 0.8, 0.7], val_loss=[1.1, 0.9, 0.95], val_dice=[0.3, 0.6, 0.5])
    fig = plot_history(history)
    loss_ax, dice_ax = fig.axes
    assert len(loss_ax.get_lines()) == 2
    assert "best: epoch 2, Dice 0.600" in [t.get_text() for t in dice_ax.get_legend().get_texts()]
    assert isinstance(plot_history({"train_loss": [1.0, 0.5]}), Figure)  # no validation
    skipped = plot_history(History(train_loss=[1.0, 0.8, 0.7], val_dice=[0.3, 0.6, float("nan")])).axes[1]
    assert "best: epoch 2, Dice 0.600" in [t.get_text() for t in skipped.get_legend().get_texts()]  # NaN: unscored
    with pytest.raises(ValueError, match="at least one epoch"):
        plot_history(History())
    with pytest.raises(ValueError, match="val_dice has 1 epochs but train_loss has 2"):
        plot_history({"train_loss": [1.0, 0.5], "val_dice": [0.5]})


def test_plot_threshold_sweep_marks_the_best_threshold():
    sweep = {"thresholds": np.array([0.3, 0.5, 0.7]), "dice": np.array([0.6, 0.8, 0.7]),
             "iou": np.array([0.4, 0.6, 0.5])}
    fig = plot_threshold_sweep(sweep)
    (ax,) = fig.axes
    assert "best: t = 0.50, Dice 0.800" in [t.get_text() for t in ax.get_legend().get_texts()]
    with pytest.raises(ValueError, match="needs 'thresholds' and 'dice'"):
        plot_threshold_sweep({"dice": [0.5]})
    with pytest.raises(ValueError, match="of one length"):
        plot_threshold_sweep({"thresholds": [0.5, 0.6], "dice": [0.5]})


def test_save_figure_writes_a_png_atomically(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    path = save_figure(fig, tmp_path / "figures" / "nested" / "line.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["line.png"]  # no temporary file left
    with pytest.raises(ValueError, match="needs a path ending in one of"):
        save_figure(fig, tmp_path / "line.unknown")


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))])
def test_a_save_figure_that_fails_midway_keeps_the_previous_file(tmp_path, monkeypatch, error):
    fig, _ = plt.subplots(figsize=(2, 2))
    path = save_figure(fig, tmp_path / "plot.png", dpi=30)
    before = path.read_bytes()

    def dies_mid_write(file, **kwargs):
        file.write(b"\x89PNG half")
        raise error

    monkeypatch.setattr(fig, "savefig", dies_mid_write)
    with pytest.raises(type(error)) as caught:
        save_figure(fig, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    if isinstance(error, OSError):  # a full disk: one clear error, its errno kept
        assert caught.value.errno == errno.ENOSPC
        assert str(caught.value) == f"could not write {path}: No space left on device; its previous content, if " \
                                    f"any, is unchanged"


def test_gallery_shows_every_surface_with_each_defect_kind():
    from unetlab.synth import SURFACES
    from unetlab.viz import show_gallery

    fig = show_gallery(seed=3)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titled) == 4 * len(SURFACES)
    assert {t.split(":")[0] for t in titled} == set(SURFACES)
    plt.close(fig)


def test_figures_go_to_the_repository_in_a_clone_and_to_the_working_directory_elsewhere(tmp_path, monkeypatch):
    from pathlib import Path

    from unetlab.viz import figures_dir

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo / "notebooks")  # a chapter in a clone
    assert figures_dir() == Path("../figures") and figures_dir().resolve() == repo / "figures"
    monkeypatch.chdir(repo)
    assert figures_dir() == Path("figures")

    colab = tmp_path / "content"  # Colab: the package installed from git, the notebook run in /content
    (colab / "sample_data").mkdir(parents=True)
    monkeypatch.chdir(colab)
    assert figures_dir() == Path("figures")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')  # another project's root
    assert figures_dir() == Path("figures")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "unetlab"\n')  # a clone above: its figures/
    assert figures_dir() == Path("../figures")
    assert not (tmp_path / "figures").exists()  # nothing made until a figure is saved
