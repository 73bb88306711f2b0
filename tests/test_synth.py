"""The generator: validated knobs, reproducibility, truthful masks, and defects that look like themselves."""

import dataclasses
import random

import cv2
import numpy as np
import pytest

from unetlab.synth import CLASS_NAMES, SURFACES, Backgrounds, DefectConfig, make_sample, sample_rng

SCRATCH, CRACK, STAIN, PIT, CHIP, PATCH = 1, 2, 3, 4, 5, 6
_NONE = dict(scratches=(0, 0), cracks=(0, 0), stains=(0, 0), defect_free=0.0)
ONLY = {  # configs with a single defect kind and no defect-free images
    "scratch": DefectConfig(**{**_NONE, "scratches": (1, 1)}),
    "crack": DefectConfig(**{**_NONE, "cracks": (1, 1)}),
    "stain": DefectConfig(**{**_NONE, "stains": (1, 1)}),
    "pit": DefectConfig(**_NONE, pits=(1, 1)),
    "chip": DefectConfig(**_NONE, chips=(1, 1)),
    "patch": DefectConfig(**_NONE, patches=(1, 1)),
}


# ----------------------------------------------------------------------------------------------------------------
# DefectConfig


def test_every_default_lies_in_its_range_and_round_trips_through_a_dict():
    cfg = DefectConfig()
    for f in dataclasses.fields(cfg):
        if "range" in f.metadata:
            lo, hi = f.metadata["range"]
            value = getattr(cfg, f.name)
            assert all(lo <= v <= hi for v in (value if isinstance(value, tuple) else (value,))), f.name
    assert DefectConfig.from_dict(cfg.to_dict()) == cfg
    assert DefectConfig.from_dict({"scratches": [2, 3]}).scratches == (2, 3)  # JSON lists become tuples


@pytest.mark.parametrize("field, value, message", [
    ("scratch_width", (-1.0, 2.0), r"scratch_width must be a \(low, high\) pair of floats in \[1.0, 6.0\]; got \(-1.0, 2.0\)"),
    ("scratch_width", (3.0, 2.0), r"scratch_width must have low <= high; got \(3.0, 2.0\)"),
    ("scratches", (0, 99), r"scratches must be a \(low, high\) pair of ints in \[0, 8\]; got \(0, 99\)"),
    ("scratches", (0.5, 1), r"scratches must be .* ints"),
    ("noise", 3.0, r"noise must be a \(low, high\) pair"),
    ("size", 16, r"size must be int in \[32, 1024\]; got 16"),
    ("size", True, r"size must be int"),
    ("defect_free", float("nan"), r"defect_free must be float in \[0.0, 1.0\]; got nan"),
    ("surface", "wood", r"surface must be one of \('mixed', 'brushed', 'cast', 'woven'\); got 'wood'"),
])
def test_invalid_knob_names_field_range_and_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        DefectConfig(**{field: value})


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"no field\(s\) \['colour'\]"):
        DefectConfig.from_dict({"colour": 3})


@pytest.mark.parametrize("value", [None, [("size", 64)], "size=64"])
def test_from_dict_refuses_what_is_not_a_dict(value):
    with pytest.raises(ValueError, match=rf"from_dict expects a dict of knobs .*; got {type(value).__name__}"):
        DefectConfig.from_dict(value)


def test_make_sample_rejects_bad_config_and_seed():
    with pytest.raises(ValueError, match="expects a DefectConfig"):
        make_sample({"size": 64}, 0)
    with pytest.raises(ValueError, match="non-negative int seed or a numpy Generator; got -1"):
        make_sample(DefectConfig(size=64), -1)
    with pytest.raises(ValueError, match="non-negative integers"):
        sample_rng(0, -3)


# ----------------------------------------------------------------------------------------------------------------
# Output contract and reproducibility


def test_sample_types_shapes_and_ranges():
    for i in range(20):
        image, labels = make_sample(DefectConfig(size=96), i)
        assert image.dtype == np.float32 and image.shape == (96, 96)
        assert labels.dtype == np.uint8 and labels.shape == (96, 96)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert set(np.unique(labels)) <= set(range(len(CLASS_NAMES)))


def test_same_config_and_seed_give_identical_bytes_and_other_seeds_differ():
    cfg = DefectConfig()
    a, la = make_sample(cfg, 7)
    b, lb = make_sample(cfg, 7)
    assert a.tobytes() == b.tobytes() and la.tobytes() == lb.tobytes()
    c, _ = make_sample(cfg, 8)
    assert a.tobytes() != c.tobytes()
    # A Generator is advanced, so two draws from one generator differ, and a copy of its state repeats them.
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    first, second = make_sample(cfg, g1)[0], make_sample(cfg, g1)[0]
    assert first.tobytes() != second.tobytes()
    assert make_sample(cfg, g2)[0].tobytes() == first.tobytes()


def test_sample_i_depends_only_on_seed_and_index_whatever_the_order():
    cfg = DefectConfig(size=64)
    forward = [make_sample(cfg, sample_rng(3, i))[0].tobytes() for i in range(6)]
    backward = [make_sample(cfg, sample_rng(3, i))[0].tobytes() for i in reversed(range(6))]
    assert forward == backward[::-1]
    assert make_sample(cfg, sample_rng(4, 0))[0].tobytes() != forward[0]


def test_noise_windows_have_the_requested_shape_wherever_they_fall():
    from unetlab.synth import noise_window

    rng = np.random.default_rng(0)
    for h, w in ((5, 256), (256, 5), (64, 64), (1, 1000)):
        assert all(noise_window(rng, h, w).shape == (h, w) for _ in range(300))


def test_no_global_random_state_is_read_or_written():
    np_state, py_state = np.random.get_state(), random.getstate()
    first = make_sample(DefectConfig(), 11)[0]
    np.random.seed(123)  # changing the global state must not change samples either
    random.seed(123)
    assert make_sample(DefectConfig(), 11)[0].tobytes() == first.tobytes()
    np.random.set_state(np_state)
    random.setstate(py_state)
    make_sample(DefectConfig(), 12)
    assert np.random.get_state()[1].tobytes() == np_state[1].tobytes() and random.getstate() == py_state


def test_defect_free_share_is_what_the_knob_says():
    def empty_share(p):
        return np.mean([not make_sample(DefectConfig(size=64, defect_free=p), sample_rng(1, i))[1].any()
                        for i in range(200)])
    assert empty_share(0.0) == 0.0
    assert empty_share(1.0) == 1.0
    assert 0.2 < empty_share(0.3) < 0.4  # binomial(200, 0.3): 3 sigma is +-0.1


# ----------------------------------------------------------------------------------------------------------------
# The masks tell the truth


def test_pixels_that_visibly_changed_match_the_mask():
    """Render each seed with and without defects (same surface, blur and noise) and compare with the mask.

    Visible means the defect changed a pixel by more than 8 gray levels: above the default sensor noise (2-6
    gray levels std) and about what a person can spot side by side. Tolerances:
    - outside the mask: no visible change farther than 3 px from it. The mask is the defect's core (coverage
      >= 1/2); its anti-aliased fringe (<= 1 px) and the optical blur (sigma <= 1.2 px spreads an edge by ~2 px)
      legitimately change pixels next to it.
    - inside the mask: >= 98% of all mask pixels visibly changed, and >= 70% in every single image. Not 100%:
      where a dark crack crosses a light stain the two changes can cancel.
    """
    cfg = DefectConfig(defect_free=0.0)
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))  # radius 3 px
    visible_in_mask, mask_pixels, visible_outside = 0, 0, 0
    for i in range(150):
        image, labels = make_sample(cfg, sample_rng(0, i))
        clean, no_labels = make_sample(cfg, sample_rng(0, i), defects=False)
        assert not no_labels.any()
        visible = np.abs(image - clean) > 8 / 255
        mask = labels > 0
        assert mask.any()
        assert visible[mask].mean() >= 0.70, f"sample {i}: only {visible[mask].mean():.0%} of the mask changed"
        visible_in_mask += visible[mask].sum()
        mask_pixels += mask.sum()
        visible_outside += (visible & ~(cv2.dilate(mask.view(np.uint8), near) > 0)).sum()
    assert visible_outside == 0
    assert visible_in_mask / mask_pixels >= 0.98


def test_without_defects_nothing_changes_but_the_defects():
    image, labels = make_sample(DefectConfig(), 3)
    clean, _ = make_sample(DefectConfig(), 3, defects=False)
    far = cv2.dilate((labels > 0).view(np.uint8), np.ones((15, 15), np.uint8)) == 0
    assert np.array_equal(image[far], clean[far])


# ----------------------------------------------------------------------------------------------------------------
# Each surface and defect looks like itself


def _gradients(image):
    gx = np.abs(cv2.Sobel(image, cv2.CV_32F, 1, 0)).mean()
    gy = np.abs(cv2.Sobel(image, cv2.CV_32F, 0, 1)).mean()
    return gx, gy


def test_surfaces_are_textured_brushed_is_directional_cast_is_not_woven_is_periodic():
    quiet = dict(scratches=(0, 0), cracks=(0, 0), stains=(0, 0), noise=(0.0, 0.0), illumination=(0.0, 0.0),
                 texture_contrast=(12.0, 12.0))
    for kind in SURFACES:
        for i in range(4):
            image, _ = make_sample(DefectConfig(surface=kind, **quiet), sample_rng(2, i))
            assert image.std() > 4 / 255, f"{kind} looks flat"
            gx, gy = _gradients(image)
            anisotropy = max(gx, gy) / min(gx, gy)
            if kind == "brushed":
                assert anisotropy > 2.0, f"brushed should have streaks, anisotropy {anisotropy:.2f}"
            if kind == "cast":
                assert anisotropy < 1.3, f"cast should be isotropic, anisotropy {anisotropy:.2f}"
            if kind == "woven":  # a strong spectral peak at the thread period (10-16 px x scale)
                spectrum = np.abs(np.fft.rfft(image.mean(axis=0) - image.mean()))
                assert spectrum[5:].max() > 4 * np.median(spectrum[5:]), "woven should be periodic"


def test_uneven_illumination_tilts_the_surface():
    def ptp_of_blurred(illumination):
        cfg = DefectConfig(surface="cast", illumination=(illumination, illumination), scratches=(0, 0),
                           cracks=(0, 0), stains=(0, 0), texture_contrast=(2.0, 2.0), noise=(0.0, 0.0))
        image, _ = make_sample(cfg, 4)
        return np.ptp(cv2.resize(image, (8, 8), interpolation=cv2.INTER_AREA)) * 255
    assert ptp_of_blurred(0.0) < 8
    assert 50 < ptp_of_blurred(80.0) < 95


def test_scratches_are_thin_long_and_either_brighter_or_darker():
    signs = set()
    for i in range(30):
        image, labels = make_sample(ONLY["scratch"], sample_rng(5, i))
        clean, _ = make_sample(ONLY["scratch"], sample_rng(5, i), defects=False)
        n, comp, stats, _ = cv2.connectedComponentsWithStats((labels == SCRATCH).view(np.uint8), connectivity=8)
        for k in range(1, n):  # one scratch, or two parallel twins
            if stats[k, cv2.CC_STAT_AREA] < 20:  # a twin clipped at the border
                continue
            line = (comp == k).view(np.uint8)
            length = max(cv2.minAreaRect(cv2.findNonZero(line))[1])
            width = stats[k, cv2.CC_STAT_AREA] / length  # mean width in px (widths 1-3 px by default)
            assert length >= 0.25 * 256, f"sample {i}: scratch only {length:.0f} px long"
            assert width <= 4.0, f"sample {i}: scratch {width:.1f} px wide"
        signs.add(np.sign((image - clean)[labels == SCRATCH].mean()))
    assert signs == {-1.0, 1.0}


def test_scratches_are_anti_aliased():
    cfg = ONLY["scratch"].replace(blur_sigma=(0.0, 0.0), noise=(0.0, 0.0), texture_contrast=(0.0, 0.0),
                                  illumination=(0.0, 0.0))
    image, labels = make_sample(cfg, 9)
    clean, _ = make_sample(cfg, 9, defects=False)
    change = np.abs(image - clean)
    peak = change.max()
    partial = (change > 0.1 * peak) & (change < 0.9 * peak)
    assert partial.sum() > 0.3 * (labels > 0).sum()  # soft edges, not a jagged 0/1 line


def test_cracks_are_dark_irregular_and_taper():
    tapered = 0
    for i in range(20):
        image, labels = make_sample(ONLY["crack"], sample_rng(6, i))
        clean, _ = make_sample(ONLY["crack"], sample_rng(6, i), defects=False)
        crack = labels == CRACK
        assert (image - clean)[crack].mean() < -10 / 255, f"sample {i}: a crack should be darker"
        # Tapering: the widest point (distance to the background) is well above the width near the tips.
        dist = cv2.distanceTransform(crack.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        if dist.max() > 1.0:  # else the crack's root lies outside the image
            tapered += np.percentile(dist[crack], 25) < 0.75 * dist.max()
    assert tapered >= 15


def test_crack_branching_knob_adds_branches():
    def crack_area(branching):
        cfg = ONLY["crack"].replace(crack_branching=branching, crack_length=(150.0, 150.0))
        return np.mean([(make_sample(cfg, sample_rng(7, i))[1] == CRACK).sum() for i in range(20)])
    assert crack_area(1.0) > 1.2 * crack_area(0.0)


def test_stains_are_irregular_soft_edged_blobs_not_ellipses():
    mismatch = []
    for i in range(20):
        cfg = ONLY["stain"].replace(stain_size=(30.0, 40.0), blur_sigma=(0.0, 0.0), noise=(0.0, 0.0))
        image, labels = make_sample(cfg, sample_rng(8, i))
        clean, _ = make_sample(cfg, sample_rng(8, i), defects=False)
        blob = (labels == STAIN).view(np.uint8)
        contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        largest = max(contours, key=cv2.contourArea)
        if len(largest) < 20 or cv2.contourArea(largest) < 500:  # clipped at the border
            continue
        ellipse = np.zeros_like(blob)
        cv2.ellipse(ellipse, cv2.fitEllipse(largest), 1, -1)
        region = np.zeros_like(blob)
        cv2.drawContours(region, [largest], -1, 1, -1)
        mismatch.append(np.logical_xor(region, ellipse).sum() / region.sum())
        # Soft edge: just outside the mask the change fades instead of stopping dead. A hard edge (no feather)
        # would leave every pixel of this 1 px ring unchanged.
        ring = (cv2.dilate(blob, np.ones((3, 3), np.uint8)) > 0) & (blob == 0)
        change = np.abs(image - clean)
        inside = np.median(change[blob > 0])
        partial = (change[ring] > 0.05 * inside) & (change[ring] < 0.8 * inside)
        assert partial.mean() > 0.25, f"sample {i}: only {partial.mean():.0%} of the edge ring is partly changed"
    assert len(mismatch) >= 10
    assert np.mean(mismatch) > 0.12, f"stains look like ellipses (mean mismatch {np.mean(mismatch):.2f})"


def test_where_defects_overlap_the_later_and_thinner_one_keeps_its_label():
    """Precedence scratch > crack > stain. Fixed counts draw no random numbers, so dropping the defects that
    are painted last (scratches, then cracks) leaves everything painted before them exactly as it was."""
    base = dict(stains=(3, 3), stain_size=(50.0, 70.0), defect_free=0.0)
    overlaps = {"scratch over stain": 0, "crack over stain": 0, "scratch over crack": 0}
    for i in range(10):
        rng = lambda: sample_rng(9, i)  # noqa: E731
        everything = make_sample(DefectConfig(cracks=(2, 2), scratches=(4, 4), **base), rng())[1]
        no_scratch = make_sample(DefectConfig(cracks=(2, 2), scratches=(0, 0), **base), rng())[1]
        stains_only = make_sample(DefectConfig(cracks=(0, 0), scratches=(0, 0), **base), rng())[1]
        scratch = (everything == SCRATCH)
        assert np.array_equal(everything[~scratch], no_scratch[~scratch])
        assert np.array_equal(no_scratch[no_scratch != CRACK], stains_only[no_scratch != CRACK])
        overlaps["scratch over stain"] += (scratch & (stains_only == STAIN)).sum()
        overlaps["crack over stain"] += ((no_scratch == CRACK) & (stains_only == STAIN)).sum()
        overlaps["scratch over crack"] += (scratch & (no_scratch == CRACK)).sum()
    assert all(v > 0 for v in overlaps.values()), overlaps


def test_presets_change_only_their_knobs_and_the_default_bytes_stay():
    from unetlab.synth import PRESETS

    assert DefectConfig.preset("default") == DefectConfig()
    wide = DefectConfig.preset("randomized", size=64)
    assert wide.size == 64 and wide.illumination[1] > DefectConfig().illumination[1]
    assert wide.edge_shading[1] > 0 and wide.distractors[1] > 0
    assert set(PRESETS["randomized"]) <= {f.name for f in dataclasses.fields(DefectConfig)}
    with pytest.raises(ValueError, match="unknown DefectConfig preset 'nope'"):
        DefectConfig.preset("nope")
    # The preset knobs default to "off" and draw nothing: a default sample is what it was before they existed.
    assert DefectConfig().edge_shading == (0.0, 0.0) and DefectConfig().distractors == (0, 0)
    image, labels = make_sample(DefectConfig(size=64), 3)
    # Pinned from the generator as it is (any change of the default random streams moves all of these; a
    # deliberate change of the default data updates them): 313 scratch pixels, mean and spread in [0, 1] units.
    np.testing.assert_allclose(np.bincount(labels.ravel(), minlength=len(CLASS_NAMES)), [3783, 313, 0, 0, 0, 0, 0],
                               atol=2)
    assert image.mean() == pytest.approx(0.47751, abs=1e-4) and image.std() == pytest.approx(0.05451, abs=1e-4)


def _hairline_share(cfg: DefectConfig, n: int = 300) -> float:
    """Share of scratch pixels on a stroke no wider than ~2 px (local distance-transform maximum <= 1 px)."""
    hair = total = 0
    for seed in range(n):
        _, labels = make_sample(cfg, seed)
        scratch = (labels == 1).astype(np.uint8)
        half_width = cv2.dilate(cv2.distanceTransform(scratch, cv2.DIST_L2, 3), np.ones((5, 5), np.uint8))
        hair += int((half_width[scratch > 0] <= 1.01).sum())
        total += int(scratch.sum())
    assert total > 0
    return hair / total


def test_multiclass_preset_leaves_hairlines_to_cracks():
    # Chapter 07's finding: a 1 px scratch and a crack's 1 px tip look alike, so the multiclass preset makes
    # scratches at least 2 px wide. Measured here the way chapter 07 measures it, on scratch-only images.
    only_scratches = dict(size=128, scratches=(1, 1), cracks=(0, 0), stains=(0, 0), defect_free=0.0)
    assert _hairline_share(DefectConfig.preset("default", **only_scratches)) > 0.15
    assert _hairline_share(DefectConfig.preset("multiclass", **only_scratches)) < 0.05
    assert DefectConfig.preset("multiclass").replace(scratch_width=DefectConfig().scratch_width) == DefectConfig()


def test_distractors_and_edge_shading_change_the_image_but_never_the_labels():
    base = DefectConfig(size=64)
    image, labels = make_sample(base, 5)
    for changes in (dict(distractors=(3, 3)), dict(edge_shading=(60.0, 60.0))):
        other, other_labels = make_sample(base.replace(**changes), 5)
        assert np.array_equal(labels, other_labels)
        assert np.abs(other - image).max() > 4 / 255


# ----------------------------------------------------------------------------------------------------------------
# The defect kinds that real inspection sees: pits, chips at an edge, large faint patches


def _change(cfg, seed):
    image, labels = make_sample(cfg, seed)
    clean, _ = make_sample(cfg, seed, defects=False)
    return image - clean, labels


@pytest.mark.parametrize("kind", ["pit", "chip", "patch"])
def test_new_kinds_carry_their_own_label_and_truthful_masks(kind):
    """Same rule as the classic kinds: the mask is where the change is more than half the defect's contrast.
    With contrasts above 20 gray levels, >= 90% of mask pixels changed visibly (> 8 gray levels), and no pixel
    farther than 3 px from the mask did."""
    label = CLASS_NAMES.index(kind)
    cfg = ONLY[kind].replace(**{f"{kind}_contrast": (25.0, 60.0)})
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    inside = total = 0
    for seed in range(40):
        delta, labels = _change(cfg, seed)
        assert set(np.unique(labels)) <= {0, label}
        mask = labels == label
        if not mask.any():
            continue
        visible = np.abs(delta) > 8 / 255
        inside += visible[mask].sum()
        total += mask.sum()
        assert not (visible & ~(cv2.dilate(mask.view(np.uint8), near) > 0)).any(), f"seed {seed}"
    assert total > 0 and inside / total >= 0.90


def test_pits_are_small_dark_cores_with_a_brighter_rim():
    cfg = ONLY["pit"].replace(pit_size=(5.0, 6.0), pit_rim=(0.6, 0.6), blur_sigma=(0.0, 0.0), noise=(0.0, 0.0))
    rims = 0
    for seed in range(20):
        delta, labels = _change(cfg, seed)
        core = labels == PIT
        assert 40 < core.sum() < 500, f"seed {seed}: {core.sum()} px is no pit"
        assert delta[core].mean() < -20 / 255
        ring = (cv2.dilate(core.view(np.uint8), np.ones((5, 5), np.uint8)) > 0) & ~core
        rims += delta[ring].max() > 5 / 255
    assert rims >= 18


def test_chips_touch_an_edge_of_the_image():
    for seed in range(20):
        _, labels = _change(ONLY["chip"], seed)
        chip = labels == CHIP
        assert chip.any()
        assert chip[0].any() or chip[-1].any() or chip[:, 0].any() or chip[:, -1].any(), f"seed {seed}"


def test_patches_are_large_faint_and_change_the_texture():
    cfg = ONLY["patch"].replace(patch_contrast=(10.0, 10.0), noise=(0.0, 0.0))
    areas, faint = [], []
    for seed in range(10):
        delta, labels = _change(cfg, seed)
        patch = labels == PATCH
        areas.append(patch.mean())
        faint.append(abs(np.median(delta[patch])))
    assert np.median(areas) > 0.05  # a stain covers ~1% of an image
    assert max(faint) < 20 / 255
    rough, smooth = (ONLY["patch"].replace(patch_texture=(v, v), patch_contrast=(2.0, 2.0), noise=(0.0, 0.0))
                     for v in (1.0, -1.0))
    image_r, labels_r = make_sample(rough, 4)
    image_s, _ = make_sample(smooth, 4)
    clean, _ = make_sample(rough, 4, defects=False)
    inside = labels_r == PATCH
    grain = lambda im: np.abs(im - cv2.GaussianBlur(im, (0, 0), 2.0))[inside].mean()  # noqa: E731
    assert grain(image_r) > 1.5 * grain(clean) > 2.25 * grain(image_s)


def test_the_new_kinds_are_off_by_default_so_the_default_data_keep_three_classes():
    cfg = DefectConfig()
    assert cfg.pits == cfg.chips == cfg.patches == (0, 0)
    labels = np.concatenate([make_sample(cfg, seed)[1].ravel() for seed in range(30)])
    assert labels.max() <= STAIN


# ----------------------------------------------------------------------------------------------------------------
# One knob re-draws only what it governs


def test_adding_a_defect_leaves_every_other_defect_where_it_was():
    base = DefectConfig(cracks=(1, 1), scratches=(1, 1), stains=(1, 1), defect_free=0.0)
    for seed in range(10):
        _, before = make_sample(base, seed)
        _, after = make_sample(base.replace(cracks=(2, 2)), seed)
        _, other = make_sample(base.replace(stains=(2, 2), pits=(1, 1)), seed)
        new_crack = (after == CRACK) & (before != CRACK)
        for kind in (SCRATCH, STAIN):  # (the new crack may lie over a stain: it is painted later)
            assert np.array_equal((before == kind) & ~new_crack, after == kind), f"seed {seed}: {kind} moved"
        assert ((before == CRACK) <= (after == CRACK) | (after == SCRATCH)).all()  # the first crack stays
        assert (after == CRACK).sum() > (before == CRACK).sum()
        assert np.array_equal(before == CRACK, other == CRACK) and np.array_equal(before == SCRATCH,
                                                                                  other == SCRATCH)


def test_changing_one_kinds_contrast_keeps_every_shape():
    base = DefectConfig(cracks=(1, 1), stains=(1, 1), defect_free=0.0)
    for seed in range(5):
        _, a = make_sample(base, seed)
        _, b = make_sample(base.replace(stain_contrast=(20.0, 20.0), crack_contrast=(140.0, 140.0)), seed)
        assert np.array_equal(a, b)


# ----------------------------------------------------------------------------------------------------------------
# Defects on your own defect-free images


def _bank():
    rng = np.random.default_rng(0)
    tall = np.clip(0.4 + 0.05 * rng.standard_normal((300, 120)), 0, 1).astype(np.float32)
    ramp = np.tile(np.linspace(0.2, 0.8, 400, dtype=np.float32), (280, 1))
    return Backgrounds([tall, (ramp * 255).astype(np.uint8)])


def test_backgrounds_give_reproducible_windows_of_the_bank_with_the_same_defects():
    bank = _bank()
    cfg = DefectConfig(size=128, defect_free=0.0, illumination=(0.0, 0.0), noise=(0.0, 0.0),
                       background_gain=(1.0, 1.0), background_shift=(0.0, 0.0))
    a, labels = make_sample(cfg, 5, backgrounds=bank)
    b, again = make_sample(cfg, 5, backgrounds=bank)
    assert a.tobytes() == b.tobytes() and np.array_equal(labels, again)
    assert labels.any()
    _, procedural = make_sample(cfg, 5)
    assert np.array_equal(labels, procedural)  # the same knobs and seed draw the same defects on any surface
    clean, _ = make_sample(cfg, 5, backgrounds=bank, defects=False)
    pixels = np.concatenate([im.ravel() for im in bank.images])
    assert np.isin(np.round(clean * 255), np.round(pixels * 255)).all()  # every clean pixel is a bank pixel
    assert not np.array_equal(clean, make_sample(cfg, 6, backgrounds=bank, defects=False)[0])


def test_background_knobs_shift_and_scale_the_window():
    bank = Backgrounds([np.clip(0.5 + 0.05 * np.random.default_rng(1).standard_normal((200, 200)), 0, 1)])
    quiet = dict(size=128, scratches=(0, 0), cracks=(0, 0), stains=(0, 0), illumination=(0.0, 0.0),
                 noise=(0.0, 0.0))
    plain = make_sample(DefectConfig(**quiet, background_gain=(1.0, 1.0), background_shift=(0.0, 0.0)), 1,
                        backgrounds=bank)[0]
    moved = make_sample(DefectConfig(**quiet, background_gain=(2.0, 2.0), background_shift=(30.0, 30.0)), 1,
                        backgrounds=bank)[0]
    assert moved.mean() - plain.mean() == pytest.approx(30 / 255, abs=2e-3)
    assert moved.std() == pytest.approx(2 * plain.std(), rel=0.02)


def test_bad_backgrounds_are_refused_clearly():
    with pytest.raises(ValueError, match="at least one image"):
        Backgrounds([])
    with pytest.raises(ValueError, match="grayscale"):
        Backgrounds([np.zeros((64, 64, 3), np.float32)])
    with pytest.raises(ValueError, match="single"):
        Backgrounds(np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="values in"):
        Backgrounds([np.full((64, 64), 3.0, np.float32)])
    with pytest.raises(ValueError, match="Backgrounds"):
        make_sample(DefectConfig(), 0, backgrounds=[np.zeros((64, 64), np.float32)])
