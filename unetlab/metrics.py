"""Segmentation scores: Dice, IoU, precision, recall per image and pooled, per defect class, per defect instance.

Everything starts from four pixel counts per image at a threshold: true positives (tp, defect predicted as
defect), false positives (fp), false negatives (fn, missed defect) and true negatives (tn)::

    dice      = 2 tp / (2 tp + fp + fn)
    iou       = tp / (tp + fp + fn)
    precision = tp / (tp + fp)         of the pixels we flagged, the share that are defects
    recall    = tp / (tp + fn)         of the defect pixels, the share we flagged

Empty masks, one rule: a ratio 0 / 0 scores 1 ("nothing could go wrong"). Per image this gives:

    truth empty, prediction empty       dice = iou = precision = recall = 1
    truth empty, pixels predicted       dice = iou = precision = 0, recall = 1 (nothing to find)
    truth non-empty, nothing predicted  dice = iou = recall = 0, precision = 1 (no pixel wrongly flagged)

So a model that predicts nothing gets per-image precision 1: read precision together with recall, and prefer
the pooled scores (counts summed over the dataset first, then one ratio), which weigh every pixel equally and
are 0/0 only when the whole dataset is empty. False positives on defect-free images get their own score,
the share of those images with any predicted pixel (see :class:`MetricAccumulator`). Pooled scores are assembled
in one place, :func:`pooled_from_counts`; everything that reports one (evaluation, the threshold sweep, the
validation Dice of training, the real-image scores, the classical baseline's tuning) goes through it.

**Class Dice**, one definition for the whole library (:func:`class_dice`): the pooled Dice of each class (its
tp, fp and fn summed over the pixels that count for it), then the mean over the classes, so a class of tiny
defects weighs as much as one of large areas. Only classes with truth pixels (tp + fn > 0) take part: the Dice
of a class with nothing to find would only say whether anything was predicted, which the false-alarm rate
reports. With no truth pixel in any class, class Dice is NaN: there is nothing to average, just as
:func:`class_recall` is NaN for an absent class and instance recall with no defect to find. Used with image
classes by :func:`unetlab.sim2real.score_masks` and :func:`unetlab.baseline.tune_baseline`, and with the label
ids 1..K-1 by :func:`unetlab.evaluate_multiclass` (``mean_dice``) and the validation Dice of a multi-class
:func:`unetlab.fit`.

Inputs are torch tensors (any device) or numpy arrays; outputs are python floats, lists and dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor

from .checks import is_int
from .synth import CLASS_NAMES


class Counts(NamedTuple):
    """Pixel counts per image, each a (B,) int64 tensor; unpacks as ``tp, fp, fn, tn = counts``."""

    tp: Tensor
    fp: Tensor
    fn: Tensor
    tn: Tensor


@dataclass(frozen=True)
class InstanceCount:
    """How many ground-truth defects (connected components) were found, out of how many."""

    found: int
    total: int

    @property
    def recall(self) -> float:
        """found / total; NaN when there is no defect to find."""
        return self.found / self.total if self.total else math.nan


def _as_tensor(x: Tensor | np.ndarray, name: str, caller: str) -> Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{caller} expects {name} as a torch.Tensor or numpy array; got {type(x).__name__}")
    return x


def _as_masks(x: Tensor | np.ndarray, name: str, caller: str, dtype_kind: str = "bool") -> Tensor:
    """(B, H, W) or (B, 1, H, W) -> (B, H, W); checks the dtype kind ("bool" or "int")."""
    x = _as_tensor(x, name, caller)
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{caller} expects {name} of shape (B, H, W) or (B, 1, H, W); got {tuple(x.shape)}")
    if dtype_kind == "bool" and x.dtype != torch.bool:
        raise ValueError(
            f"{caller} expects {name} as a boolean mask (e.g. probs > 0.5 or masks > 0.5); got dtype {x.dtype}"
        )
    if dtype_kind == "int" and (x.dtype == torch.bool or x.is_floating_point() or x.is_complex()):
        raise ValueError(f"{caller} expects {name} as integer class ids (B, H, W); got dtype {x.dtype}")
    return x


def _check_same_shape(a: Tensor, b: Tensor, names: str, caller: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{caller} expects {names} of the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")


def confusion_counts(pred: Tensor | np.ndarray, truth: Tensor | np.ndarray) -> Counts:
    """Pixel counts per image of two boolean masks.

    Args:
        pred: (B, H, W) or (B, 1, H, W) bool, the predicted defect pixels.
        truth: same shape and dtype, the true defect pixels.

    Returns:
        ``Counts(tp, fp, fn, tn)``, each a (B,) int64 tensor on the inputs' device.
    """
    pred = _as_masks(pred, "pred", "confusion_counts")
    truth = _as_masks(truth, "truth", "confusion_counts")
    _check_same_shape(pred, truth, "pred and truth", "confusion_counts")
    pred, truth = pred.flatten(1), truth.flatten(1)
    tp = (pred & truth).sum(1)
    fp = (pred & ~truth).sum(1)
    fn = (~pred & truth).sum(1)
    tn = pred.shape[1] - tp - fp - fn
    return Counts(tp, fp, fn, tn)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator as float64, with 0 / 0 = 1 (the module's empty-mask rule)."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.ones_like(numerator))


def scores_from_counts(tp: Tensor, fp: Tensor, fn: Tensor) -> dict[str, Tensor]:
    """Dice, IoU, precision and recall from counts, elementwise, with 0 / 0 = 1 (see the module docstring).

    Args:
        tp, fp, fn: int tensors of one shape: (B,) counts per image, or 0-d sums for pooled scores.

    Returns:
        ``{"dice", "iou", "precision", "recall"}`` -> float64 tensors of the same shape.
    """
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def pooled_from_counts(tp: Tensor | np.ndarray, fp: Tensor | np.ndarray, fn: Tensor | np.ndarray) -> dict[str, float]:
    """Pooled Dice, IoU, precision and recall from pixel counts of any shape (per image, per batch, per class):
    each count is summed over all its entries first, then one ratio each, with 0 / 0 = 1.

    The one place pooled scores are assembled (see the module docstring). Returns python floats.
    """
    totals = [torch.as_tensor(count).sum() for count in (tp, fp, fn)]
    return {name: value.item() for name, value in scores_from_counts(*totals).items()}


def scores_by_class(tp: Tensor | np.ndarray, fp: Tensor | np.ndarray, fn: Tensor | np.ndarray
                    ) -> dict[str, list[float]]:
    """Pooled scores of every class from its summed counts, NaN for a class without truth pixels.

    Args:
        tp, fp, fn: (C,) pixel counts, entry c summed over everything that counts for class c.

    Returns:
        ``{"dice", "iou", "precision", "recall"}`` -> list of C floats; NaN where tp + fn = 0 (the class has
        nothing to find, so it takes no part in :func:`class_dice` or :func:`class_mean`).
    """
    tp, fp, fn = (torch.as_tensor(count) for count in (tp, fp, fn))
    present = (tp + fn) > 0
    return {name: torch.where(present, value, math.nan).tolist()
            for name, value in scores_from_counts(tp, fp, fn).items()}


def class_mean(values: list[float]) -> float:
    """Mean of per-class scores over the classes that take part (not NaN); NaN when none does."""
    present = [v for v in values if not math.isnan(v)]
    return float(np.mean(present)) if present else math.nan


def class_dice(tp: Tensor | np.ndarray, fp: Tensor | np.ndarray, fn: Tensor | np.ndarray) -> float:
    """Class Dice (see the module docstring): the mean of each class's pooled Dice over the classes with truth
    pixels, NaN when there are none.

    Args:
        tp, fp, fn: (C,) pixel counts per class, each summed over the pixels that count for that class, e.g. over
            the images of that class, or the rows of :func:`counts_from_confusion` for the defect classes.
    """
    return class_mean(scores_by_class(tp, fp, fn)["dice"])


def per_image_scores(pred: Tensor | np.ndarray, truth: Tensor | np.ndarray) -> dict[str, list[float]]:
    """Dice, IoU, precision and recall of every image: bool (B, H, W) masks -> name -> list of B floats."""
    tp, fp, fn, _ = confusion_counts(pred, truth)
    return {name: value.tolist() for name, value in scores_from_counts(tp, fp, fn).items()}


def pooled_scores(pred: Tensor | np.ndarray, truth: Tensor | np.ndarray) -> dict[str, float]:
    """Dataset-level scores: counts summed over all images first, then one Dice, IoU, precision, recall.

    Unlike the mean of per-image scores, a large defect weighs more than a small one and an empty image
    contributes only its false positives.
    """
    tp, fp, fn, _ = confusion_counts(pred, truth)
    return pooled_from_counts(tp, fp, fn)


def confusion_matrix(pred: Tensor | np.ndarray, truth: Tensor | np.ndarray, n_classes: int) -> Tensor:
    """Pixel confusion matrix of two class-id maps, for multi-class segmentation.

    Args:
        pred: (B, H, W) integer predicted class ids (e.g. ``logits.argmax(1)``).
        truth: same shape, the true class ids.
        n_classes: K; every id must lie in [0, K).

    Returns:
        (K, K) int64 tensor on the inputs' device: entry [t, p] counts the pixels of true class t predicted
        as class p. The diagonal holds the correct pixels; row t sums to the number of class-t pixels.
    """
    if not is_int(n_classes) or n_classes < 2:
        raise ValueError(f"confusion_matrix expects n_classes as an int >= 2; got {n_classes!r}")
    pred = _as_tensor(pred, "pred", "confusion_matrix")
    truth = _as_tensor(truth, "truth", "confusion_matrix")
    _check_same_shape(pred, truth, "pred and truth", "confusion_matrix")
    for name, x in (("pred", pred), ("truth", truth)):
        if x.is_floating_point() or x.dtype == torch.bool:
            raise ValueError(f"confusion_matrix expects integer class ids as {name}; got {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() >= n_classes):
            raise ValueError(f"confusion_matrix expects {name} ids in [0, {n_classes}); "
                             f"got {x.min().item()}..{x.max().item()}")
    n_classes = int(n_classes)
    index = truth.reshape(-1).long() * n_classes + pred.reshape(-1).long()
    return torch.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores_from_confusion(matrix: Tensor | np.ndarray) -> dict[str, list[float]]:
    """Pooled Dice, IoU, precision and recall of every class from a (K, K) :func:`confusion_matrix`.

    For class c: tp = matrix[c, c], fp = column c minus tp, fn = row c minus tp; the ratios follow the module's
    rule (0 / 0 = 1, for a class that is neither present nor predicted). Returns name -> list of K floats,
    index c for class c (index 0 is the background).
    """
    return {name: value.tolist() for name, value in scores_from_counts(*counts_from_confusion(matrix)).items()}


def counts_from_confusion(matrix: Tensor | np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
    """(tp, fp, fn) of every class from a (K, K) :func:`confusion_matrix`, each a (K,) tensor: for class c,
    tp = matrix[c, c], fp = column c minus tp, fn = row c minus tp."""
    matrix = torch.as_tensor(matrix)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square (K, K) confusion matrix; got shape {tuple(matrix.shape)}")
    tp = matrix.diagonal()
    return tp, matrix.sum(0) - tp, matrix.sum(1) - tp


def _class_counts(pred: Tensor, labels: Tensor, n_classes: int, caller: str) -> tuple[Tensor, Tensor]:
    """(found pixels, total pixels) per class id, each (n_classes,) int64, from bool pred and int labels."""
    _check_same_shape(pred, labels, "pred and labels", caller)
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"{caller} expects labels in 0..{n_classes - 1} (one per class name); "
            f"got values {labels.min().item()}..{labels.max().item()}"
        )
    labels = labels.long().flatten()
    total = torch.bincount(labels, minlength=n_classes)
    found = torch.bincount(labels[pred.flatten()], minlength=n_classes)
    return found.cpu(), total.cpu()


def class_recall(
    pred: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    class_names: tuple[str, ...] = CLASS_NAMES,
) -> dict[str, float]:
    """Recall per defect class, pooled over all pixels of that class in the batch.

    Args:
        pred: (B, H, W) or (B, 1, H, W) bool predicted defect pixels.
        labels: (B, H, W) integer class ids, 0 = background, k = ``class_names[k]``.
        class_names: the name of each class id; id 0 (background) is skipped.

    Returns:
        ``{name: share of that class's pixels predicted as defect}`` for every class but the background;
        NaN for a class with no pixel in ``labels``.
    """
    pred = _as_masks(pred, "pred", "class_recall")
    labels = _as_masks(labels, "labels", "class_recall", dtype_kind="int")
    found, total = _class_counts(pred, labels, len(class_names), "class_recall")
    return _recall_by_class(found, total, class_names)


def _recall_by_class(found: Tensor, total: Tensor, class_names: tuple[str, ...]) -> dict[str, float]:
    """{name: found / total} for every class id but 0 (background), NaN where total is 0."""
    return {
        name: found[k].item() / total[k].item() if total[k] else math.nan for k, name in enumerate(class_names) if k
    }


def _check_min_fraction(min_fraction: float, caller: str) -> None:
    if not 0 < min_fraction <= 1:
        raise ValueError(f"{caller} expects min_fraction in (0, 1]; got {min_fraction!r}")


def _count_instances(pred: np.ndarray, truth: np.ndarray, min_fraction: float) -> InstanceCount:
    """Instances of one (H, W) image; ``truth`` is a bool mask or integer class ids (components per class)."""
    found = total = 0
    for class_id in np.unique(truth[truth > 0]):
        n, components = cv2.connectedComponents((truth == class_id).astype(np.uint8), connectivity=8)
        size = np.bincount(components.ravel(), minlength=n)[1:]
        hits = np.bincount(components.ravel(), weights=pred.ravel(), minlength=n)[1:]
        found += int((hits >= min_fraction * size).sum())
        total += n - 1
    return InstanceCount(found, total)


def instance_recall(
    pred: Tensor | np.ndarray, truth: Tensor | np.ndarray, min_fraction: float = 0.5
) -> InstanceCount:
    """How many ground-truth defects were found: a defect counts as found when at least ``min_fraction`` of its
    pixels are predicted.

    A defect is an 8-connected component of the truth (``cv2.connectedComponents``). Given integer class ids,
    components are taken per class, so a scratch touching a stain counts as two defects; given a bool mask, as
    one.

    Args:
        pred: (B, H, W) or (B, 1, H, W) bool predicted defect pixels.
        truth: same shape, bool defect mask or integer class ids (0 = background).
        min_fraction: share in (0, 1] of a defect's pixels that must be predicted.

    Returns:
        ``InstanceCount(found, total)``; ``.recall`` is found / total (NaN when total is 0).
    """
    _check_min_fraction(min_fraction, "instance_recall")
    pred = _as_masks(pred, "pred", "instance_recall")
    truth = _as_tensor(truth, "truth", "instance_recall")
    truth = _as_masks(truth, "truth", "instance_recall", dtype_kind="bool" if truth.dtype == torch.bool else "int")
    _check_same_shape(pred, truth, "pred and truth", "instance_recall")
    return _instances_of_batch(pred, truth, min_fraction)


def _instances_of_batch(pred: Tensor, truth: Tensor, min_fraction: float) -> InstanceCount:
    pred_np, truth_np = pred.cpu().numpy(), truth.cpu().numpy()
    counts = [_count_instances(p, t, min_fraction) for p, t in zip(pred_np, truth_np)]
    return InstanceCount(sum(c.found for c in counts), sum(c.total for c in counts))


class MetricAccumulator:
    """Collects counts batch by batch and computes every score of an evaluation once at the end.

    Usage::

        acc = MetricAccumulator(threshold=0.5)
        for images, masks, labels in loader:
            acc.update(model.predict_proba(images), masks, labels)
        report = acc.compute()

    Args:
        threshold: a pixel is predicted as defect when its probability is > threshold.
        class_names: names of the class ids in ``labels`` (id 0 is the background).
        min_fraction: share of a defect's pixels that must be predicted for it to count as found.
    """

    def __init__(
        self, threshold: float = 0.5, class_names: tuple[str, ...] = CLASS_NAMES, min_fraction: float = 0.5
    ) -> None:
        if not 0 <= threshold < 1:
            raise ValueError(f"MetricAccumulator expects threshold in [0, 1); got {threshold!r}")
        _check_min_fraction(min_fraction, "MetricAccumulator")
        self.threshold = threshold
        self.class_names = tuple(class_names)
        self.min_fraction = min_fraction
        self._counts: list[Counts] = []
        self._class_found = torch.zeros(len(self.class_names), dtype=torch.int64)
        self._class_total = torch.zeros(len(self.class_names), dtype=torch.int64)
        self._instances = InstanceCount(0, 0)
        self._with_labels: bool | None = None

    def update(
        self,
        probs_or_pred: Tensor | np.ndarray,
        masks: Tensor | np.ndarray,
        labels: Tensor | np.ndarray | None = None,
    ) -> None:
        """Add one batch.

        Args:
            probs_or_pred: (B, 1, H, W) or (B, H, W) float probabilities in [0, 1] (thresholded here) or bool
                predictions.
            masks: same shape, float in {0, 1} or bool, the true defect pixels.
            labels: optional (B, H, W) integer class ids, for per-class recall and per-class instances. Give
                them with every batch or with none.
        """
        caller = "MetricAccumulator.update"
        if self._with_labels is not None and (labels is not None) != self._with_labels:
            raise ValueError(f"{caller} expects labels with every batch or with none")
        pred = _as_masks(self._to_pred(_as_tensor(probs_or_pred, "probs_or_pred", caller)), "probs_or_pred", caller)
        masks = _as_tensor(masks, "masks", caller)
        truth = _as_masks(masks if masks.dtype == torch.bool else masks > 0.5, "masks", caller)
        _check_same_shape(pred, truth, "probs_or_pred and masks", caller)
        instance_truth = truth
        if labels is not None:
            instance_truth = _as_masks(labels, "labels", caller, dtype_kind="int")
            found, total = _class_counts(pred, instance_truth, len(self.class_names), caller)
            self._class_found += found
            self._class_total += total
        instances = _instances_of_batch(pred, instance_truth, self.min_fraction)
        self._instances = InstanceCount(
            self._instances.found + instances.found, self._instances.total + instances.total
        )
        self._counts.append(Counts(*(c.cpu() for c in confusion_counts(pred, truth))))
        self._with_labels = labels is not None

    def _to_pred(self, x: Tensor) -> Tensor:
        if x.dtype == torch.bool:
            return x
        if not x.is_floating_point():
            raise ValueError(f"MetricAccumulator.update expects float probabilities or bool predictions; got {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                "MetricAccumulator.update expects probabilities in [0, 1] (apply torch.sigmoid to logits); "
                f"got values {x.min().item():.3g}..{x.max().item():.3g}"
            )
        return x > self.threshold

    def compute(self) -> dict:
        """All scores of the images seen so far.

        Returns a dict with:
            ``dice``, ``iou``, ``precision``, ``recall``: pooled over all pixels of all images;
            ``mean_dice``: mean of the per-image Dice;
            ``fp_rate_defect_free``: share of the images with an empty truth on which any pixel is predicted
            (NaN without such images);
            ``class_recall``: ``{class name: pooled recall}`` for the classes that have pixels in the labels
            seen (empty without labels: an absent class has no recall to report);
            ``instance_recall``, ``instances_found``, ``instances_total``: see :func:`instance_recall`;
            ``n_images``, ``n_defect_free``;
            ``per_image``: ``{"dice", "iou", "precision", "recall", "truth_pixels", "pred_pixels"}`` -> lists.
        """
        if not self._counts:
            raise ValueError("MetricAccumulator.compute needs at least one update() first")
        tp, fp, fn, _ = (torch.cat(column) for column in zip(*self._counts))
        per_image = scores_from_counts(tp, fp, fn)
        defect_free = (tp + fn) == 0
        n_defect_free = int(defect_free.sum())
        fp_images = int(((tp + fp) > 0)[defect_free].sum())
        class_recall_ = (
            {name: recall for (name, recall), total in
             zip(_recall_by_class(self._class_found, self._class_total, self.class_names).items(),
                 self._class_total[1:]) if total}
            if self._with_labels else {}
        )
        return {
            **pooled_from_counts(tp, fp, fn),
            "mean_dice": per_image["dice"].mean().item(),
            "fp_rate_defect_free": fp_images / n_defect_free if n_defect_free else math.nan,
            "class_recall": class_recall_,
            "instance_recall": self._instances.recall,
            "instances_found": self._instances.found,
            "instances_total": self._instances.total,
            "n_images": len(tp),
            "n_defect_free": n_defect_free,
            "per_image": {
                **{name: value.tolist() for name, value in per_image.items()},
                "truth_pixels": (tp + fn).tolist(),
                "pred_pixels": (tp + fp).tolist(),
            },
        }
