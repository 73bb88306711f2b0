"""How defect probabilities become a mask, and how that decision is chosen on labelled images.

A pixel is a defect when its probability is above ``threshold``. Optionally, a **seed threshold** (hysteresis, as
in Canny's edge detector) keeps only the connected regions of those pixels (8-connected) that hold at least one
pixel above ``seed_threshold``: a real defect has a confident core, while the faint, diffuse responses of a model to
shading and texture rarely do. On real magnetic tiles it removed most of the false alarms on defect-free tiles and
raised class Dice (README, "Sim to real"); the images that choose the threshold also choose whether to use it,
and the false alarms on the pictures of good parts among them can count against a decision too.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .checks import is_real
from .metrics import class_dice

THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2).tolist())
SEED_THRESHOLDS: tuple[float, ...] = (0.9, 0.95, 0.98)  # the candidates besides "no seed threshold"


def check_decision(threshold, seed_threshold, where: str) -> None:
    """Raise ValueError unless ``threshold`` is in [0, 1) and ``seed_threshold`` is None or in (threshold, 1)."""
    if not (is_real(threshold) and 0 <= threshold < 1):
        raise ValueError(f"{where}: threshold must be a number in [0, 1); got {threshold!r}")
    if seed_threshold is not None and not (is_real(seed_threshold) and threshold < seed_threshold < 1):
        raise ValueError(f"{where}: seed_threshold must be None or a number in (threshold, 1) = ({threshold:g}, 1); "
                         f"got {seed_threshold!r}")


def within_pixel_budget(sizes: Sequence[int], budget: int) -> list[int]:
    """The positions of the first whole images, in the order given, whose ``sizes`` (pixels each) add up to at
    most ``budget``; the first image always counts, whatever its size. Used to bound how many pictures of good
    parts choose a decision (:func:`unetlab.pretrain`, :func:`unetlab.finetune`): as many real defect-free pixels as
    the images with defects have, so that neither side outweighs the other and a folder of hundreds of large good
    parts costs no more than a few."""
    chosen = []
    for i, size in enumerate(sizes):
        if chosen and size > budget:
            break
        budget -= size
        chosen.append(i)
    return chosen


def defect_mask(prob: np.ndarray, threshold: float, seed_threshold: float | None = None) -> np.ndarray:
    """The (H, W) bool defect mask of an (H, W) probability map (see the module docstring).

    Args:
        prob: defect probabilities in [0, 1], float, shape (H, W).
        threshold: a pixel is a candidate when its probability is above it, in [0, 1).
        seed_threshold: None keeps every candidate; a number in (threshold, 1) keeps the 8-connected regions of
            candidates that hold a pixel above it.
    """
    check_decision(threshold, seed_threshold, "defect_mask")
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"defect_mask expects an (H, W) probability map; got shape {prob.shape}")
    mask = prob > threshold
    if seed_threshold is None or not mask.any():
        return mask
    _, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)  # (H, W) int32, 0 = background
    seeded = np.zeros(regions.max() + 1, bool)
    seeded[regions[prob > seed_threshold]] = True
    seeded[0] = False
    return seeded[regions]


def best_decision(probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], classes: Sequence[str],
                  thresholds: Sequence[float] = THRESHOLDS, seed_thresholds: Sequence[float] = SEED_THRESHOLDS, *,
                  count_good_parts: bool = False) -> tuple[float, float | None, float]:
    """The decision with the highest class Dice of ``probs`` against ``masks``, and that class Dice.

    Args:
        probs: one (H, W) float probability map per image.
        masks: the images' (H, W) bool truth masks, in the same order.
        classes: the images' classes (class Dice is :func:`unetlab.metrics.class_dice` over them; one class for
            all images makes it the pooled Dice).
        thresholds: candidate thresholds in [0, 1).
        seed_thresholds: candidate seed thresholds besides None; each is tried with every threshold below it.
            Empty: the threshold alone is chosen.
        count_good_parts: False: the images of a class without any truth pixel (a defect-free class, e.g.
            "Free") take no part, as in :func:`unetlab.metrics.class_dice`. True: their false positives count
            against the decision: each of their false-positive pixels adds 1/C of a false positive to each of the C
            classes with truth pixels, so a decision that lights up good parts loses.

    Returns:
        ``(threshold, seed_threshold, class_dice)``; on ties no seed threshold, then the lowest ones. Class Dice
        (with the good parts' false positives when counted) is NaN when no image has a defect pixel (then the
        first threshold and no seed threshold are returned).
    """
    if not len(probs) == len(masks) == len(classes):
        raise ValueError(f"best_decision got {len(probs)} probability maps, {len(masks)} masks and {len(classes)} "
                         f"classes; expected one of each per image")
    names = sorted(set(classes))
    cls = np.array([names.index(c) for c in classes], dtype=np.int64)
    t = np.asarray(thresholds, np.float32)[:, None]
    plain = np.zeros((3, len(t), len(names)), np.int64)  # tp, fp, fn per threshold and class: all at once
    for prob, mask, k in zip(probs, masks, cls):
        p, m = np.asarray(prob, np.float32).ravel(), np.asarray(mask, bool).ravel()
        hit = p[None, :] > t  # (thresholds, pixels)
        tp = (hit & m).sum(1)
        plain[:, :, k] += np.stack([tp, hit.sum(1) - tp, m.sum() - tp])
    candidates = [(float(thr), None, plain[:, j]) for j, thr in enumerate(thresholds)]
    for seed in seed_thresholds:
        for thr in thresholds:
            if thr < seed:
                counts = np.zeros((3, len(names)), np.int64)
                for prob, mask, k in zip(probs, masks, cls):
                    pred, m = defect_mask(np.asarray(prob, np.float32), thr, seed), np.asarray(mask, bool)
                    tp = int((pred & m).sum())
                    counts[:, k] += (tp, int(pred.sum()) - tp, int(m.sum()) - tp)
                candidates.append((float(thr), float(seed), counts))
    truth = plain[0, 0] + plain[2, 0] > 0  # (C,) the classes with truth pixels (tp + fn: the same for any decision)
    if count_good_parts and truth.any():  # the defect-free classes' fp shared equally among the others
        candidates = [(thr, seed, counts + np.outer([0, 1, 0], truth) * counts[1, ~truth].sum() / truth.sum())
                      for thr, seed, counts in candidates]  # (3, C) float64 counts
    scores = [class_dice(*(torch.from_numpy(c) for c in counts)) for _, _, counts in candidates]
    if all(np.isnan(scores)):
        return float(thresholds[0]), None, float("nan")
    j = int(np.nanargmax(scores))
    return candidates[j][0], candidates[j][1], float(scores[j])
