"""The classical baseline: lighting flattened away, polarity respected, specks dropped, tuning that finds the
better knobs and agrees with predict(), and clear errors on bad input. Made-up images only."""

import itertools

import cv2
import numpy as np
import pytest
import torch

from unetlab.baseline import DEFAULT_GRID, ClassicalBaseline, flatten, otsu_threshold, tune_baseline

H, W = 96, 128


def _dice(pred, truth):
    return 2 * np.sum(pred & truth) / (np.sum(pred) + np.sum(truth))


def _disc(cy, cx, r, shape=(H, W)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _lit_surface(rng, shape=(H, W), noise=3.0):
    """A surface under uneven light, in gray levels: brighter by 80 towards one side and 30 towards the bottom,
    with sensor noise. The lighting is flat at the borders (cosine ramps): a Gaussian background follows a
    slope poorly at an image edge, a limitation these tests do not probe."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w] / np.array([h - 1, w - 1])[:, None, None]
    light = 80 * (1 - np.cos(np.pi * xx)) / 2 + 30 * (1 - np.cos(np.pi * yy)) / 2
    return 60 + light + rng.normal(0, noise, shape)


def _image(gray):
    return np.clip(gray / 255, 0, 1).astype(np.float32)


def test_flattening_removes_uneven_lighting_and_finds_a_dark_blob():
    rng = np.random.default_rng(0)
    truth = _disc(40, 90, 8)
    image = _image(_lit_surface(rng) - 40 * truth)
    for method in ("otsu", "adaptive"):
        pred = ClassicalBaseline(method=method, polarity="dark", background_sigma=16, offset=12).predict(image)
        assert pred.shape == (H, W) and pred.dtype == bool
        assert _dice(pred, truth) > 0.85, method
    # Without flattening, the lighting (110 gray levels) swamps the blob (40): Otsu splits the lighting instead.
    unflattened = ClassicalBaseline(method="otsu", polarity="dark", background_sigma=0).predict(image)
    assert _dice(unflattened, truth) < 0.3
    # The contrast map is the blob's darkening in gray levels, near 0 elsewhere.
    contrast = ClassicalBaseline(polarity="dark", background_sigma=16).contrast(image)
    assert 25 < np.median(contrast[truth]) < 45 and abs(np.median(contrast[~truth])) < 3


def test_polarity_selects_bright_or_dark_defects():
    rng = np.random.default_rng(1)
    bright, dark = _disc(30, 30, 7), _disc(60, 95, 7)
    image = _image(_lit_surface(rng) + 45 * bright - 45 * dark)
    predictions = {p: ClassicalBaseline(polarity=p, offset=12).predict(image) for p in ("dark", "bright", "both")}
    assert _dice(predictions["bright"], bright) > 0.85 and not (predictions["bright"] & dark).any()
    assert _dice(predictions["dark"], dark) > 0.85 and not (predictions["dark"] & bright).any()
    assert _dice(predictions["both"], bright | dark) > 0.85


def test_min_area_removes_specks_and_keeps_the_defect():
    rng = np.random.default_rng(2)
    truth = _disc(48, 64, 9)
    specks = np.zeros((H, W), bool)
    specks[10, 10] = specks[80, 20] = specks[15, 110] = specks[70, 115:117] = True
    image = _image(_lit_surface(rng, noise=1.0) - 50 * (truth | specks))
    knobs = dict(polarity="dark", smooth_sigma=0.0, offset=20, close_radius=0)
    kept = ClassicalBaseline(min_area=0, **knobs).predict(image)
    assert kept[specks].all()
    cleaned = ClassicalBaseline(min_area=20, **knobs).predict(image)
    assert not cleaned[specks].any() and _dice(cleaned, truth) > 0.9


def test_min_area_keeps_a_component_of_exactly_min_area_pixels():
    truth = np.zeros((40, 40), bool)
    truth[10:15, 20:25] = True                                      # 25 pixels
    image = _image(np.full((40, 40), 150.0) - 60 * truth)
    knobs = dict(smooth_sigma=0.0, offset=20, close_radius=0)
    assert np.array_equal(ClassicalBaseline(min_area=25, **knobs).predict(image), truth)
    assert not ClassicalBaseline(min_area=26, **knobs).predict(image).any()
    _, rows = tune_baseline([image], [truth], grid={**{k: [v] for k, v in knobs.items()}, "min_area": [25, 26]},
                            progress=False)
    assert [(r["min_area"], r["dice"]) for r in rows] == [(25, 1.0), (26, 0.0)]
    # Components are 8-connected: two 3 x 3 squares touching at a corner are one 18-pixel defect.
    corners = np.zeros((40, 40), bool)
    corners[5:8, 5:8] = corners[8:11, 8:11] = True
    image = _image(np.full((40, 40), 150.0) - 60 * corners)
    assert np.array_equal(ClassicalBaseline(min_area=18, **knobs).predict(image), corners)


def test_opening_removes_thin_lines_and_closing_bridges_gaps():
    blob, line = _disc(30, 30, 8, (64, 96)), np.zeros((64, 96), bool)
    line[5:60, 70] = True
    gap = np.zeros((64, 96), bool)
    gap[50:56, 5:40] = gap[50:56, 42:60] = True                     # a bar cut by a 2-pixel gap
    image = _image(np.full((64, 96), 150.0) - 60 * (blob | line | gap))
    knobs = dict(smooth_sigma=0.0, offset=20, min_area=0)
    opened = ClassicalBaseline(open_radius=1, close_radius=0, **knobs).predict(image)
    assert not opened[line].any() and opened[blob].all()
    plain = ClassicalBaseline(open_radius=0, close_radius=0, **knobs).predict(image)
    assert plain[line].all() and not plain[50:56, 40:42].any()
    closed = ClassicalBaseline(open_radius=0, close_radius=2, **knobs).predict(image)
    assert closed[51:55, 40:42].all()                            # bridged (a disc leaves the corners)


def test_otsu_raises_the_cut_where_the_offset_is_too_low():
    rng = np.random.default_rng(6)
    truth = _disc(48, 64, 10)
    image = _image(_lit_surface(rng) - 40 * truth)
    adaptive = ClassicalBaseline(method="adaptive", offset=1.0, min_area=0).predict(image)
    otsu = ClassicalBaseline(method="otsu", offset=1.0, min_area=0).predict(image)
    assert _dice(adaptive, truth) < 0.3 < 0.85 < _dice(otsu, truth)   # a 1-gray-level cut flags the noise
    _, rows = tune_baseline([image], [truth], grid={"method": ["otsu", "adaptive"], "offset": [1.0],
                                                   "min_area": [0]}, progress=False)
    assert [(r["method"], r["dice"]) for r in rows] == [("otsu", pytest.approx(_dice(otsu, truth))),
                                                        ("adaptive", pytest.approx(_dice(adaptive, truth)))]


def test_uint8_and_float_images_give_the_same_mask():
    image = _image(_lit_surface(np.random.default_rng(3)) - 40 * _disc(50, 50, 6))
    u8 = np.rint(image * 255).astype(np.uint8)
    baseline = ClassicalBaseline()
    assert np.array_equal(baseline.predict(u8), baseline.predict(u8.astype(np.float32) / 255))


def test_otsu_threshold_splits_two_modes():
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0, 2, 5000), rng.normal(40, 2, 500)])
    assert 8 < otsu_threshold(values) < 32
    assert otsu_threshold(np.full(10, 3.0)) == 3.0
    # Same cut as OpenCV's Otsu on 8-bit data (which uses 256 integer bins; ours span the data's range).
    for k in range(3):
        v = np.concatenate([rng.normal(80 + 15 * k, 15, 8000), rng.normal(170, 20, 3000 * (k + 1))])
        v = np.clip(v, 0, 255).astype(np.uint8)
        reference, _ = cv2.threshold(v.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        assert otsu_threshold(v) == pytest.approx(reference, abs=1.5)


def test_flatten_is_signed_gray_levels():
    image = np.full((32, 32), 100 / 255, np.float32)
    image[16, 16] = 60 / 255
    residual = flatten(image, background_sigma=8)
    assert residual.dtype == np.float32 and residual[16, 16] == pytest.approx(-40, abs=1)
    assert abs(residual[0, 0]) < 0.1


def _bright_blob_set(n, seed):
    """n images of different sizes, each with 0-2 bright blobs, and their masks."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for i in range(n):
        shape = (64 + 8 * i, 96 - 4 * i)
        truth = np.zeros(shape, bool)
        for _ in range(i % 3):
            truth |= _disc(rng.integers(12, shape[0] - 12), rng.integers(12, shape[1] - 12), rng.integers(4, 9),
                           shape)
        images.append(_image(_lit_surface(rng, shape) + 35 * truth))
        masks.append(truth)
    return images, masks


def test_tuning_prefers_the_right_polarity_and_matches_predict():
    images, masks = _bright_blob_set(6, seed=5)
    grid = {"method": ["otsu", "adaptive"], "polarity": ["dark", "bright"], "offset": [1.0, 5.0, 12.0],
            "min_area": [0, 10]}
    best, rows = tune_baseline(images, masks, grid=grid, progress=False)
    assert len(rows) == 2 * 2 * 3 * 2
    assert best.polarity == "bright"
    dice = [r["dice"] for r in rows]
    assert dice == sorted(dice, reverse=True) and dice[0] > 0.85
    # The deliberately bad setting (looking for dark defects) scores far below the best.
    bad = next(r for r in rows if r["polarity"] == "dark" and r["method"] == "adaptive" and r["offset"] == 12.0)
    assert bad["dice"] < 0.3
    # Unlisted knobs keep their defaults; the best row rebuilds the best baseline.
    assert all(r["background_sigma"] == ClassicalBaseline().background_sigma for r in rows)
    assert ClassicalBaseline(**{k: v for k, v in rows[0].items() if k not in ("dice", "precision", "recall")}) == best
    # The tuner's fast counting (components counted once for all min_area values) agrees with predict().
    for row in rows:
        baseline = ClassicalBaseline(**{k: v for k, v in row.items() if k not in ("dice", "precision", "recall")})
        preds = [baseline.predict(im) for im in images]
        tp = sum(np.sum(p & m) for p, m in zip(preds, masks))
        total = sum(p.sum() + m.sum() for p, m in zip(preds, masks))
        assert row["dice"] == pytest.approx(2 * tp / total)


def test_tuning_accepts_dataset_tensors_and_uint8_masks():
    images, masks = _bright_blob_set(3, seed=7)
    grid = {"polarity": ["dark", "bright"], "offset": [8.0]}
    _, expected = tune_baseline(images, masks, grid=grid, progress=False)
    # DefectFolder items: (1, H, W) float32 tensors, masks 0.0 / 1.0; masks read from disk: uint8 0 / 255.
    tensors = [torch.from_numpy(im)[None] for im in images]
    float_masks = [torch.from_numpy(m.astype(np.float32))[None] for m in masks]
    assert tune_baseline(tensors, float_masks, grid=grid, progress=True)[1] == expected
    assert tune_baseline(images, [255 * m.astype(np.uint8) for m in masks], grid=grid, progress=False)[1] == expected


def test_default_grid_is_valid_and_assumes_nothing_about_the_data():
    for name, values in DEFAULT_GRID.items():
        for value in values:
            ClassicalBaseline(**{name: value})
    # Generic: both thresholds and all polarities are searched, so the data decide; and the grid stays small.
    assert set(DEFAULT_GRID["method"]) == {"otsu", "adaptive"}
    assert set(DEFAULT_GRID["polarity"]) == {"dark", "bright", "both"}
    assert len(list(itertools.product(*DEFAULT_GRID.values()))) <= 2000


@pytest.mark.parametrize("knobs, match", [
    (dict(method="canny"), "method"),
    (dict(polarity="light"), "polarity"),
    (dict(background_sigma=-1.0), "background_sigma"),
    (dict(smooth_sigma=float("nan")), "smooth_sigma"),
    (dict(offset=-5), "offset"),
    (dict(open_radius=1.5), "open_radius"),
    (dict(min_area=-1), "min_area"),
])
def test_bad_knobs_are_clear_errors(knobs, match):
    with pytest.raises(ValueError, match=match):
        ClassicalBaseline(**knobs)


def test_bad_inputs_are_clear_errors():
    gray = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="colour"):
        ClassicalBaseline().predict(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ClassicalBaseline().predict(gray + 7)
    with pytest.raises(ValueError, match="colour"):
        tune_baseline([np.zeros((16, 16, 3), np.uint8)], [gray > 0], progress=False)
    with pytest.raises(ValueError, match="shape"):
        tune_baseline([gray], [np.zeros((16, 17), bool)], progress=False)
    with pytest.raises(ValueError, match="at least one"):
        tune_baseline([], [], progress=False)
    with pytest.raises(ValueError, match="one mask per image"):
        tune_baseline([gray, gray], [gray > 0], progress=False)
    with pytest.raises(ValueError, match="unknown knob"):
        tune_baseline([gray], [gray > 0], grid={"threshold": [1]}, progress=False)
    with pytest.raises(ValueError, match="non-empty list"):
        tune_baseline([gray], [gray > 0], grid={"offset": []}, progress=False)
    with pytest.raises(ValueError, match="background_sigma"):
        tune_baseline([gray], [gray > 0], grid={"background_sigma": [4.0, -2.0]}, progress=False)


def test_class_dice_weighs_a_small_class_like_a_large_one():
    """Two classes: a big faint bright square and a small dark dot. Pooled Dice prefers the big one; class Dice
    (with classes=...) must pick the polarity that serves both."""
    images, masks = [], []
    for kind in ("big", "small", "big", "small"):
        image = np.full((64, 64), 0.5, np.float32)
        mask = np.zeros((64, 64), bool)
        if kind == "big":
            image[8:40, 8:40] += 12 / 255
            mask[8:40, 8:40] = True
        else:
            image[30:34, 30:34] -= 60 / 255
            mask[30:34, 30:34] = True
        images.append(image)
        masks.append(mask)
    grid = {"polarity": ["bright", "both"], "method": ["adaptive"], "background_sigma": [0.0], "offset": [6.0],
            "open_radius": [0], "close_radius": [0], "min_area": [0]}
    _, pooled = tune_baseline(images, masks, grid=grid, progress=False)
    best, by_class = tune_baseline(images, masks, grid=grid, progress=False,
                                   classes=["big", "small", "big", "small"])
    assert best.polarity == "both" and by_class[0]["class_dice"] > by_class[1]["class_dice"]
    # class_dice by hand for the winner equals the mean of the two classes' own pooled Dice
    per_class = []
    for name in ("big", "small"):
        idx = [i for i, k in enumerate(["big", "small", "big", "small"]) if k == name]
        tp = sum(int((best.predict(images[i]) & masks[i]).sum()) for i in idx)
        pred = sum(int(best.predict(images[i]).sum()) for i in idx)
        truth = sum(int(masks[i].sum()) for i in idx)
        per_class.append(2 * tp / (pred + truth))
    assert by_class[0]["class_dice"] == pytest.approx(np.mean(per_class))
    with pytest.raises(ValueError, match="one class name per image"):
        tune_baseline(images, masks, grid=grid, progress=False, classes=["big"])
