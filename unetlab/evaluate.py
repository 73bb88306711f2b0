"""Use a trained model: ``predict`` defect probabilities, ``evaluate`` it on a loader, sweep the threshold, and
score it on real images of any size (:func:`predict_masks`, :func:`score_masks`).

All three run the model in eval mode (BatchNorm uses its running statistics) without gradients, and put the
model back in the mode it was in; in float32, except :func:`predict` and :func:`predict_masks`, which by default
run the network in bfloat16 where the hardware computes it natively (``amp="auto"``, as :func:`unetlab.fit`
trains: about twice the speed on such a CPU) and the probabilities in float32. Scores come from
:mod:`unetlab.metrics`, so their conventions hold here: a pixel is predicted as defect when its probability is
``> threshold``; a ratio 0 / 0 counts as 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .batches import split_batch
from .checks import check_unit_values, is_int, is_real
from .decision import check_decision, defect_mask
from .device import autocast_dtype, resolve_device
from .model import receptive_field
from .metrics import (MetricAccumulator, class_dice, class_mean, confusion_counts, confusion_matrix,
                      counts_from_confusion, pooled_from_counts, scores_by_class, scores_from_confusion,
                      scores_from_counts)
from .real import RealSet
from .synth import CLASS_NAMES

TILE = 768  # px: images larger than this on a side are predicted in overlapping tiles (see _logits)
GRAYSCALE_HINT = "convert to grayscale first, e.g. cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)"


def predict(
    model: nn.Module,
    images: np.ndarray | Tensor,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    flips: bool = False,
    amp: str = "auto",
) -> np.ndarray | Tensor:
    """Defect probability of every pixel, for images of any size.

    Args:
        model: a binary segmentation model returning (B, 1, H, W) logits, e.g. :class:`unetlab.UNet`. It is moved
            to ``device``.
        images: grayscale images in [0, 1], as
            a numpy array (H, W), (N, H, W) or (N, 1, H, W), or a torch tensor (H, W), (1, H, W) or (N, 1, H, W).
            ``uint8`` arrays and tensors (0..255 gray levels, as ``cv2.imread`` returns) are divided by 255.
            Float values must be finite and in [0, 1]. A numpy array whose last axis has 3 or 4 entries is taken
            for a colour image and refused; one of shape (3, H, W) or (4, H, W) is refused as ambiguous (a
            colour image with its channels first, or a stack of three or four images?): pass such a stack as
            (N, 1, H, W), e.g. ``images[:, None]``.
        device: where to run; None picks :func:`unetlab.default_device`.
        batch_size: images per forward pass.
        flips: average the probabilities of the image and of its horizontal, vertical and double flips
            (test-time augmentation: 4x the time; on real magnetic-tile images it raised the class Dice of a
            fine-tuned model from 0.533 to 0.562). The real-use paths (:func:`predict_masks`,
            ``unetlab predict``, :func:`unetlab.finetune`'s threshold) use it.
        amp: the network's precision, as for :func:`unetlab.fit` (:func:`unetlab.device.autocast_dtype`):
            ``"auto"`` runs it in bfloat16 where the device computes that natively (a CPU with AMX or AVX-512
            BF16: about twice the speed of float32, ``benchmarks/bench_predict.py``; a recent GPU), float16 on
            older GPUs, float32 elsewhere; ``"off"`` always float32. The logits become float32 probabilities
            either way; on the real magnetic tiles bfloat16 moved test class Dice by 0.001 at most (README).

    Returns:
        float32 probabilities in [0, 1] with the shape of ``images``: a numpy array for numpy input, a tensor
        on the input's device for tensor input. H and W need not be multiples of the model's ``2**depth``:
        the images are reflect-padded up to one and the result is cropped back. Images larger than
        :data:`TILE` pixels on a side are predicted in overlapping tiles (same result, bounded memory).

    Raises:
        ValueError: colour or ambiguous images, wrong number of dimensions, no images or empty ones, NaN/inf,
            values outside [0, 1], images smaller than the model's ``2**depth``, ``batch_size < 1``, or a model
            whose output holds NaN or infinite values (broken weights).
        TypeError: ``images`` is neither a numpy array nor a tensor.
    """
    if not isinstance(flips, bool):
        raise ValueError(f"flips must be True or False; got {flips!r}")
    where = resolve_device(device)
    dtype = autocast_dtype(amp, where)
    with torch.autocast(where.type, dtype=dtype) if dtype is not None else nullcontext():
        return _per_pixel(model, images, where, batch_size, _flip_averaged if flips else _probabilities)


def _per_pixel(model: nn.Module, images: np.ndarray | Tensor, device: str | torch.device | None, batch_size: int,
               head: Callable[[nn.Module, Tensor], Tensor]) -> np.ndarray | Tensor:
    """Run ``head(model, chunk)`` -> (B, 1, H, W) over ``images`` in chunks of ``batch_size``, in eval mode,
    and give the result the input's shape and type (see :func:`predict`)."""
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    batch, restore = _as_batch(images, _in_channels(model))
    device = _prepare(model, device)
    with _eval_mode(model):
        return restore(torch.cat([head(model, chunk.to(device)).cpu() for chunk in batch.split(int(batch_size))]))


def _as_batch(images: np.ndarray | Tensor, in_channels: int) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """(N, C, H, W) float32 tensor in [0, 1] from the forms :func:`predict` accepts, and the function that gives
    a (N, 1, H, W) result back the input's shape and type."""
    if isinstance(images, np.ndarray):
        shape, ndim = images.shape, images.ndim
        if ndim in (3, 4) and shape[-1] in (3, 4):
            raise ValueError(f"predict expects grayscale images (H, W) or (N, H, W); got shape {shape}, "
                             f"which looks like {shape[-1]} colour channels: {GRAYSCALE_HINT}")
        if ndim == 3 and shape[0] in (3, 4):
            raise ValueError(f"predict: a numpy array of shape {shape} is ambiguous: a colour image with its "
                             f"{shape[0]} channels first, or a stack of {shape[0]} grayscale images? Pass a stack as "
                             f"(N, 1, H, W), e.g. images[:, None]; a colour image: {GRAYSCALE_HINT}")
        if ndim not in (2, 3, 4) or (ndim == 4 and shape[1] != 1):
            raise ValueError(f"predict expects a numpy array of shape (H, W), (N, H, W) or (N, 1, H, W); "
                             f"got shape {shape}")
        x = torch.from_numpy(np.ascontiguousarray(images))
        x = x.reshape((1,) * (4 - ndim) + shape) if ndim != 3 else x[:, None]
        restore = lambda p: p.reshape(shape).numpy()  # noqa: E731
    elif isinstance(images, Tensor):
        if images.dim() not in (2, 3, 4):
            raise ValueError(f"predict expects a tensor of shape (H, W), (1, H, W) or (N, 1, H, W); "
                             f"got {tuple(images.shape)}")
        ndim, source_device = images.dim(), images.device
        x = images.detach().cpu()
        x = x.reshape((1,) * (4 - ndim) + tuple(x.shape))
        restore = lambda p: p.reshape(p.shape[4 - ndim:]).to(source_device)  # noqa: E731
    else:
        raise TypeError(f"predict expects a numpy array or a torch tensor; got {type(images).__name__}")
    if x.shape[1] != in_channels:
        hint = (f": {GRAYSCALE_HINT}" if x.shape[1] in (3, 4) and in_channels == 1
                else " (a stack of grayscale tensors is (N, 1, H, W))")
        raise ValueError(f"the model expects {in_channels} channel(s) (N, {in_channels}, H, W); "
                         f"got {x.shape[1]} channels in shape {tuple(images.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"predict got no images (shape {tuple(images.shape)})")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"predict expects non-empty images; got shape {tuple(images.shape)}")
    check_unit_values(x, "predict expects", uint8=True)  # the library's one image check (unetlab.checks)
    return (x.float() / 255 if x.dtype == torch.uint8 else x.float()), restore


def _in_channels(model: nn.Module) -> int:
    return getattr(model, "config", {}).get("in_channels", 1)


def _prepare(model: nn.Module, device: str | torch.device | None) -> torch.device:
    device = resolve_device(device)
    model.to(device)
    return device


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside the block; the model's previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _probabilities(model: nn.Module, images: Tensor) -> Tensor:
    """(B, C, H, W) images -> (B, 1, H, W) defect probabilities of a binary model (see :func:`_logits`)."""
    if _out_channels(model) != 1:
        raise ValueError(f"this function needs a binary model (out_channels=1); the model has "
                         f"{_out_channels(model)} output classes: use predict_labels / evaluate_multiclass")
    return torch.sigmoid(_logits(model, images))


def _flip_averaged(model: nn.Module, images: Tensor) -> Tensor:
    """Defect probabilities averaged over the four flips of each image (each flipped back first)."""
    total = torch.zeros(())
    for dims in ((), (-1,), (-2,), (-2, -1)):
        flipped = images.flip(dims) if dims else images
        probs = _probabilities(model, flipped)
        total = total + (probs.flip(dims) if dims else probs)
    return total / 4


def _out_channels(model: nn.Module) -> int:
    return getattr(model, "config", {}).get("out_channels", 1)


def _logits(model: nn.Module, images: Tensor) -> Tensor:
    """(B, C, H, W) images -> (B, K, H, W) float32 logits, for any H and W.

    Images up to :data:`TILE` px a side go through the model whole, reflect-padded up to a multiple of
    ``2**depth`` and cropped back. Larger ones go in overlapping tiles, so memory stays bounded whatever the
    image size: each tile is the core it predicts plus a margin of half the receptive field on every side, and
    tiles start on the model's pooling grid, so the result is the whole-image result (to float round-off).
    """
    config = getattr(model, "config", {})
    multiple = 2 ** config.get("depth", 0)
    h, w = images.shape[-2:]
    if h < multiple or w < multiple:
        raise ValueError(f"images must be at least {multiple} x {multiple} pixels for this model; got {h} x {w}")
    if max(h, w) <= TILE or "depth" not in config:
        return _whole_logits(model, images, multiple)
    margin = -(-(receptive_field(config["depth"]) // 2 + 1) // multiple) * multiple
    core = max(multiple, (TILE - 2 * margin) // multiple * multiple)
    out = None
    for y in range(0, h, core):
        for x in range(0, w, core):
            ys, xs = max(0, y - margin), max(0, x - margin)
            tile = _whole_logits(model, images[..., ys:min(h, y + core + margin), xs:min(w, x + core + margin)],
                                 multiple)
            if out is None:
                out = torch.empty(images.shape[0], tile.shape[1], h, w, dtype=torch.float32, device=tile.device)
            out[..., y:y + core, x:x + core] = tile[..., y - ys:y - ys + core, x - xs:x - xs + core]
    return out


def _whole_logits(model: nn.Module, images: Tensor, multiple: int) -> Tensor:
    """The model on whole images, reflect-padded (bottom and right) up to a multiple of ``multiple``."""
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect")
    logits = model(images).float()[..., :h, :w]
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the model's output holds NaN or infinite values: its weights are broken (did its training "
                         "diverge? load_checkpoint refuses such weights)")
    return logits


def _predicted_batches(model, loader, device, progress, desc) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """Yield ``(probs, masks, labels or None)`` on ``device`` for every batch of ``loader``."""
    in_channels = _in_channels(model)
    with _eval_mode(model):
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            images, masks, labels = split_batch(batch, in_channels)
            probs = _probabilities(model, images.to(device))
            yield probs, masks.to(device), labels.to(device) if labels is not None else None


def _check_threshold(threshold: float) -> None:
    if not is_real(threshold) or not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a number in [0, 1); got {threshold!r}")


@dataclass
class EvalResult:
    """Scores of one evaluation.

    Attributes:
        summary: from :meth:`unetlab.metrics.MetricAccumulator.compute` (without ``per_image``), plus the
            ``threshold``: pooled ``dice``, ``iou``, ``precision``, ``recall``; ``mean_dice`` (mean per-image
            Dice); ``fp_rate_defect_free`` (share of defect-free images with any predicted pixel);
            ``class_recall`` (per class, when the batches carry labels); ``instance_recall``,
            ``instances_found``, ``instances_total``; ``n_images``, ``n_defect_free``.
        per_image: one dict per image, in loader order: ``index`` (position in the loader's order, which is the
            dataset index when the loader does not shuffle), ``dice``, ``iou``, ``precision``, ``recall``,
            ``truth_pixels`` (defect pixels in the ground truth), ``pred_pixels``.
    """

    summary: dict[str, Any]
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def worst(self, n: int = 5, *, with_defects: bool = False) -> list[int]:
        """Indices of the ``n`` images with the lowest Dice, worst first (lower index first on ties).

        ``with_defects=True`` considers only images whose ground truth has a defect.
        """
        rows = [r for r in self.per_image if r["truth_pixels"] > 0 or not with_defects]
        return [r["index"] for r in sorted(rows, key=lambda r: (r["dice"], r["index"]))[:n]]

    def to_dict(self) -> dict[str, Any]:
        """``{"summary": ..., "per_image": [...]}`` as plain Python values, ready for ``json.dump``."""
        return {"summary": dict(self.summary), "per_image": [dict(r) for r in self.per_image]}


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    threshold: float = 0.5,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> EvalResult:
    """Score ``model`` on every batch of ``loader`` at one threshold.

    Args:
        model: returns (B, 1, H, W) logits; moved to ``device``.
        loader: batches ``(images, masks)`` or ``(images, masks, labels)`` (labels enable per-class recall and
            per-class instances).
        threshold: a pixel is predicted as defect when its probability is > threshold, in [0, 1).
        device: where to run; None picks :func:`unetlab.default_device`.
        progress: show a progress bar over the batches.
    """
    _check_threshold(threshold)
    device = _prepare(model, device)
    accumulator, seen = MetricAccumulator(threshold=threshold), False
    for probs, masks, labels in _predicted_batches(model, loader, device, progress, "evaluate"):
        accumulator.update(probs, masks, labels)
        seen = True
    if not seen:
        raise ValueError("evaluate got an empty loader: it yields no batches")
    report = accumulator.compute()
    per_image = report.pop("per_image")
    rows = [{"index": i, **{name: values[i] for name, values in per_image.items()}}
            for i in range(report["n_images"])]
    return EvalResult(summary={**report, "threshold": threshold}, per_image=rows)


def threshold_sweep(
    model: nn.Module,
    loader: Iterable,
    thresholds: Iterable[float] = np.round(np.linspace(0.05, 0.95, 19), 2),
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pooled scores at many thresholds from one pass of the model over ``loader``.

    Args:
        thresholds: 1-D sequence of thresholds in [0, 1) (a pixel is a defect when its probability is > t).

    Returns:
        ``{"thresholds", "dice", "iou", "precision", "recall"}`` as float64 numpy arrays of the same length, plus
        ``best_threshold`` and ``best_dice`` (the threshold with the highest pooled Dice; the first on ties).
    """
    thresholds = np.asarray(list(thresholds), dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or not np.all((thresholds >= 0) & (thresholds < 1)):
        raise ValueError(f"thresholds must be a non-empty 1-D sequence of numbers in [0, 1); got {thresholds!r}")
    device = _prepare(model, device)
    totals = torch.zeros(len(thresholds), 3, dtype=torch.int64, device=device)  # tp, fp, fn per threshold
    seen = False
    for probs, masks, _ in _predicted_batches(model, loader, device, progress, "threshold sweep"):
        truth = masks > 0.5
        for row, t in zip(totals, thresholds):
            tp, fp, fn, _ = confusion_counts(probs > t, truth)
            row += torch.stack([tp.sum(), fp.sum(), fn.sum()])
        seen = True
    if not seen:
        raise ValueError("threshold_sweep got an empty loader: it yields no batches")
    pooled = [pooled_from_counts(*row) for row in totals]
    scores = {name: np.array([p[name] for p in pooled]) for name in pooled[0]}
    best = int(np.argmax(scores["dice"]))
    return {"thresholds": thresholds, **scores, "best_threshold": float(thresholds[best]),
            "best_dice": float(scores["dice"][best])}


def predict_labels(
    model: nn.Module,
    images: np.ndarray | Tensor,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 8,
) -> np.ndarray | Tensor:
    """Class id of every pixel (the argmax of a multi-class model's logits), for images of any size.

    ``images`` take the forms :func:`predict` accepts; the result has their shape as int64 ids in
    [0, out_channels) (0 background, then ``CLASS_NAMES[1:]``): a numpy array for numpy input, a tensor on the
    input's device for tensor input.
    """
    if _out_channels(model) < 2:
        raise ValueError("predict_labels needs a multi-class model (out_channels >= 2); for a binary model use "
                         "predict")
    return _per_pixel(model, images, device, batch_size,
                      lambda m, chunk: _logits(m, chunk).argmax(1, keepdim=True))


def evaluate_multiclass(
    model: nn.Module,
    loader: Iterable,
    *,
    class_names: tuple[str, ...] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a multi-class model (argmax of its logits) on batches ``(images, masks, labels)``.

    Returns:
        ``class_names``; ``matrix``: the (K, K) pixel confusion matrix as nested lists, [true][predicted]
        (see :func:`unetlab.metrics.confusion_matrix`); pooled per-class ``dice``, ``iou``, ``precision``,
        ``recall`` as ``{name: value}``; ``mean_dice``, the class Dice of the defect classes (see
        :mod:`unetlab.metrics`: the mean of their pooled Dice over the classes present in the truth, NaN when none
        is), and ``mean_iou``, their IoU averaged the same way; ``n_images``.
    """
    k = _out_channels(model)
    if k < 2:
        raise ValueError("evaluate_multiclass needs a multi-class model (out_channels >= 2); for a binary model "
                         "use evaluate")
    class_names = CLASS_NAMES[:k] if class_names is None else tuple(class_names)
    if len(class_names) != k:
        raise ValueError(f"evaluate_multiclass got {len(class_names)} class_names for a model with {k} classes")
    device = _prepare(model, device)
    in_channels = _in_channels(model)
    matrix = torch.zeros(k, k, dtype=torch.int64)
    n = 0
    with _eval_mode(model):
        for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
            images, _, labels = split_batch(batch, in_channels)
            if labels is None:
                raise ValueError("evaluate_multiclass needs batches (images, masks, labels); the loader gives "
                                 "(images, masks): build it with return_labels=True")
            pred = _logits(model, images.to(device)).argmax(1).cpu()
            matrix += confusion_matrix(pred, labels, k)
            n += len(images)
    if n == 0:
        raise ValueError("evaluate_multiclass got an empty loader: it yields no batches")
    scores = scores_from_confusion(matrix)
    tp, fp, fn = (count[1:] for count in counts_from_confusion(matrix))  # the defect classes, not the background
    return {
        "class_names": list(class_names),
        "matrix": matrix.tolist(),
        **{name: dict(zip(class_names, values)) for name, values in scores.items()},
        "mean_dice": class_dice(tp, fp, fn),
        "mean_iou": class_mean(scores_by_class(tp, fp, fn)["iou"]),
        "n_images": n,
    }


# ----------------------------------------------------------------------------------------------------------------
# Real images of any size, with their classes

REAL_THRESHOLD = 0.5  # a learned model flags a pixel when its probability is above this (not tuned on test data)


def predict_masks(model: nn.Module, real: RealSet, threshold: float = REAL_THRESHOLD,
                  seed_threshold: float | None = None, *, device: str | torch.device | None = None,
                  progress: bool = True, flips: bool = True, amp: str = "auto") -> list[np.ndarray]:
    """(H, W) bool defect masks of a binary model for every image of ``real``, each at its own full size:
    probability above ``threshold`` (in regions that reach ``seed_threshold`` when one is given:
    :func:`unetlab.decision.defect_mask`), averaged over the four flips unless ``flips=False``, the network in the
    precision ``amp`` gives (see :func:`predict`)."""
    check_decision(threshold, seed_threshold, "predict_masks")
    return [defect_mask(predict(model, image, device=device, flips=flips, amp=amp), threshold, seed_threshold)
            for image in tqdm(real.images, desc="predict", unit="image", disable=not progress, leave=False)]


def score_masks(preds: Sequence[np.ndarray], real: RealSet) -> dict[str, Any]:
    """Scores of predicted masks against ``real``'s masks (see the module docstring).

    Returns:
        ``class_dice`` (mean of ``per_class``, NaN when no image has a defect pixel); ``per_class``: {class:
        pooled Dice} for every class that has defect pixels; ``dice``, ``iou``, ``precision``, ``recall`` (pooled
        over all images); ``fp_rate_defect_free`` (NaN when no image is defect-free); ``per_image_dice``: list,
        in ``real``'s order; ``n_images``, ``n_defect_free``.
    """
    if len(preds) != len(real):
        raise ValueError(f"score_masks got {len(preds)} predictions for {len(real)} images")
    counts = []
    for i, (pred, truth) in enumerate(zip(preds, real.masks)):
        pred = np.asarray(pred)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction {i} has shape {pred.shape} but its mask ({real.stems[i]}) is {truth.shape}")
        tp, fp, fn, _ = confusion_counts(torch.from_numpy(pred.astype(bool))[None],
                                         torch.from_numpy(truth)[None])
        counts.append((tp.item(), fp.item(), fn.item()))
    tp, fp, fn = torch.tensor(counts, dtype=torch.int64).reshape(-1, 3).T  # (N,) each, one entry per image
    names = sorted(set(real.classes))
    of_class = torch.tensor([[c == name for c in real.classes] for name in names]).reshape(len(names), -1)
    by_class = [(of_class.long() @ count) for count in (tp, fp, fn)]  # (classes,) sums over each class's images
    per_class = {name: d for name, d in zip(names, scores_by_class(*by_class)["dice"]) if not np.isnan(d)}
    empty = [i for i, m in enumerate(real.masks) if not m.any()]
    flagged = sum(1 for i in empty if counts[i][1] > 0)
    return {
        "class_dice": class_dice(*by_class),
        "per_class": per_class,
        **pooled_from_counts(tp, fp, fn),
        "fp_rate_defect_free": flagged / len(empty) if empty else float("nan"),
        "per_image_dice": scores_from_counts(tp, fp, fn)["dice"].tolist(),
        "n_images": len(real),
        "n_defect_free": len(empty),
    }
