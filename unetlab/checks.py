"""Argument checks shared by the whole library, written once (numpy only, no torch: ``synth`` and ``augment`` use it).

Numbers: :func:`is_int` and :func:`is_real` accept Python and numpy scalars alike and never a bool (``True`` is an
``int`` to Python, but ``n=True`` is a mistake, not one sample). Functions that store a value convert it to a
plain ``int`` or ``float`` first, so checkpoints and JSON files only ever hold plain Python values.

Images: :func:`gray_image` is the one check of an "(H, W) grayscale image in [0, 1]", :func:`check_unit_values`
its dtype and value part, which :func:`unetlab.predict` also applies to its (N, C, H, W) tensors. Whether 8-bit
gray levels are accepted is the caller's choice, and the rule is: functions that take pictures as a camera or
``cv2.imread`` delivers them (``predict``, ``predict_labels``, the classical baseline) accept ``uint8`` and
divide it by 255; functions inside the training pipeline (``augment``, ``RandomCrops``) take float images in
[0, 1] only, because the library's readers (``read_image``, ``DefectFolder``, ``RealSet``) already deliver those
and an 8-bit image there means a conversion was skipped. Errors are ``ValueError`` and say what was expected and
what came.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def is_int(value: Any) -> bool:
    """True for a whole number: a Python or numpy integer, but not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """True for a real number: a Python or numpy int or float, but not a bool (NaN and inf are numbers too)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def is_fraction(value: Any) -> bool:
    """True for a real number in [0, 1] (a probability or a share; NaN is not one)."""
    return is_real(value) and 0 <= value <= 1


def check_unit_values(x: Any, what: str, *, uint8: bool) -> None:
    """ValueError unless ``x`` holds gray values: float, finite and in [0, 1], or (``uint8=True``) 8-bit levels.

    ``x`` is a numpy array or a torch tensor of any shape (it is read through ``dtype``, ``min()`` and ``max()``
    only, so this module needs no torch); the message starts with ``what``, e.g. ``"predict expects"``.
    """
    dtype = str(x.dtype).removeprefix("torch.")
    if dtype == "uint8" and uint8:
        return
    if dtype not in _FLOAT_DTYPES:
        expected = "float images in [0, 1]" + (" or uint8 gray levels" if uint8 else "")
        hint = (" (8-bit gray levels: divide by 255, e.g. image.astype(np.float32) / 255)"
                if dtype == "uint8" else "")
        raise ValueError(f"{what} {expected}; got dtype {x.dtype}{hint}")
    if math.prod(x.shape) == 0:
        raise ValueError(f"{what} a non-empty image; got shape {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())  # NaN anywhere makes both NaN; inf shows in one of them
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{what} values in [0, 1]; got NaN or infinite pixel values")
    if lo < 0 or hi > 1:
        hint = " (they look like 0..255 gray levels: divide by 255)" if lo >= 0 and hi <= 255 else ""
        raise ValueError(f"{what} values in [0, 1]; got values {lo:.3g}..{hi:.3g}{hint}")


def gray_image(image: Any, what: str, *, uint8: bool = False) -> np.ndarray:
    """The one "(H, W) grayscale image in [0, 1]" check: returns the image as (H, W) float32 in [0, 1].

    ``image`` is anything ``np.asarray`` takes. Refused with one ``ValueError`` naming ``what`` (e.g.
    ``"augment: image"``): any shape but (H, W) (a colour image gets a hint to convert it), an empty image, NaN
    or inf, values outside [0, 1], integer dtypes, and ``uint8`` unless ``uint8=True`` (then it is divided by 255;
    see the module docstring for who accepts it).
    """
    array = np.asarray(image)
    if array.ndim != 2:
        hint = (" (a colour image? convert it to grayscale first, e.g. cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))"
                if array.ndim == 3 else "")
        raise ValueError(f"{what}: expected a grayscale (H, W) image{hint}; got shape {array.shape}")
    check_unit_values(array, f"{what}: expected", uint8=uint8)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    return array.astype(np.float32, copy=False)
