"""Losses on logits: soft Dice and BCE + Dice for one defect channel; cross-entropy + Dice for several classes.

All take raw logits (the UNet's output, before any sigmoid) and compute in float32 even under mixed
precision, so the sums over 65 536 pixels per image do not lose precision in float16/bfloat16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import is_real


def _check_logits_and_target(logits: Tensor, target: Tensor, caller: str) -> None:
    """Raise one clear error unless ``logits`` and ``target`` are tensors of the same (B, ...) shape."""
    for name, value in (("logits", logits), ("target", target)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{caller} expects {name} as a torch.Tensor; got {type(value).__name__}")
    if logits.shape != target.shape or logits.dim() < 2:
        raise ValueError(
            f"{caller} expects logits and target of the same shape (B, 1, H, W); "
            f"got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
        )


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss per image, averaged over the batch.

    For each image b, with p = sigmoid(logits) and g = target, summing over its channels and pixels::

        loss_b = 1 - (2 * sum(p * g) + eps) / (sum(p) + sum(g) + eps)

    and the result is mean_b(loss_b), a scalar.

    Args:
        logits: (B, 1, H, W) float logits (any (B, ...) shape works, the sums run over all but dim 0).
        target: same shape, ground truth in {0, 1} (float or bool).
        eps: smoothing > 0, in pixels; it keeps the ratio defined when both masks are empty.

    Empty masks: on an image without defects (g = 0) the loss is ``sum(p) / (sum(p) + eps)``: 0 when nothing is
    predicted and close to 1 as soon as a few pixels are, so false positives on defect-free images cost. This is
    why the Dice is per image and not pooled over the batch (a batch-level Dice lets the defective images of
    the batch drown the false positives of the clean ones).
    """
    _check_logits_and_target(logits, target, "dice_loss")
    if not eps > 0:
        raise ValueError(f"dice_loss expects eps > 0 (it keeps empty masks defined); got {eps!r}")
    p = torch.sigmoid(logits.float())
    g = target.to(p.dtype)
    dims = tuple(range(1, p.dim()))
    intersection = (p * g).sum(dims)
    total = p.sum(dims) + g.sum(dims)
    return (1 - (2 * intersection + eps) / (total + eps)).mean()


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCEWithLogits(logits, target) + dice_weight * dice_loss(logits, target)``.

    The BCE term is the mean over all pixels; it gives every pixel a well-scaled gradient from the first step.
    The Dice term (see :func:`dice_loss`) counts the defect as a whole, so the few defect pixels are not
    outvoted by the background. Call it as ``loss_fn(logits, target)`` with (B, 1, H, W) float logits and a
    target of the same shape in {0, 1}; it returns a scalar.

    Args:
        bce_weight: weight >= 0 of the BCE term.
        dice_weight: weight >= 0 of the Dice term; the two may not both be 0.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.bce_weight, self.dice_weight = _checked_weights("BCEDiceLoss", bce_weight=bce_weight,
                                                             dice_weight=dice_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_logits_and_target(logits, target, "BCEDiceLoss")
        logits = logits.float()
        target = target.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return self.bce_weight * bce + self.dice_weight * dice_loss(logits, target)

    def extra_repr(self) -> str:
        return f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}"


def multiclass_dice_loss(logits: Tensor, labels: Tensor, eps: float = 1.0, include_background: bool = False) -> Tensor:
    """Soft Dice loss over classes, per image, averaged over the classes and the batch.

    With p = softmax(logits) over the C channels and g the one-hot encoding of ``labels``, for image b and
    class c (sums over the pixels)::

        loss_bc = 1 - (2 * sum(p_c * g_c) + eps) / (sum(p_c) + sum(g_c) + eps)

    and the result is the mean of loss_bc over b and over the classes c >= 1 (the defect classes; class 0,
    the background, covers most pixels and would dilute the loss, unless ``include_background``).

    Args:
        logits: (B, C, H, W) float logits, C >= 2.
        labels: (B, H, W) integer class ids in [0, C).
        eps: smoothing > 0, in pixels. A class absent from an image costs ``sum(p_c) / (sum(p_c) + eps)``:
            nothing when it is not predicted there either, close to 1 when it is (as in :func:`dice_loss`).
        include_background: also average over class 0.
    """
    _check_logits_and_labels(logits, labels, "multiclass_dice_loss")
    if not eps > 0:
        raise ValueError(f"multiclass_dice_loss expects eps > 0 (it keeps absent classes defined); got {eps!r}")
    p = torch.softmax(logits.float(), dim=1)
    g = F.one_hot(labels.long(), logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    intersection = (p * g).sum((2, 3))
    total = p.sum((2, 3)) + g.sum((2, 3))
    loss = 1 - (2 * intersection + eps) / (total + eps)  # (B, C)
    return (loss if include_background else loss[:, 1:]).mean()


class CEDiceLoss(nn.Module):
    """``ce_weight * CrossEntropy(logits, labels) + dice_weight * multiclass_dice_loss(logits, labels)``.

    The multi-class twin of :class:`BCEDiceLoss`: softmax cross-entropy gives every pixel a gradient, the Dice
    term makes each (rare) defect class count as a whole. Call it as ``loss_fn(logits, labels)`` with
    (B, C, H, W) float logits and (B, H, W) integer labels in [0, C); it returns a scalar.
    """

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.ce_weight, self.dice_weight = _checked_weights("CEDiceLoss", ce_weight=ce_weight, dice_weight=dice_weight)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        _check_logits_and_labels(logits, labels, "CEDiceLoss")
        logits = logits.float()
        ce = F.cross_entropy(logits, labels.long())
        return self.ce_weight * ce + self.dice_weight * multiclass_dice_loss(logits, labels)

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}, dice_weight={self.dice_weight}"


def _checked_weights(caller: str, **weights: float) -> tuple[float, ...]:
    """The weights of a combined loss as floats: each finite and >= 0, not all 0 (else one clear ValueError)."""
    for name, value in weights.items():
        if not is_real(value) or not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{caller} {name} must be a finite number >= 0; got {value!r}")
    if not any(weights.values()):
        names = " or ".join(f"{name} > 0" for name in weights)
        raise ValueError(f"{caller} needs {names}; got both 0")
    return tuple(float(value) for value in weights.values())


def _check_logits_and_labels(logits: Tensor, labels: Tensor, caller: str) -> None:
    """Raise one clear error unless logits are (B, C, H, W) with C >= 2 and labels (B, H, W) ids in [0, C)."""
    for name, value in (("logits", logits), ("labels", labels)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{caller} expects {name} as a torch.Tensor; got {type(value).__name__}")
    if logits.dim() != 4 or logits.shape[1] < 2:
        raise ValueError(f"{caller} expects logits of shape (B, C, H, W) with C >= 2 classes; "
                         f"got {tuple(logits.shape)}")
    b, c, h, w = logits.shape
    if tuple(labels.shape) != (b, h, w):
        raise ValueError(f"{caller} expects labels of shape {(b, h, w)} (class ids, no channel axis) to match "
                         f"logits {tuple(logits.shape)}; got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{caller} expects integer class ids as labels; got {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"{caller} expects labels in [0, {c}) for {c} classes; "
                         f"got values {labels.min().item()}..{labels.max().item()}")
