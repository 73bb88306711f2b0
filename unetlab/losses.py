"""Losses on logits: soft Dice, and BCE + Dice.

Both take raw logits (the UNet's output, before any sigmoid) and compute in float32 even under mixed
precision, so the sums over 65 536 pixels per image do not lose precision in float16/bfloat16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
        for name, value in (("bce_weight", bce_weight), ("dice_weight", dice_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"BCEDiceLoss {name} must be a finite number >= 0; got {value!r}")
        if bce_weight == 0 and dice_weight == 0:
            raise ValueError("BCEDiceLoss needs bce_weight > 0 or dice_weight > 0; got both 0")
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_logits_and_target(logits, target, "BCEDiceLoss")
        logits = logits.float()
        target = target.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return self.bce_weight * bce + self.dice_weight * dice_loss(logits, target)

    def extra_repr(self) -> str:
        return f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}"
