"""Joint image/mask augmentation for defect segmentation (numpy + OpenCV, no torch).

Why each step helps a model trained on synthetic surfaces work on real ones (sim-to-real transfer):

- **flips and 90-degree turns**: a scratch has no preferred direction, but a generator or a camera set-up often
  has one (brushed texture running one way, light from one side). These are lossless and cost nothing.
- **small rotations and perspective**: real parts sit slightly askew and cameras are rarely square to the
  surface, so the model must not rely on defects or texture being aligned with the pixel grid.
- **brightness, contrast and gamma**: exposure, lamp ageing, surface reflectance and the camera's response curve
  change from line to line; the model should read the local change a defect makes, not absolute gray levels.
- **blur and noise**: focus, motion and sensor noise differ between the generator and any real camera; a range of
  both stops the model from keying on one sharpness or one noise grain.

Rules:

- Geometry is applied identically to image and mask. The image is resampled bilinearly, the mask with nearest
  neighbour only, so a mask keeps exactly its values (bool, or integer class labels: never an in-between label).
- Pixels pulled in from outside the frame are filled by reflection (``cv2.BORDER_REFLECT_101``) in both, so a
  defect reflected into view in the image is reflected in the mask too and stays labelled.
- Photometric steps change the image only; the returned image is float32 clipped to [0, 1].
- Every random number comes from the ``rng`` argument: the same generator state gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .checks import gray_image, is_real
from .synth import noise_window  # N(0, 1) noise from a fixed bank at a random offset: 10x cheaper than drawing

_BORDER = cv2.BORDER_REFLECT_101
_MIN_SIGMA = 0.3  # px; a Gaussian narrower than this barely changes an image, so it is skipped

# Allowed range of each numeric field (pairs: both ends). Bool fields are `flips` and `rot90`.
_LIMITS = {"rotate_deg": (0.0, 180.0), "perspective": (0.0, 0.25), "brightness": (0.0, 1.0),
           "contrast": (0.0, 1.0), "gamma": (0.0, 2.0), "blur_sigma": (0.0, 10.0), "noise_std": (0.0, 1.0),
           "p_geometric": (0.0, 1.0), "p_photometric": (0.0, 1.0)}


@dataclass(frozen=True)
class AugmentConfig:
    """What :func:`augment` may do, and how strongly. Set a strength to 0 to switch that step off.

    Geometry (image and mask alike):

    - ``flips``: horizontal flip, then vertical flip, each with probability 1/2.
    - ``rot90``: turn by k x 90 degrees, k uniform in {0, 1, 2, 3}; only on square inputs (skipped otherwise,
      so shapes never change).
    - ``rotate_deg`` (degrees, in [0, 180]): rotation about the centre, uniform in [-rotate_deg, rotate_deg].
    - ``perspective`` (fraction of the side, in [0, 0.25]): each corner moves by up to this much in x and y.
    - ``p_geometric``: probability of the rotation + perspective warp (one resampling does both). Flips and
      quarter turns are lossless and are drawn whenever enabled.

    Photometric (image only, intensities in [0, 1]), in this order:

    - ``contrast`` (in [0, 1]): the deviation from the image mean is multiplied by U[1 - c, 1 + c];
    - ``brightness`` (in [0, 1]): an additive shift U[-b, b];
    - ``gamma`` (in [0, 2]): image ** exp(U[-g, g]) (exp keeps darkening and brightening equally likely);
    - ``blur_sigma`` (px, (low, high) in [0, 10]): Gaussian blur, sigma uniform in the range (< 0.3 px: none);
    - ``noise_std`` ((low, high) in [0, 1]): additive Gaussian noise, std uniform in the range;
    - ``p_photometric``: each of these five steps happens independently with this probability.

    Invalid values raise ``ValueError`` naming the field, the allowed range and the value received.
    """

    flips: bool = True
    rot90: bool = True
    rotate_deg: float = 10.0
    perspective: float = 0.05
    p_geometric: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.2
    gamma: float = 0.3
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    noise_std: tuple[float, float] = (0.0, 0.03)
    p_photometric: float = 0.5

    def __post_init__(self) -> None:
        for name in ("flips", "rot90"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"AugmentConfig.{name} must be True or False; got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        for name, (lo, hi) in _LIMITS.items():
            value = getattr(self, name)
            is_pair = name in ("blur_sigma", "noise_std")
            if is_pair:
                expected = f"a (low, high) pair in [{lo}, {hi}] with low <= high"
                parts = tuple(value) if isinstance(value, (tuple, list)) and len(value) == 2 else None
            else:
                expected, parts = f"a number in [{lo}, {hi}]", (value,)
            if parts is None or not all(is_real(v) and lo <= v <= hi for v in parts) or parts[0] > parts[-1]:
                raise ValueError(f"AugmentConfig.{name} must be {expected}; got {value!r}")  # NaN fails lo <= v
            parts = tuple(float(v) for v in parts)
            object.__setattr__(self, name, parts if is_pair else parts[0])

    @classmethod
    def none(cls) -> "AugmentConfig":
        """Every step off: :func:`augment` then returns copies of its inputs."""
        return cls(flips=False, rot90=False, rotate_deg=0.0, perspective=0.0, brightness=0.0, contrast=0.0,
                   gamma=0.0, blur_sigma=(0.0, 0.0), noise_std=(0.0, 0.0))

    def replace(self, **changes) -> "AugmentConfig":
        """A copy with some fields changed (validated), e.g. ``cfg.replace(rotate_deg=0.0)``."""
        return dataclasses.replace(self, **changes)


DEFAULT_AUGMENT = AugmentConfig()


def augment(image: np.ndarray, mask: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """One random augmentation of an image and its mask.

    ``image``: (H, W) float32 (or float64) in [0, 1], grayscale. ``mask``: (H, W) bool or integer labels.
    Returns new arrays (the inputs are never modified): image (H, W) float32 in [0, 1], mask (H, W) with the
    mask's dtype and only values it already had. Same ``rng`` state and inputs give the same bytes.
    """
    if not isinstance(cfg, AugmentConfig):
        raise ValueError(f"augment expects an AugmentConfig; got {type(cfg).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"augment expects a numpy Generator (np.random.default_rng(seed)); got {type(rng).__name__}")
    _check_pair(image, mask)
    h, w = image.shape
    # 1. Lossless geometry: flips and quarter turns are views of the arrays, no resampling.
    if cfg.flips:
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
    if cfg.rot90 and h == w:
        k = int(rng.integers(4))
        image, mask = np.rot90(image, k), np.rot90(mask, k)
    # 2. Rotation and perspective as one homography, so each array is resampled once (not on 1-pixel strips).
    if (cfg.rotate_deg > 0 or cfg.perspective > 0) and min(h, w) > 1 and rng.random() < cfg.p_geometric:
        m = _warp_matrix(h, w, cfg.rotate_deg, cfg.perspective, rng)
        image = cv2.warpPerspective(np.ascontiguousarray(image, dtype=np.float32), m, (w, h),
                                    flags=cv2.INTER_LINEAR, borderMode=_BORDER)
        mask = _warp_mask(mask, m)
    # 3. Photometric steps, on a float32 copy of the image.
    image = _photometric(np.array(image, dtype=np.float32, order="C"), cfg, rng)
    return image, np.array(mask, order="C")


def _check_pair(image: np.ndarray, mask: np.ndarray) -> None:
    """ValueError unless image is a numpy (H, W) float image in [0, 1] (not uint8: see :mod:`unetlab.checks`) and
    mask is an (H, W) bool or integer array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"augment expects a numpy (H, W) float image in [0, 1]; got a {type(image).__name__}")
    gray_image(image, "augment: image")
    if not isinstance(mask, np.ndarray) or mask.shape != image.shape:
        got = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"augment expects a mask of the image's shape {image.shape}; got {got}")
    if not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)):
        raise ValueError(f"augment expects a bool or integer-label mask; got dtype {mask.dtype} "
                         "(binarise a float mask first, e.g. mask > 0.5)")
    if mask.dtype.itemsize > 4 or mask.dtype == np.uint32:  # these travel through OpenCV as int32
        info = np.iinfo(np.int32)
        if mask.min() < info.min or mask.max() > info.max:
            raise ValueError(f"augment expects mask labels that fit in int32; got range [{mask.min()}, {mask.max()}]")


def _warp_matrix(h: int, w: int, rotate_deg: float, perspective: float, rng: np.random.Generator) -> np.ndarray:
    """3x3 homography: rotation about the centre, then each corner moved by up to ``perspective`` of the side."""
    angle = rng.uniform(-rotate_deg, rotate_deg)
    rotation = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0), [0.0, 0.0, 1.0]])
    corners = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    moved = corners + rng.uniform(-perspective, perspective, size=(4, 2)) * [w - 1, h - 1]
    return cv2.getPerspectiveTransform(corners, moved.astype(np.float32)) @ rotation


def _warp_mask(mask: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Nearest-neighbour warp of a mask. OpenCV has no bool or 64-bit images: those travel as uint8 / int32."""
    h, w = mask.shape
    if mask.dtype == bool:
        src = mask.astype(np.uint8)
    elif mask.dtype.itemsize > 4 or mask.dtype == np.uint32:
        src = mask.astype(np.int32)
    else:
        src = np.ascontiguousarray(mask)
    out = cv2.warpPerspective(src, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=_BORDER)
    return out.astype(mask.dtype, copy=False)


def _photometric(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Contrast, brightness, gamma, blur, noise (each with probability ``p_photometric``), in place; clipped."""
    p = cfg.p_photometric
    if cfg.contrast > 0 and rng.random() < p:
        mean = float(img.mean())
        img -= mean
        img *= rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        img += mean
    if cfg.brightness > 0 and rng.random() < p:
        img += rng.uniform(-cfg.brightness, cfg.brightness)
    if cfg.gamma > 0 and rng.random() < p:
        np.clip(img, 0.0, 1.0, out=img)  # a power of a negative number is not defined
        img = cv2.pow(img, math.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
    if cfg.blur_sigma[1] > 0 and rng.random() < p:
        sigma = rng.uniform(*cfg.blur_sigma)
        if sigma >= _MIN_SIGMA:
            img = cv2.GaussianBlur(img, (0, 0), sigma, borderType=_BORDER)
    if cfg.noise_std[1] > 0 and rng.random() < p:
        img += noise_window(rng, *img.shape) * np.float32(rng.uniform(*cfg.noise_std))
    return np.clip(img, 0.0, 1.0, out=img)
