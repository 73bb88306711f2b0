"""Augmentation: mask and image stay aligned, masks keep their values, seeded, and bad input fails clearly."""

import numpy as np
import pytest

from unetlab.augment import DEFAULT_AUGMENT, AugmentConfig, augment

GEOMETRY = AugmentConfig.none().replace(flips=True, rot90=True, rotate_deg=30.0, perspective=0.1, p_geometric=1.0)
PHOTOMETRIC = AugmentConfig.none().replace(brightness=0.2, contrast=0.3, gamma=0.5, blur_sigma=(0.5, 1.5),
                                           noise_std=(0.02, 0.05), p_photometric=1.0)


def _defect_image(h=96, w=128):
    """Dark surface with a bright square, a square touching the corner and a 3 px line; mask marks all three."""
    mask = np.zeros((h, w), bool)
    mask[30:60, 40:75] = True
    mask[:14, w - 18:] = True  # at the border: reflection pulls it into view, its label must follow
    rows = np.arange(10, h - 10)
    for d in (-1, 0, 1):
        mask[rows, rows // 2 + 5 + d] = True
    image = np.where(mask, 0.85, 0.15).astype(np.float32)
    return image, mask


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("shape", [(96, 128), (96, 96)])
def test_geometry_moves_image_and_mask_together(shape):
    image, mask = _defect_image(*shape)
    ious = []
    for seed in range(20):
        out_image, out_mask = augment(image, mask, GEOMETRY, np.random.default_rng(seed))
        assert out_mask.dtype == bool and out_mask.shape == shape
        ious.append(_iou(out_image > 0.5, out_mask))
        # The geometry really moved things: the unaugmented mask no longer fits.
        assert _iou(out_image > 0.5, mask) < 0.9
    assert min(ious) > 0.95, ious


def test_label_maps_keep_their_values_and_stay_aligned():
    h, w = 80, 80
    labels = np.zeros((h, w), np.int64)
    labels[10:40, 10:40] = 1_000_000  # a big label that only survives without interpolation or uint8 casts
    labels[45:70, 20:70] = 3
    labels[5:75, 60:64] = 7
    values = {0: 0.1, 3: 0.4, 7: 0.7, 1_000_000: 0.95}
    image = np.vectorize(values.get)(labels).astype(np.float32)
    for dtype in (np.int64, np.int32, np.uint32):
        for seed in range(10):
            out_image, out_labels = augment(image, labels.astype(dtype), GEOMETRY, np.random.default_rng(seed))
            assert out_labels.dtype == dtype
            assert set(np.unique(out_labels).tolist()) <= set(values)
            # Each pixel's intensity says which label it should carry; allow the bilinear edges.
            nearest = np.array(list(values))[np.abs(out_image[..., None] - list(values.values())).argmin(-1)]
            assert (nearest == out_labels).mean() > 0.95
    small = np.array([[0, 3, 250]], np.uint8).repeat(3, 0).repeat(20, 1)  # 3 x 60, non-square
    for seed in range(10):
        _, out = augment(np.zeros(small.shape, np.float32), small, GEOMETRY, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and set(np.unique(out).tolist()) <= {0, 3, 250}


def test_flips_and_quarter_turns_are_exact_and_shared():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32), dtype=np.float32)
    mask = rng.integers(0, 5, (32, 32)).astype(np.uint8)
    cfg = AugmentConfig.none().replace(flips=True, rot90=True)
    seen = set()
    for seed in range(40):
        out_image, out_mask = augment(image, mask, cfg, np.random.default_rng(seed))
        matches = [i for i, (a, m) in enumerate(_dihedral(image, mask)) if np.array_equal(a, out_image)]
        assert len(matches) == 1
        assert np.array_equal(out_mask, _dihedral(image, mask)[matches[0]][1])
        assert out_image.flags.c_contiguous and out_mask.flags.c_contiguous
        seen.add(matches[0])
    assert len(seen) == 8  # all eight symmetries of the square occur


def _dihedral(image, mask):
    return [(np.rot90(f(image), k), np.rot90(f(mask), k)) for f in (lambda a: a, np.fliplr) for k in range(4)]


def test_rot90_is_skipped_on_non_square_inputs():
    rng = np.random.default_rng(1)
    image = rng.random((24, 40), dtype=np.float32)
    mask = image > 0.5
    cfg = AugmentConfig.none().replace(rot90=True)
    for seed in range(10):
        out_image, out_mask = augment(image, mask, cfg, np.random.default_rng(seed))
        assert np.array_equal(out_image, image) and np.array_equal(out_mask, mask)


def test_same_generator_state_gives_the_same_bytes():
    image, mask = _defect_image()
    cfg = DEFAULT_AUGMENT.replace(p_geometric=1.0, p_photometric=1.0)
    a = augment(image, mask, cfg, np.random.default_rng(7))
    b = augment(image, mask, cfg, np.random.default_rng(7))
    c = augment(image, mask, cfg, np.random.default_rng(8))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[0].tobytes() != c[0].tobytes()


def test_none_is_an_identity_that_returns_copies():
    image, mask = _defect_image()
    out_image, out_mask = augment(image, mask, AugmentConfig.none(), np.random.default_rng(0))
    assert np.array_equal(out_image, image) and np.array_equal(out_mask, mask)
    assert out_image.dtype == np.float32 and out_mask.dtype == bool
    out_image[:] = 0
    out_mask[:] = False
    assert image.max() > 0 and mask.any()  # the inputs were not handed back


def test_photometric_steps_change_the_image_only():
    image, mask = _defect_image()
    before = image.copy()
    for seed in range(10):
        out_image, out_mask = augment(image, mask, PHOTOMETRIC, np.random.default_rng(seed))
        assert np.array_equal(out_mask, mask)
        assert not np.allclose(out_image, image, atol=0.01)
        assert np.corrcoef(out_image.ravel(), image.ravel())[0, 1] > 0.8  # still the same picture
    assert np.array_equal(image, before)  # input untouched


def test_output_is_float32_in_unit_range_and_mask_dtype_is_kept():
    image, mask = _defect_image()
    strong = DEFAULT_AUGMENT.replace(brightness=1.0, contrast=1.0, gamma=2.0, noise_std=(0.5, 1.0),
                                     p_geometric=1.0, p_photometric=1.0)
    for dtype in (bool, np.uint8, np.int16, np.uint16, np.int64):
        for seed in range(5):
            out_image, out_mask = augment(image.astype(np.float64), mask.astype(dtype), strong,
                                          np.random.default_rng(seed))
            assert out_image.dtype == np.float32 and out_image.shape == image.shape
            assert 0.0 <= out_image.min() and out_image.max() <= 1.0
            assert out_mask.dtype == np.dtype(dtype) and set(np.unique(out_mask).tolist()) <= {0, 1}


def test_probabilities_zero_and_one():
    image, mask = _defect_image(64, 64)
    off = DEFAULT_AUGMENT.replace(flips=False, rot90=False, p_geometric=0.0, p_photometric=0.0)
    out_image, out_mask = augment(image, mask, off, np.random.default_rng(0))
    assert np.array_equal(out_image, image) and np.array_equal(out_mask, mask)
    on = off.replace(p_geometric=1.0)
    assert not np.array_equal(augment(image, mask, on, np.random.default_rng(0))[1], mask)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2)])
def test_tiny_inputs_stay_finite(shape):
    cfg = DEFAULT_AUGMENT.replace(p_geometric=1.0, p_photometric=1.0)
    out_image, out_mask = augment(np.full(shape, 0.5, np.float32), np.ones(shape, bool), cfg,
                                  np.random.default_rng(0))
    assert out_image.shape == shape and np.isfinite(out_image).all() and out_mask.all()


@pytest.mark.parametrize("field, value", [
    ("rotate_deg", -1.0), ("rotate_deg", float("nan")), ("perspective", 0.5), ("brightness", -0.1),
    ("contrast", 1.5), ("gamma", "0.3"), ("p_geometric", 1.5), ("p_photometric", -0.1),
    ("blur_sigma", (1.0, 0.5)), ("blur_sigma", 1.0), ("noise_std", (0.1,)), ("noise_std", (-0.1, 0.1)),
    ("flips", "yes"), ("rot90", 1), ("contrast", True),
])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"AugmentConfig.{field} must be"):
        AugmentConfig(**{field: value})


def test_config_normalises_lists_and_ints():
    cfg = AugmentConfig(blur_sigma=[0, 2], rotate_deg=5)
    assert cfg.blur_sigma == (0.0, 2.0) and isinstance(cfg.rotate_deg, float)
    assert cfg == AugmentConfig(blur_sigma=(0.0, 2.0), rotate_deg=5.0)


@pytest.mark.parametrize("image, mask, match", [
    (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), bool), "grayscale .* shape \\(8, 8, 3\\)"),
    (np.zeros((8, 8), np.uint8), np.zeros((8, 8), bool), "float image.*uint8"),
    (np.full((8, 8), 255.0, np.float32), np.zeros((8, 8), bool), "values in \\[0, 1\\]"),
    (np.full((8, 8), np.nan, np.float32), np.zeros((8, 8), bool), "values in \\[0, 1\\]"),
    (np.zeros((8, 8), np.float32), np.zeros((8, 9), bool), "mask of the image's shape \\(8, 8\\); got \\(8, 9\\)"),
    (np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32), "bool or integer-label mask"),
    (np.zeros((8, 8), np.float32), np.full((8, 8), 2**40, np.int64), "fit in int32"),
    ([[0.0]], np.zeros((1, 1), bool), "got a list"),
])
def test_bad_inputs_raise_clear_errors(image, mask, match):
    with pytest.raises(ValueError, match=match):
        augment(image, mask, DEFAULT_AUGMENT, np.random.default_rng(0))


def test_config_and_generator_are_required():
    image, mask = _defect_image(16, 16)
    with pytest.raises(ValueError, match="numpy Generator"):
        augment(image, mask, DEFAULT_AUGMENT, 0)
    with pytest.raises(ValueError, match="AugmentConfig"):
        augment(image, mask, {"flips": True}, np.random.default_rng(0))
