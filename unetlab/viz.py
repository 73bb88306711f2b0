"""Pictures of results (matplotlib only): error overlays, prediction rows, training curves, threshold sweeps.

Every plotting function returns the :class:`matplotlib.figure.Figure` (made with pyplot, so ``plt.show()``
displays it in a notebook); :func:`save_figure` writes one to disk atomically, and :func:`figures_dir` says
where the tutorial's figures go.

Error colours (Okabe-Ito / microscopy palette, distinguishable with every common colour-vision deficiency and
against a gray image):

    true positive   bluish green  #009E73   defect found
    false positive  magenta       #FF00FF   defect predicted where there is none
    false negative  yellow        #F0E442   defect missed

Images are (H, W) floats in [0, 1]; stacks are (N, H, W) or (N, 1, H, W); numpy arrays and torch tensors both
work (tensors are copied to the CPU).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .checks import is_int
from .io import atomic_write
from .metrics import per_image_scores
from .synth import CLASS_NAMES, SURFACES, DefectConfig, make_sample

ERROR_COLORS: dict[str, str] = {
    "true positive": "#009E73",
    "false positive": "#FF00FF",
    "false negative": "#F0E442",
}
PANEL_INCHES = 2.2  # side of one image panel


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """numpy copy of an array or tensor (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}")
    return x


def _as_image(x: Any, name: str) -> np.ndarray:
    """(H, W) or (1, H, W) -> (H, W)."""
    x = _as_numpy(x, name)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"{name} must be a grayscale image of shape (H, W) or (1, H, W); got shape {x.shape}")
    return x


def _as_stack(x: Any, name: str) -> np.ndarray:
    """(H, W), (N, H, W) or (N, 1, H, W) -> (N, H, W)."""
    x = _as_numpy(x, name)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (H, W), (N, H, W) or (N, 1, H, W); got shape {x.shape}")
    return x


def overlay_errors(image: Any, truth: Any, pred: Any) -> np.ndarray:
    """The image in gray with found, false and missed defect pixels painted in :data:`ERROR_COLORS`.

    Args:
        image: (H, W) or (1, H, W) float in [0, 1].
        truth: same shape, the true defect mask (bool, or numbers > 0.5 for defect).
        pred: same shape, the predicted mask (bool, or numbers > 0.5 for defect, so probabilities are
            thresholded at 0.5).

    Returns:
        (H, W, 3) float32 RGB in [0, 1], for ``plt.imshow``.
    """
    image = _as_image(image, "image").astype(np.float32)
    truth, pred = _as_image(truth, "truth") > 0.5, _as_image(pred, "pred") > 0.5
    if not image.shape == truth.shape == pred.shape:
        raise ValueError(f"overlay_errors expects image, truth and pred of one shape; "
                         f"got {image.shape}, {truth.shape} and {pred.shape}")
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2)
    for where, label in ((truth & pred, "true positive"), (~truth & pred, "false positive"),
                         (truth & ~pred, "false negative")):
        rgb[where] = to_rgb(ERROR_COLORS[label])
    return rgb


def add_error_legend(fig: Figure) -> None:
    """Add the legend of :data:`ERROR_COLORS` below the panels of ``fig`` (which uses the constrained layout)."""
    handles = [Patch(facecolor=color, edgecolor="black", label=label) for label, color in ERROR_COLORS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)


def show_predictions(
    images: Any,
    truths: Any,
    probs: Any,
    threshold: float = 0.5,
    titles: Sequence[str] | None = None,
) -> Figure:
    """One row per sample: input | ground truth | prediction | error overlay, with the Dice of each row.

    Args:
        images: (N, H, W) or (N, 1, H, W) float in [0, 1] (a single (H, W) image gives one row).
        truths: same shape, true defect masks (> 0.5 is defect).
        probs: same shape, predicted probabilities in [0, 1] (e.g. from :func:`unetlab.predict`).
        threshold: a pixel is predicted as defect when its probability is > threshold.
        titles: optional label for each row (e.g. the sample index), shown above its input.
    """
    images, truths, probs = _as_stack(images, "images"), _as_stack(truths, "truths"), _as_stack(probs, "probs")
    if not images.shape == truths.shape == probs.shape:
        raise ValueError(f"show_predictions expects images, truths and probs of one shape; "
                         f"got {images.shape}, {truths.shape} and {probs.shape}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"show_predictions got {len(titles)} titles for {len(images)} images")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1); got {threshold!r}")
    truth, pred = truths > 0.5, probs > threshold
    dice = per_image_scores(pred, truth)["dice"]
    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(4 * PANEL_INCHES, n * PANEL_INCHES + 0.4), squeeze=False,
                             layout="constrained")
    for i, row in enumerate(axes):
        panels = (
            (images[i], titles[i] if titles is not None else "input"),
            (truth[i], "ground truth"),
            (pred[i], f"prediction (p > {threshold:g})"),
            (overlay_errors(images[i], truth[i], pred[i]), f"errors: Dice {dice[i]:.3f}"),
        )
        _draw_row(row, panels)
    add_error_legend(fig)
    return fig


def _draw_row(axes: Sequence[Any], panels: Sequence[tuple[np.ndarray, str]]) -> None:
    """One figure row: each (picture, title) in its axis, gray in [0, 1] (RGB pictures keep their colours)."""
    for ax, (picture, title) in zip(axes, panels):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()


def plot_history(history: Any) -> Figure:
    """Training curves: train and validation loss (left), validation Dice with the best epoch marked (right).

    Args:
        history: a :class:`unetlab.train.History` or its ``to_dict()`` (lists ``train_loss``, ``val_loss``,
            ``val_dice`` per epoch; the validation lists may be empty; a NaN Dice marks an epoch that was not scored).
    """
    data = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    train_loss = list(data.get("train_loss", []))
    val_loss, val_dice = list(data.get("val_loss", [])), list(data.get("val_dice", []))
    if not train_loss:
        raise ValueError("plot_history needs a history with at least one epoch of train_loss")
    for name, values in (("val_loss", val_loss), ("val_dice", val_dice)):
        if values and len(values) != len(train_loss):
            raise ValueError(f"plot_history: {name} has {len(values)} epochs but train_loss has {len(train_loss)}")
    epochs = np.arange(1, len(train_loss) + 1)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(8, 3), layout="constrained")
    ax_loss.plot(epochs, train_loss, "o-", label="train")
    if val_loss:
        ax_loss.plot(epochs, val_loss, "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    if val_dice and not np.isnan(val_dice).all():
        best = int(np.argmax(np.nan_to_num(val_dice, nan=-np.inf)))  # NaN: an epoch without a score
        ax_dice.plot(epochs, val_dice, "o-", color="C2")
        ax_dice.plot(epochs[best], val_dice[best], "*", color="black", markersize=14,
                     label=f"best: epoch {epochs[best]}, Dice {val_dice[best]:.3f}")
        ax_dice.legend(loc="lower right")
    else:
        ax_dice.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_dice.transAxes)
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="validation Dice (threshold 0.5)", ylim=(0, 1))
    for ax in (ax_loss, ax_dice):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    return fig


def plot_threshold_sweep(sweep: dict[str, Any]) -> Figure:
    """Pooled Dice (and IoU when present) against the threshold, the best threshold marked.

    Args:
        sweep: the dict of :func:`unetlab.evaluate.threshold_sweep`: arrays ``thresholds`` and ``dice`` of one
            length, optionally ``iou``.
    """
    if "thresholds" not in sweep or "dice" not in sweep:
        raise ValueError(f"plot_threshold_sweep needs 'thresholds' and 'dice'; got keys {sorted(sweep)}")
    thresholds, dice = np.asarray(sweep["thresholds"], float), np.asarray(sweep["dice"], float)
    if thresholds.ndim != 1 or thresholds.shape != dice.shape or thresholds.size == 0:
        raise ValueError(f"plot_threshold_sweep needs 1-D thresholds and dice of one length; "
                         f"got shapes {thresholds.shape} and {dice.shape}")
    best = int(np.argmax(dice))
    fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    ax.plot(thresholds, dice, "o-", label="Dice")
    if "iou" in sweep:
        ax.plot(thresholds, np.asarray(sweep["iou"], float), "s--", label="IoU", alpha=0.7)
    ax.axvline(thresholds[best], color="black", linestyle=":", linewidth=1)
    ax.plot(thresholds[best], dice[best], "*", color="black", markersize=14,
            label=f"best: t = {thresholds[best]:.2f}, Dice {dice[best]:.3f}")
    ax.set(xlabel="threshold on the defect probability", ylabel="pooled score", xlim=(0, 1), ylim=(0, 1),
           title="threshold sweep")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (format from the extension, e.g. ``.png``) atomically; return the path.

    Missing parent folders (e.g. ``figures/``) are created. The image is drawn into a temporary file in the same
    folder and renamed over ``path`` in one step, so a reader never sees a half-written picture.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"save_figure needs a path ending in one of {sorted('.' + k for k in supported)}; got {path}")
    atomic_write(path, lambda file: fig.savefig(file, format=fmt, dpi=dpi))
    return path


def figures_dir() -> Path:
    """The folder the chapters write their figures to, relative to the working directory.

    Inside a clone of unetlab (the working directory or a folder above it holds unetlab's ``pyproject.toml``)
    it is the repository's ``figures/``, the one the README shows: ``../figures`` from ``notebooks/``.
    Anywhere else it is ``figures/`` in the working directory: on Colab ``/content/figures``, in the Files pane
    (a path such as ``../figures`` there would be ``/figures``, outside it). Nothing is created until a figure
    is saved.
    """
    here = Path.cwd()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file() and 'name = "unetlab"' in project.read_text(encoding="utf-8", errors="replace"):
            return Path(os.path.relpath(folder / "figures", here))
    return Path("figures")


# ----------------------------------------------------------------------------------------------------------------
# Sample pictures: synthetic images with their class labels

# One RGB colour (0..1) per class id of ``synth.CLASS_NAMES``, from the Okabe-Ito palette (distinguishable with
# the common colour-vision deficiencies, and bright against a gray image). Background (id 0) is never painted:
# it stays transparent, so its entry is only a placeholder.
CLASS_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),  # 0 background: not drawn
    to_rgb("#F0E442"),  # 1 scratch: yellow
    to_rgb("#D55E00"),  # 2 crack: vermillion
    to_rgb("#56B4E9"),  # 3 stain: sky blue
    to_rgb("#CC79A7"),  # 4 pit: reddish purple
    to_rgb("#009E73"),  # 5 chip: bluish green
    to_rgb("#0072B2"),  # 6 patch: blue
)


def label_overlay(image: Any, labels: Any, alpha: float = 0.5) -> np.ndarray:
    """The image in gray with every defect pixel tinted in its class colour (:data:`CLASS_COLORS`).

    Args:
        image: (H, W) or (1, H, W) float in [0, 1].
        labels: same size, integer class ids 0..3 (0 background is left untouched).
        alpha: opacity of the tint, from 0 (invisible) to 1 (solid colour).

    Returns:
        (H, W, 3) float32 RGB in [0, 1], for ``plt.imshow``.
    """
    image, labels = _as_image(image, "image"), _as_image(labels, "labels")
    if labels.shape != image.shape:
        raise ValueError(f"label_overlay expects image and labels of one size; got {image.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label_overlay expects integer class ids as labels; got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_COLORS)):
        raise ValueError(f"label_overlay expects class ids 0..{len(CLASS_COLORS) - 1}; "
                         f"got values {labels.min()}..{labels.max()}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"label_overlay expects alpha in [0, 1]; got {alpha!r}")
    rgb = np.repeat(np.clip(image, 0, 1).astype(np.float32)[..., None], 3, axis=2)
    defect = labels > 0
    rgb[defect] = (1 - alpha) * rgb[defect] + alpha * np.asarray(CLASS_COLORS, np.float32)[labels[defect]]
    return rgb


def add_class_legend(fig: Figure, *labels: np.ndarray) -> None:
    """Add the legend of the defect classes' colours below the panels of ``fig`` (constrained layout): the
    tutorial's three (scratch, crack, stain) always, the other kinds only where they occur in ``labels``."""
    present = set(np.unique(np.concatenate([np.ravel(lab) for lab in labels]))) if labels else set()
    handles = [Patch(facecolor=CLASS_COLORS[k], edgecolor="black", label=CLASS_NAMES[k])
               for k in range(1, len(CLASS_NAMES)) if k <= 3 or k in present]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)


def _as_sample_stack(x: Any, name: str) -> np.ndarray:
    """Like :func:`_as_stack`, and also a list or tuple of (H, W) / (1, H, W) arrays or tensors of one size."""
    if not isinstance(x, (list, tuple)):
        return _as_stack(x, name)
    items = [_as_image(item, f"{name}[{i}]") for i, item in enumerate(x)]
    if not items or any(item.shape != items[0].shape for item in items):
        raise ValueError(f"{name} must be a non-empty sequence of images of one size; "
                         f"got shapes {[item.shape for item in items]}")
    return np.stack(items)


def show_samples(images: Any, labels: Any, titles: Sequence[str] | None = None, ncols: int = 4,
                 overlay: bool = True) -> Figure:
    """A grid of samples: each cell the image tinted by its labels, or (``overlay=False``) image | label map.

    Args:
        images: (N, H, W) or (N, 1, H, W) float in [0, 1], or a list of N (H, W) / (1, H, W) images (arrays or
            tensors); a single (H, W) image gives one cell.
        labels: (N, H, W) integer class ids 0..6 (``synth.CLASS_NAMES``), or a list of N (H, W) maps, e.g. from
            ``make_sample`` or ``SyntheticDefects(..., return_labels=True)``.
        titles: optional caption for each sample.
        ncols: samples per row.
        overlay: True tints the defects on the image; False shows each image beside its coloured label map.
    """
    images, labels = _as_sample_stack(images, "images"), _as_sample_stack(labels, "labels")
    if images.shape != labels.shape:
        raise ValueError(f"show_samples expects images and labels of one shape; got {images.shape} and {labels.shape}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"show_samples got {len(titles)} titles for {len(images)} images")
    if not is_int(ncols) or ncols < 1:
        raise ValueError(f"show_samples expects ncols >= 1; got {ncols!r}")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    per_sample = 1 if overlay else 2
    fig, axes = plt.subplots(nrows, ncols * per_sample, squeeze=False, layout="constrained",
                             figsize=(ncols * per_sample * PANEL_INCHES, nrows * PANEL_INCHES + 0.4))
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (image, lab) in enumerate(zip(images, labels)):
        row, col = divmod(i, ncols)
        cells = axes[row, col * per_sample:(col + 1) * per_sample]
        if overlay:
            cells[0].imshow(label_overlay(image, lab), interpolation="nearest")
        else:
            cells[0].imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            cells[1].imshow(label_overlay(np.zeros_like(image), lab, alpha=1.0), interpolation="nearest")
        if titles is not None:
            cells[0].set_title(titles[i], fontsize=9)
    if labels.any():  # no legend for pictures without a single labelled pixel
        add_class_legend(fig, labels)
    return fig


def show_gallery(seed: int = 10) -> Figure:
    """The README's picture: one row per surface kind; columns scratch, crack, stain alone, then all mixed.

    Row ``i`` draws every column from seed ``seed + i``, so a row shows one surface with different defects.
    """
    kinds = {"scratch": dict(scratches=(2, 2), cracks=(0, 0), stains=(0, 0)),
             "crack": dict(scratches=(0, 0), cracks=(1, 1), stains=(0, 0)),
             "stain": dict(scratches=(0, 0), cracks=(0, 0), stains=(2, 2)),
             "mixed": dict(scratches=(1, 2), cracks=(1, 1), stains=(1, 1))}
    samples = [make_sample(DefectConfig(surface=surface, defect_free=0.0, **counts), seed + i)
               for i, surface in enumerate(SURFACES) for counts in kinds.values()]
    return show_samples([image for image, _ in samples], [labels for _, labels in samples],
                        titles=[f"{surface}: {kind}" for surface in SURFACES for kind in kinds], ncols=len(kinds))


def show_label_predictions(images: Any, truths: Any, preds: Any, titles: Sequence[str] | None = None) -> Figure:
    """Multi-class results, one row per sample: input | truth | prediction, defects tinted by class colour.

    Args:
        images: (N, H, W) or (N, 1, H, W) float in [0, 1].
        truths: (N, H, W) integer true class ids (``synth.CLASS_NAMES``).
        preds: (N, H, W) integer predicted class ids (e.g. from :func:`unetlab.predict_labels`).
        titles: optional label for each row, shown above its input.
    """
    images = _as_stack(images, "images")
    truths, preds = _as_sample_stack(truths, "truths"), _as_sample_stack(preds, "preds")
    if not images.shape == truths.shape == preds.shape:
        raise ValueError(f"show_label_predictions expects images, truths and preds of one shape; "
                         f"got {images.shape}, {truths.shape} and {preds.shape}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"show_label_predictions got {len(titles)} titles for {len(images)} images")
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(3 * PANEL_INCHES, n * PANEL_INCHES + 0.4), squeeze=False,
                             layout="constrained")
    for i, row in enumerate(axes):
        _draw_row(row, ((images[i], titles[i] if titles is not None else "input"),
                        (label_overlay(images[i], truths[i], alpha=0.7), "ground truth"),
                        (label_overlay(images[i], preds[i], alpha=0.7), "prediction")))
    add_class_legend(fig, truths, preds)
    return fig


def plot_confusion(matrix: Any, class_names: Sequence[str] | None = None, *,
                   skip_background: bool = False) -> Figure:
    """A pixel confusion matrix, each row normalised to the share of that true class (the diagonal is recall).

    Args:
        matrix: (K, K) counts, [true][predicted], e.g. ``evaluate_multiclass(...)["matrix"]``.
        class_names: K names, index 0 the background (default: the first K of ``synth.CLASS_NAMES``).
        skip_background: drop row and column 0, to compare the defect classes with each other only.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if class_names is None and matrix.ndim == 2:
        class_names = CLASS_NAMES[:matrix.shape[0]]
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(class_names or ()):
        raise ValueError(f"plot_confusion expects a square matrix with one row per class name "
                         f"({len(class_names or ())}); got shape {matrix.shape}")
    names = list(class_names)
    if skip_background:
        matrix, names = matrix[1:, 1:], names[1:]
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.1 * k + 1.6, 1.0 * k + 1.0), layout="constrained")
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for t in range(k):
        for p in range(k):
            ax.text(p, t, f"{shares[t, p]:.1%}\n{int(matrix[t, p]):,}", ha="center", va="center", fontsize=8,
                    color="white" if shares[t, p] > 0.5 else "black")
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (row sums to 100 %)")
    ax.set_title("pixel confusion matrix", fontsize=10)
    return fig


def show_real_predictions(images: Sequence[Any], truths: Sequence[Any], preds: Sequence[Any] | None = None,
                          titles: Sequence[str] | None = None) -> Figure:
    """Like :func:`show_predictions` for images of different sizes (real ones): one row per image,
    input | ground truth | prediction | error overlay with the image's Dice.

    Args:
        images: N (H_i, W_i) float images in [0, 1]; each may have its own size.
        truths: N matching bool (or 0/1) masks.
        preds: N matching bool predicted masks (already thresholded); None shows input | ground truth only.
        titles: optional caption for each row, shown above its input.
    """
    if preds is None:
        return _show_real_masks(images, truths, titles)
    if not len(images) == len(truths) == len(preds) or not len(images):
        raise ValueError(f"show_real_predictions expects as many (>= 1) images, truths and preds; "
                         f"got {len(images)}, {len(truths)} and {len(preds)}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"show_real_predictions got {len(titles)} titles for {len(images)} images")
    fig, axes = plt.subplots(len(images), 4, figsize=(4 * PANEL_INCHES, len(images) * PANEL_INCHES + 0.4),
                             squeeze=False, layout="constrained")
    for i, row in enumerate(axes):
        image = _as_image(images[i], f"images[{i}]")
        truth, pred = _as_image(truths[i], f"truths[{i}]") > 0.5, _as_image(preds[i], f"preds[{i}]") > 0.5
        if not image.shape == truth.shape == pred.shape:
            raise ValueError(f"row {i}: image {image.shape}, truth {truth.shape} and pred {pred.shape} differ")
        dice = per_image_scores(pred[None], truth[None])["dice"][0]
        _draw_row(row, ((image, titles[i] if titles is not None else "input"), (truth, "ground truth"),
                        (pred, "prediction"), (overlay_errors(image, truth, pred), f"errors: Dice {dice:.3f}")))
    add_error_legend(fig)
    return fig


def plot_kshot(rows: Sequence[dict], metric: str = "class_dice", pool_size: int | None = None) -> Figure:
    """Real-test score against the number k of labelled real images: one line per start, mean over the splits
    with error bars of one standard deviation.

    Args:
        rows: from :func:`unetlab.sim2real.run_experiments` (over one or several splits): dicts with ``start``,
            ``k`` (None for the whole pool) and ``metric``.
        metric: the row key to plot (``"class_dice"``: Dice averaged over the defect classes; or ``"dice"``).
        pool_size: what k = None means, for its tick label (e.g. ``len(pool)``); ``"all"`` when not given.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    ks = sorted({r["k"] for r in rows if r["k"] is not None}) + ([None] if any(r["k"] is None for r in rows) else [])
    where = {k: i for i, k in enumerate(ks)}  # evenly spaced: 0, 5, 10, 20, 50, all
    style = {"baseline": dict(color="0.4", linestyle="--", marker="s"), "fresh": dict(color="C1", marker="o")}
    names = {"baseline": "classical baseline (tuned on the k images)", "fresh": "fresh weights"}
    for i, start in enumerate(dict.fromkeys(r["start"] for r in rows)):
        points = []
        for k in ks:
            values = [r[metric] for r in rows if r["start"] == start and r["k"] == k and r[metric] is not None]
            if values:
                points.append((where[k], float(np.mean(values)), float(np.std(values)), len(values)))
        if points:
            x, mean, spread, n = zip(*points)
            label = names.get(start, f"{start} start") + (f" (mean of {max(n)} splits)" if max(n) > 1 else "")
            ax.errorbar(x, mean, yerr=spread, capsize=3, label=label,
                        **style.get(start, dict(color=f"C{0 if i == 0 else i + 1}", marker="o")))
    ax.set_xticks(range(len(ks)), [str(k) if k is not None else f"all ({pool_size})" if pool_size else "all"
                                   for k in ks])
    ax.set(xlabel="labelled real images k", ylabel={"class_dice": "class Dice (mean over defect classes)"}.get(
        metric, metric), ylim=(0, 1), title="real test set")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _show_real_masks(images: Sequence[Any], truths: Sequence[Any], titles: Sequence[str] | None) -> Figure:
    """Rows of input | ground truth for images of different sizes."""
    if len(images) != len(truths) or not len(images) or (titles is not None and len(titles) != len(images)):
        raise ValueError(f"show_real_predictions expects as many (>= 1) images, truths and titles; "
                         f"got {len(images)}, {len(truths)} and {None if titles is None else len(titles)}")
    fig, axes = plt.subplots(len(images), 2, figsize=(2 * PANEL_INCHES, len(images) * PANEL_INCHES),
                             squeeze=False, layout="constrained")
    for i, row in enumerate(axes):
        _draw_row(row, ((_as_image(images[i], f"images[{i}]"), titles[i] if titles is not None else "input"),
                        (_as_image(truths[i], f"truths[{i}]") > 0.5, "ground truth")))
    return fig
