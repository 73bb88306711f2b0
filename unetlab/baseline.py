"""A classical baseline: flatten the lighting, threshold, clean up with morphology. No learning, a few knobs.

This is the floor a learned model must clear. It works in four steps on a grayscale image:

1. **Contrast map.** Smooth the image a little (``smooth_sigma``, against sensor noise) and subtract its
   background, a heavy Gaussian blur (``background_sigma``). What remains says, in gray levels, how much darker
   or brighter each pixel is than its surroundings, so uneven lighting and vignetting drop out. ``polarity``
   keeps the dark side (``-residual``), the bright side (``+residual``) or both (``|residual|``).
2. **Threshold** the contrast map:

   - ``"adaptive"``: a defect is a pixel more than ``offset`` gray levels off its local background. This is
     what ``cv2.adaptiveThreshold(..., ADAPTIVE_THRESH_GAUSSIAN_C, ...)`` does with ``C = offset``, with the
     neighbourhood given as a Gaussian sigma instead of a block size.
   - ``"otsu"``: each image picks its own cut with Otsu's method (the cut that best splits the contrast
     histogram into two classes), but never below ``offset``, so a defect-free image whose histogram is only
     noise is not split in half.

3. **Morphology.** An opening (``open_radius``) removes specks and lines thinner than the disc; a closing
   (``close_radius``) fills small gaps and joins fragments. Radius 0 skips the step.
4. **Small components** of fewer than ``min_area`` pixels are dropped.

:func:`tune_baseline` picks the knobs by grid search on labelled images (the fine-tune pool, never the test
set), maximising pooled Dice: TP, FP and FN summed over all images, then ``2 TP / (2 TP + FP + FN)``.

Units: images are (H, W) float32 in [0, 1]; contrasts and ``offset`` are in **gray levels** (0-255 scale);
sigmas, radii are in **pixels** and ``min_area`` in pixels (a count).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm.auto import tqdm

from .checks import gray_image, is_int, is_real
from .metrics import class_dice, pooled_from_counts

METHODS: tuple[str, ...] = ("otsu", "adaptive")
POLARITIES: tuple[str, ...] = ("dark", "bright", "both")

# The search space tune_baseline uses by default: 2 x 3 x 3 x 3 x 2 x 5 = 540 settings. Only the 108 distinct
# binary maps before the min_area step cost real work: about 10 s on 150 images of ~300 x 400 px on two cores.
DEFAULT_GRID: dict[str, list] = {
    "method": ["otsu", "adaptive"],
    "polarity": ["dark", "bright", "both"],
    "background_sigma": [8.0, 24.0, 64.0],
    "offset": [5.0, 10.0, 20.0],
    "close_radius": [0, 3],
    "min_area": [0, 25, 100, 400, 1600],
}


@dataclass(frozen=True)
class ClassicalBaseline:
    """Background flattening + threshold + morphology (see the module docstring for the four steps).

    Args:
        method: ``"otsu"`` (per-image cut, at least ``offset``) or ``"adaptive"`` (fixed cut ``offset``).
        polarity: defects are ``"dark"``er, ``"bright"``er, or either (``"both"``) than their background.
        background_sigma: px, sigma of the Gaussian blur that estimates the background; larger follows the
            lighting less closely but keeps big defects. 0: no flattening, the background is the image median.
        smooth_sigma: px, Gaussian denoising before anything else; 0: none.
        offset: gray levels (0-255 scale), the least contrast a defect pixel must have.
        open_radius: px, radius of the disc of the opening (removes thinner specks); 0: none.
        close_radius: px, radius of the disc of the closing (fills gaps); 0: none.
        min_area: px, connected components smaller than this are dropped; 0: keep all.

    Invalid values raise ``ValueError`` naming the field, what is allowed and what came.
    """

    method: str = "otsu"
    polarity: str = "dark"
    background_sigma: float = 16.0
    smooth_sigma: float = 1.0
    offset: float = 10.0
    open_radius: int = 0
    close_radius: int = 2
    min_area: int = 20

    def __post_init__(self) -> None:
        for name, choices in (("method", METHODS), ("polarity", POLARITIES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"ClassicalBaseline.{name} must be one of {choices}; got {getattr(self, name)!r}")
        for name in ("background_sigma", "smooth_sigma", "offset"):
            value = getattr(self, name)
            if not is_real(value) or not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ClassicalBaseline.{name} must be a finite number >= 0; got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("open_radius", "close_radius", "min_area"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise ValueError(f"ClassicalBaseline.{name} must be an int >= 0; got {value!r}")
            object.__setattr__(self, name, int(value))

    def replace(self, **changes) -> "ClassicalBaseline":
        """A copy with some knobs changed (validated), e.g. ``baseline.replace(offset=15.0)``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The knobs as a plain JSON-friendly dict; ``ClassicalBaseline(**d)`` rebuilds it."""
        return dataclasses.asdict(self)

    def contrast(self, image: np.ndarray) -> np.ndarray:
        """Step 1: (H, W) image in [0, 1] -> (H, W) float32 contrast in gray levels (positive = defect-like)."""
        residual = flatten(_as_image(image, "ClassicalBaseline.contrast"), self.background_sigma, self.smooth_sigma)
        return _polarised(residual, self.polarity)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) image, float in [0, 1] or uint8 ((1, H, W) is accepted too) -> (H, W) bool defect mask."""
        score = self.contrast(image)
        binary = score > _cut(score, self.method, self.offset)
        binary = _morphology(binary, self.open_radius, self.close_radius)
        return _drop_small(binary, self.min_area)


def flatten(image: np.ndarray, background_sigma: float, smooth_sigma: float = 0.0) -> np.ndarray:
    """Image minus its background, in gray levels: (H, W) float in [0, 1] -> (H, W) float32, signed.

    The image is first denoised with a Gaussian of ``smooth_sigma`` px (0: not at all); the background is its
    Gaussian blur with ``background_sigma`` px (0: the median gray of the image). Negative values are darker
    than the surroundings. Borders are mirrored; lighting that still slopes at an image edge is followed less
    well there (within about ``background_sigma`` of the edge).
    """
    gray = np.asarray(image, dtype=np.float32) * np.float32(255)
    if smooth_sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), smooth_sigma, borderType=cv2.BORDER_REFLECT)
    if background_sigma > 0:
        background = cv2.GaussianBlur(gray, (0, 0), background_sigma, borderType=cv2.BORDER_REFLECT)
    else:
        background = np.float32(np.median(gray))
    return gray - background


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's cut of an array of numbers: the value that maximises the between-class variance.

    Splitting the histogram at ``t`` gives two classes with weights ``w0, w1`` (shares of values) and means
    ``m0, m1``; Otsu picks the ``t`` that maximises ``w0 * w1 * (m0 - m1) ** 2``. Works on any float range
    (``bins`` equal bins between the minimum and the maximum). A constant array returns its value.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1]                     # values at or below each candidate cut
    w1 = values.size - w0
    s0 = np.cumsum(counts * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] + counts[-1] * centres[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))   # a gap between the modes ties: take its middle
    return float(edges[1:-1][best[len(best) // 2]])


def tune_baseline(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], grid: dict | None = None,
                  progress: bool = True, classes: Sequence[str] | None = None) -> tuple[ClassicalBaseline, list[dict]]:
    """Grid search of :class:`ClassicalBaseline` knobs that maximises pooled Dice over labelled images.

    With ``classes`` (one name per image) it maximises the *class Dice* instead: the pooled Dice of each class
    that has defect pixels, averaged over those classes, so that small defects (a pinhole) weigh as much as large
    ones (a stained area). This is :func:`unetlab.metrics.class_dice`, the score
    :func:`unetlab.sim2real.score_masks` reports as ``class_dice``; it needs defect pixels in at least one image.

    Args:
        images: N grayscale images, each (H, W) float in [0, 1] (or uint8); sizes may differ between images.
        masks: N matching (H, W) masks, bool (other dtypes: ``mask > 0.5``, so 0/1 and 0/255 both work).
        grid: field name -> list of values to try; the search is their product. Fields not named keep the
            :class:`ClassicalBaseline` default. ``None``: :data:`DEFAULT_GRID`.
        progress: show a tqdm bar over the grid points.
        classes: optional class name per image (see above).

    Returns:
        ``(best, rows)``: the best baseline, and one dict per grid point (its knobs plus pooled ``"dice"``,
        ``"precision"`` and ``"recall"``, and ``"class_dice"`` when ``classes`` is given), sorted by the score
        maximised, best first (ties keep grid order).

    Cost: the contrast maps are computed once per (background_sigma, smooth_sigma) for all images (memory:
    one float32 copy of the images at a time), the min_area step is nearly free (areas are read from one
    connected-components pass), so the price is set by the number of distinct settings of the other knobs,
    about 0.5 ms per image each for a ~300 x 400 image.
    """
    images, masks = _checked_pairs(images, masks)
    grid = _checked_grid(DEFAULT_GRID if grid is None else grid)
    if classes is not None and (isinstance(classes, str) or len(classes) != len(images)):
        raise ValueError(f"tune_baseline needs one class name per image; got {len(classes)} for {len(images)} images")
    group_names = sorted(set(classes)) if classes is not None else ["all"]
    groups = [group_names.index(c) for c in classes] if classes is not None else [0] * len(images)
    truth = np.zeros(len(group_names), dtype=np.int64)  # defect pixels of each group
    for g, m in zip(groups, masks):
        truth[g] += int(np.count_nonzero(m))
    if classes is not None and not truth.any():
        raise ValueError("tune_baseline: class Dice needs defect pixels in at least one image, and every mask is "
                         "empty (class Dice is NaN then); tune on pooled Dice by leaving out classes=")
    counts = _grid_counts(images, masks, groups, len(group_names), grid, progress)

    names = [f.name for f in dataclasses.fields(ClassicalBaseline)]
    rows = []
    for key in itertools.product(*(grid[n] for n in names if n != "min_area")):
        for j, min_area in enumerate(grid["min_area"]):
            row = dict(zip([n for n in names if n != "min_area"], key), min_area=min_area)
            tp, predicted = counts[key][:, j, 0], counts[key][:, j, 1]  # per group
            fp, fn = predicted - tp, truth - tp
            row.update({name: value for name, value in pooled_from_counts(tp, fp, fn).items()
                        if name in ("dice", "precision", "recall")})
            if classes is not None:
                row["class_dice"] = class_dice(tp, fp, fn)
            rows.append(row)
    score = "class_dice" if classes is not None else "dice"
    rows.sort(key=lambda r: -r[score])
    best = ClassicalBaseline(**{n: rows[0][n] for n in names})
    return best, rows


def _checked_pairs(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The images as (H, W) float32 in [0, 1] and the masks as (H, W) bool, checked to pair up."""
    images = [_as_image(im, f"tune_baseline: images[{i}]") for i, im in enumerate(images)]
    masks = [_as_mask(m, f"tune_baseline: masks[{i}]") for i, m in enumerate(masks)]
    if not images:
        raise ValueError("tune_baseline needs at least one image and mask; got none")
    if len(images) != len(masks):
        raise ValueError(f"tune_baseline needs one mask per image; got {len(images)} images, {len(masks)} masks")
    for i, (im, m) in enumerate(zip(images, masks)):
        if im.shape != m.shape:
            raise ValueError(f"tune_baseline: image {i} has shape {im.shape} but its mask {m.shape}")
    return images, masks


def _grid_counts(images: list[np.ndarray], masks: list[np.ndarray], groups: list[int], n_groups: int,
                 grid: dict[str, list], progress: bool) -> dict[tuple, np.ndarray]:
    """(every knob but min_area, in field order) -> (n_groups, len(grid["min_area"]), 2) int64 array of
    (true-positive, predicted) pixel counts, summed over the images of each group."""
    names = [f.name for f in dataclasses.fields(ClassicalBaseline) if f.name != "min_area"]
    areas = grid["min_area"]
    results: dict[tuple, np.ndarray] = {}
    with tqdm(total=math.prod(len(v) for v in grid.values()), desc="tuning baseline", disable=not progress,
              leave=False) as bar:
        # Loops from the costliest step to the cheapest, so each result is computed once and reused below it.
        for background_sigma, smooth_sigma in itertools.product(grid["background_sigma"], grid["smooth_sigma"]):
            residuals = [flatten(im, background_sigma, smooth_sigma) for im in images]
            for polarity in grid["polarity"]:
                scores = [_polarised(r, polarity) for r in residuals]
                otsu = [otsu_threshold(s) for s in scores] if "otsu" in grid["method"] else None
                for method, offset, open_radius, close_radius in itertools.product(
                        grid["method"], grid["offset"], grid["open_radius"], grid["close_radius"]):
                    totals = np.zeros((n_groups, len(areas), 2), dtype=np.int64)
                    for i, (score, truth) in enumerate(zip(scores, masks)):
                        cut = max(otsu[i], offset) if method == "otsu" else offset
                        binary = _morphology(score > cut, open_radius, close_radius)
                        totals[groups[i]] += _counts_by_min_area(binary, truth, areas)
                    knobs = dict(method=method, polarity=polarity, background_sigma=background_sigma,
                                 smooth_sigma=smooth_sigma, offset=offset, open_radius=open_radius,
                                 close_radius=close_radius)
                    results[tuple(knobs[n] for n in names)] = totals
                    bar.update(len(areas))
    return results


# ----------------------------------------------------------------------------------------------- helpers


def _polarised(residual: np.ndarray, polarity: str) -> np.ndarray:
    if polarity == "dark":
        return -residual
    return residual if polarity == "bright" else np.abs(residual)


def _cut(score: np.ndarray, method: str, offset: float) -> float:
    return max(otsu_threshold(score), offset) if method == "otsu" else offset


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _morphology(binary: np.ndarray, open_radius: int, close_radius: int) -> np.ndarray:
    """Opening then closing of a bool mask with discs; a radius 0 skips its step."""
    out = binary.view(np.uint8)
    if open_radius > 0:
        out = cv2.morphologyEx(out, cv2.MORPH_OPEN, _disc(open_radius))
    if close_radius > 0:
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, _disc(close_radius))
    return out.astype(bool)


def _components(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels (H, W), area of each label) of the 8-connected components; label 0 is the background."""
    h, w = binary.shape
    # 16-bit labels are about 3x faster in OpenCV; they cannot overflow when every component could get its own
    # label, i.e. under one component per 2 x 2 block (images up to about 256 000 pixels).
    ltype = cv2.CV_16U if ((h + 1) // 2) * ((w + 1) // 2) < 2 ** 16 else cv2.CV_32S
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8, ltype=ltype)
    return labels, stats[:, cv2.CC_STAT_AREA]


def _drop_small(binary: np.ndarray, min_area: int) -> np.ndarray:
    if min_area <= 1 or not binary.any():
        return binary
    labels, area = _components(binary)
    keep = area >= min_area
    keep[0] = False
    return keep[labels]


def _counts_by_min_area(binary: np.ndarray, truth: np.ndarray, areas: list[int]) -> np.ndarray:
    """(len(areas), 2) int64: true-positive and predicted pixel counts after dropping components < each area."""
    labels, area = _components(binary)
    hits = np.bincount(labels[truth], minlength=len(area))  # true-positive pixels per component
    area, hits = area[1:], hits[1:]
    return np.array([[hits[area >= a].sum(), area[area >= a].sum()] for a in areas], dtype=np.int64)


def _as_image(image, what: str) -> np.ndarray:
    """(H, W) or (1, H, W) image, float in [0, 1] or uint8 -> (H, W) float32 in [0, 1] (see unetlab.checks)."""
    array = np.asarray(image)
    return gray_image(array[0] if array.ndim == 3 and array.shape[0] == 1 else array, what, uint8=True)


def _as_mask(mask, what: str) -> np.ndarray:
    """(H, W) or (1, H, W) mask -> (H, W) bool (non-bool: ``mask > 0.5``)."""
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{what}: expected a (H, W) mask; got shape {array.shape}")
    if array.dtype != bool and array.dtype.kind not in "iuf":
        raise ValueError(f"{what}: expected a bool or numeric mask; got dtype {array.dtype}")
    return array if array.dtype == bool else array > 0.5


def _checked_grid(grid: dict) -> dict[str, list]:
    """Every field -> a non-empty list of values, each validated by building a ClassicalBaseline."""
    if not isinstance(grid, dict):
        raise ValueError(f"tune_baseline: grid must be a dict of field -> list of values; got {type(grid).__name__}")
    fields = {f.name: f.default for f in dataclasses.fields(ClassicalBaseline)}
    unknown = sorted(set(grid) - set(fields))
    if unknown:
        raise ValueError(f"tune_baseline: grid has unknown knob(s) {unknown}; known: {list(fields)}")
    checked = {}
    for name, default in fields.items():
        values = grid.get(name, [default])
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"tune_baseline: grid[{name!r}] must be a non-empty list of values; got {values!r}")
        # validates each value, and normalises it (e.g. 8 -> 8.0 for a sigma)
        checked[name] = list(dict.fromkeys(getattr(ClassicalBaseline(**{name: v}), name) for v in values))
    return checked
