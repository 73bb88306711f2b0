"""The batch contract: what one loader batch must look like for :func:`unetlab.fit` and :func:`unetlab.evaluate`.

A batch is ``(images, masks)`` or ``(images, masks, labels)``, as the datasets of :mod:`unetlab.data` yield
them: images (B, C, H, W) float in [0, 1], masks (B, 1, H, W) in {0, 1}, labels (B, H, W) integer class ids.
:func:`split_batch` checks the form, :func:`check_values` the values (what :func:`unetlab.fit` trains on).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .checks import check_unit_values


def split_batch(batch: Any, in_channels: int | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check one loader batch and return ``(images, masks, labels or None)``.

    Accepts ``(images, masks)`` or ``(images, masks, labels)`` with images (B, C, H, W) float, masks (B, 1, H, W)
    and labels (B, H, W) integer class ids. ``in_channels``, when given, is the C the model expects.
    Types, shapes and the float dtype are checked on every batch; pixel values are not scanned (that would cost
    a pass over every batch).
    Raises one ValueError saying what was expected and what came.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        kind = type(batch).__name__ + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise ValueError(f"expected batches (images, masks) or (images, masks, labels); got a {kind}")
    images, masks, labels = (*batch, None)[:3]
    if not isinstance(images, Tensor) or not isinstance(masks, Tensor):
        raise ValueError(
            f"expected torch tensors for images and masks; got {type(images).__name__} and {type(masks).__name__}"
        )
    channels = "C" if in_channels is None else in_channels
    if images.dim() != 4 or (in_channels is not None and images.shape[1] != in_channels):
        hint = ""
        if images.dim() == 4 and images.shape[1] in (3, 4):
            hint = f"; got {images.shape[1]} channels: convert colour images to grayscale first"
        raise ValueError(f"expected images of shape (B, {channels}, H, W); got {tuple(images.shape)}{hint}")
    b, _, h, w = images.shape
    if tuple(masks.shape) != (b, 1, h, w):
        raise ValueError(f"expected masks of shape {(b, 1, h, w)} to match images {tuple(images.shape)}; "
                         f"got {tuple(masks.shape)}")
    if labels is not None and (not isinstance(labels, Tensor) or tuple(labels.shape) != (b, h, w)):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"expected labels of shape {(b, h, w)} to match images {tuple(images.shape)}; got {got}")
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1]; got {images.dtype}")
    return images, masks, labels


def check_values(images: Tensor, masks: Tensor, labels: Tensor | None = None, n_classes: int = 1) -> None:
    """ValueError unless the images are finite and in [0, 1], the masks hold only 0 and 1, and (when
    ``n_classes > 1``) the labels are class ids in [0, n_classes).

    One pass over each tensor and a single device synchronisation when all is well, cheap beside a training
    step; the message (worked out only on failure) says what was expected and what came: 0/255 masks, NaN
    pixels, 8-bit images, out-of-range class ids.
    """
    multiclass = n_classes > 1
    ok = ((images >= 0) & (images <= 1)).all() & ((masks == 0) | (masks == 1)).all()  # NaN fails both compares
    if multiclass and not labels.is_floating_point():
        ok = ok & (labels >= 0).all() & (labels < n_classes).all()
    if bool(ok) and not (multiclass and labels.is_floating_point()):
        return
    if multiclass and (labels.is_floating_point() or labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be integer class ids in [0, {n_classes}); got {labels.dtype} values "
                         f"{labels.min().item()}..{labels.max().item()}")
    check_unit_values(images, "images: expected", uint8=False)
    lo, hi = masks.min().item(), masks.max().item()
    hint = " (0/255 masks: divide by 255, or binarise them with unetlab.binarize_mask)" if hi > 1 else ""
    raise ValueError(f"masks: expected 0 (background) and 1 (defect) only; got values {lo:g}..{hi:g}{hint}")
