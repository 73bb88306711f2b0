"""From probabilities to a mask: the threshold, the seed threshold (hysteresis), and choosing them."""

from __future__ import annotations

import numpy as np
import pytest

from unetlab import UNet, best_decision, defect_mask, load_checkpoint, save_checkpoint


def two_regions() -> tuple[np.ndarray, np.ndarray]:
    """A 16 x 16 probability map: a true defect (rows 2-4) with a confident core, and a faint false region
    (rows 10-12) that never reaches 0.9; and the truth mask."""
    prob = np.full((16, 16), 0.2, np.float32)
    prob[2:5, 2:8] = 0.6
    prob[3, 4] = 0.99
    prob[10:13, 2:12] = 0.7
    truth = np.zeros((16, 16), bool)
    truth[2:5, 2:8] = True
    return prob, truth


def test_a_seed_threshold_keeps_only_the_regions_with_a_confident_core():
    prob, truth = two_regions()
    assert np.array_equal(defect_mask(prob, 0.5), prob > 0.5)
    assert np.array_equal(defect_mask(prob, 0.5, 0.9), truth)  # the whole seeded region, not only its core
    assert not defect_mask(prob, 0.5, 0.995).any()
    diagonal = np.zeros((4, 4), np.float32)
    diagonal[0, 0], diagonal[1, 1] = 0.95, 0.6  # 8-connected: a diagonal neighbour belongs to the region
    assert defect_mask(diagonal, 0.5, 0.9).sum() == 2


@pytest.mark.parametrize("threshold, seed, message", [(1.0, None, "threshold must be"), (0.5, 0.5, "seed_threshold"),
                                                      (0.5, 1.0, "seed_threshold"), (0.5, "x", "seed_threshold")])
def test_bad_decisions_are_refused(threshold, seed, message):
    with pytest.raises(ValueError, match=message):
        defect_mask(np.zeros((4, 4), np.float32), threshold, seed)


def test_defect_mask_wants_one_probability_map():
    with pytest.raises(ValueError, match=r"\(H, W\) probability map; got shape \(1, 4, 4\)"):
        defect_mask(np.zeros((1, 4, 4), np.float32), 0.5)


def test_best_decision_takes_a_seed_threshold_only_when_it_scores_better():
    prob, truth = two_regions()
    assert best_decision([prob], [truth], ["a"]) == (0.2, 0.9, 1.0)  # the lowest threshold and seed on ties
    threshold, seed, score = best_decision([prob], [truth], ["a"], seed_thresholds=())
    assert seed is None and score < 1.0
    clean = np.where(truth, 0.8, 0.1).astype(np.float32)  # nothing to remove: no seed threshold
    assert best_decision([clean], [truth], ["a"])[1:] == (None, 1.0)
    assert best_decision([clean], [np.zeros_like(truth)], ["a"])[1] is None  # no defect pixel: NaN, no choice
    with pytest.raises(ValueError, match="one of each per image"):
        best_decision([prob], [truth, truth], ["a"])



def test_good_parts_false_alarms_count_only_when_asked():
    prob, truth = two_regions()
    prob[10:13] = 0.2  # the defect image alone: threshold 0.2 is perfect there
    good = np.full((16, 16), 0.2, np.float32)
    good[4:12, 4:12] = 0.5  # a good part with a faint, wide response above 0.2 and below 0.6
    no_defect = np.zeros_like(truth)
    # Class Dice alone skips the class with no truth pixel, so the lowest perfect threshold wins.
    assert best_decision([prob, good], [truth, no_defect], ["a", "free"]) == (0.2, None, 1.0)
    threshold, seed, score = best_decision([prob, good], [truth, no_defect], ["a", "free"], count_good_parts=True)
    assert (threshold, seed, score) == (0.5, None, 1.0)  # 0.5 clears the good part and keeps the defect
    at_02 = best_decision([prob, good], [truth, no_defect], ["a", "free"], [0.2], (), count_good_parts=True)
    assert at_02[2] == pytest.approx(2 * 18 / (2 * 18 + 64))  # the good part's 64 false positives count
    # Two defect classes share them: 32 false positives each.
    two = best_decision([prob, prob, good], [truth, truth, no_defect], ["a", "b", "free"], [0.2], (),
                        count_good_parts=True)
    assert two[2] == pytest.approx(2 * 18 / (2 * 18 + 32))
    nothing = best_decision([good], [no_defect], ["free"], count_good_parts=True)  # no defect pixel: no choice
    assert nothing[1] is None and np.isnan(nothing[2])

def test_checkpoints_carry_the_seed_threshold(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", UNet(base=4), threshold=0.35, seed_threshold=0.9)
    info = load_checkpoint(path)[1]
    assert (info["threshold"], info["seed_threshold"]) == (0.35, 0.9)
    assert load_checkpoint(save_checkpoint(tmp_path / "n.pt", UNet(base=4), threshold=0.4))[1]["seed_threshold"] is None
    with pytest.raises(ValueError, match="needs a threshold below it"):
        save_checkpoint(tmp_path / "o.pt", UNet(base=4), seed_threshold=0.9)
    with pytest.raises(ValueError, match=r"seed_threshold must be None or a number in \(threshold, 1\)"):
        save_checkpoint(tmp_path / "p.pt", UNet(base=4), threshold=0.5, seed_threshold=0.3)


def test_within_pixel_budget_takes_whole_images_in_order_and_always_the_first():
    from unetlab.decision import within_pixel_budget
    assert within_pixel_budget([4, 4, 4], 8) == [0, 1]
    assert within_pixel_budget([4, 9, 1], 8) == [0]  # whole images in order: it stops at the first that overflows
    assert within_pixel_budget([100, 1], 8) == [0]  # the first counts whatever its size
    assert within_pixel_budget([], 8) == [] and within_pixel_budget([3], 0) == [0]
