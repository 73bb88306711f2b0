import math

import numpy as np
import pytest
import torch

from unetlab.synth import CLASS_NAMES

from unetlab.metrics import (
    InstanceCount,
    MetricAccumulator,
    class_dice,
    class_recall,
    confusion_counts,
    instance_recall,
    per_image_scores,
    pooled_from_counts,
    pooled_scores,
    scores_by_class,
    scores_from_counts,
)


def _masks(*rows_per_image):
    """Bool (B, H, W) from strings like "1100", one string per row."""
    return torch.tensor([[[c == "1" for c in row] for row in image] for image in rows_per_image])


def test_confusion_counts_by_hand():
    pred = _masks(["110", "010"], ["000", "001"])
    truth = _masks(["100", "011"], ["000", "000"])
    tp, fp, fn, tn = confusion_counts(pred, truth)
    # Image 0: tp at (0,0) and (1,1); fp at (0,1); fn at (1,2); tn at (0,2) and (1,0).
    # Image 1: one fp at (1,2), five tn.
    assert tp.tolist() == [2, 0] and fp.tolist() == [1, 1] and fn.tolist() == [1, 0] and tn.tolist() == [2, 5]
    assert tp.dtype == torch.int64
    # (B, 1, H, W) and numpy give the same counts.
    again = confusion_counts(pred[:, None].numpy(), truth[:, None].numpy())
    assert [c.tolist() for c in again] == [[2, 0], [1, 1], [1, 0], [2, 5]]


def test_scores_by_hand():
    s = per_image_scores(_masks(["110", "010"]), _masks(["100", "011"]))
    # tp 2, fp 1, fn 1: dice 4/6, iou 2/4, precision 2/3, recall 2/3.
    assert s["dice"] == pytest.approx([2 / 3]) and s["iou"] == pytest.approx([0.5])
    assert s["precision"] == pytest.approx([2 / 3]) and s["recall"] == pytest.approx([2 / 3])


@pytest.mark.parametrize(
    "pred, truth, expected",
    [
        # both empty: nothing could go wrong, everything 1
        (["00"], ["00"], dict(dice=1.0, iou=1.0, precision=1.0, recall=1.0)),
        # false positives on a defect-free image: nothing to find (recall 1), every flag wrong
        (["10"], ["00"], dict(dice=0.0, iou=0.0, precision=0.0, recall=1.0)),
        # a defect missed entirely: nothing flagged, so no flag wrong (precision 1), the rest 0
        (["00"], ["01"], dict(dice=0.0, iou=0.0, precision=1.0, recall=0.0)),
    ],
)
def test_empty_mask_rules(pred, truth, expected):
    scores = per_image_scores(_masks(pred), _masks(truth))
    assert {name: values[0] for name, values in scores.items()} == expected


def test_scores_from_counts_zero_over_zero_is_one():
    zero = torch.tensor(0)
    assert {k: v.item() for k, v in scores_from_counts(zero, zero, zero).items()} == dict(
        dice=1.0, iou=1.0, precision=1.0, recall=1.0
    )


def test_pooled_differs_from_mean_of_per_image():
    big_found = ["1111", "1111", "1100"]  # 10 defect pixels, all predicted
    pred = _masks(big_found, ["0000", "0000", "0000"])
    truth = _masks(big_found, ["0000", "0100", "0000"])  # image 1: a 1-pixel defect, missed
    per_image = per_image_scores(pred, truth)
    assert per_image["dice"] == [1.0, 0.0]  # mean 0.5
    pooled = pooled_scores(pred, truth)
    # Pooled: tp 10, fp 0, fn 1 -> dice 20 / 21, iou 10 / 11, precision 1, recall 10 / 11.
    assert pooled == pytest.approx(dict(dice=20 / 21, iou=10 / 11, precision=1.0, recall=10 / 11))


def test_class_recall():
    labels = torch.tensor([[[1, 1, 1, 1], [0, 2, 2, 0]], [[0, 0, 0, 0], [1, 1, 0, 0]]])
    pred = torch.tensor([[[1, 1, 0, 0], [1, 1, 1, 0]], [[0, 0, 0, 0], [1, 0, 0, 1]]], dtype=torch.bool)
    # scratch (1): 6 pixels, predicted at (0,0,0), (0,0,1), (1,1,0) -> 3/6; crack (2): 2 of 2; stain: absent -> NaN.
    recall = class_recall(pred, labels)
    assert list(recall) == ["scratch", "crack", "stain", "pit", "chip", "patch"]  # every name of CLASS_NAMES
    assert recall["scratch"] == 0.5 and recall["crack"] == 1.0 and math.isnan(recall["stain"])
    assert class_recall(pred[:, None], labels.numpy(), class_names=("bg", "a", "b")) == dict(a=0.5, b=1.0)


def test_instance_recall_two_components_one_half_found():
    truth = _masks(["11000", "11000", "00000", "00111", "00000"])  # a 4-pixel square and a 3-pixel bar
    pred = _masks(["10000", "01000", "00000", "00100", "00000"])  # square: 2 of 4 found, bar: 1 of 3
    assert instance_recall(pred, truth) == InstanceCount(found=1, total=2)
    assert instance_recall(pred, truth).recall == 0.5
    assert instance_recall(pred, truth, min_fraction=0.3) == InstanceCount(2, 2)
    assert instance_recall(pred, truth, min_fraction=0.6) == InstanceCount(0, 2)


def test_instance_recall_is_8_connected_and_per_class_with_labels():
    diagonal = _masks(["100", "010", "001"])
    assert instance_recall(diagonal, diagonal).total == 1  # diagonal neighbours form one defect
    labels = torch.tensor([[[1, 1, 3], [0, 0, 3], [0, 0, 0]]])  # a scratch touching a stain
    pred = _masks(["110", "000", "000"])
    assert instance_recall(pred, labels) == InstanceCount(found=1, total=2)
    assert instance_recall(pred, labels > 0) == InstanceCount(found=1, total=1)  # as a mask: one 4-pixel defect


def test_instance_recall_without_defects_is_nan():
    empty = _masks(["00", "00"])
    assert instance_recall(empty, empty) == InstanceCount(0, 0)
    assert math.isnan(instance_recall(empty, empty).recall)


def test_accumulator_matches_the_functions_and_counts_false_alarms():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(6, 1, 16, 16, generator=g)
    labels = torch.zeros(6, 16, 16, dtype=torch.int64)
    labels[0, 2:6, 2:9] = 1
    labels[1, 8:12, 3:5] = 2
    labels[2, 0:3, 0:3] = 3
    labels[2, 10:14, 10:14] = 1
    probs[3:5] = 0.1  # two clean images without a false positive; image 5 is clean with noise -> false alarm
    masks = (labels > 0).float()[:, None]
    acc = MetricAccumulator(threshold=0.5)
    acc.update(probs[:4], masks[:4], labels[:4])
    acc.update(probs[4:], masks[4:], labels[4:])
    report = acc.compute()
    pred, truth = probs > 0.5, masks > 0.5
    assert {k: report[k] for k in ("dice", "iou", "precision", "recall")} == pytest.approx(pooled_scores(pred, truth))
    assert report["per_image"]["dice"] == pytest.approx(per_image_scores(pred, truth)["dice"])
    assert report["mean_dice"] == pytest.approx(np.mean(report["per_image"]["dice"]))
    assert report["n_images"] == 6 and report["n_defect_free"] == 3
    assert report["fp_rate_defect_free"] == pytest.approx(1 / 3)
    present = {CLASS_NAMES[k] for k in labels.unique().tolist() if k}  # the accumulator reports these only
    assert report["class_recall"] == pytest.approx({k: v for k, v in class_recall(pred, labels).items()
                                                    if k in present})
    instances = instance_recall(pred, labels)
    assert (report["instances_found"], report["instances_total"]) == (instances.found, instances.total)
    assert instances.total == 4
    assert report["per_image"]["truth_pixels"] == [28, 8, 25, 0, 0, 0]


def test_accumulator_bool_predictions_without_labels():
    acc = MetricAccumulator()
    truth = _masks(["0110", "0000"], ["0000", "0000"])
    acc.update(truth, truth)
    report = acc.compute()
    assert report["dice"] == 1.0 and report["fp_rate_defect_free"] == 0.0 and report["class_recall"] == {}
    assert report["instance_recall"] == 1.0


def test_accumulator_bad_input():
    acc = MetricAccumulator()
    with pytest.raises(ValueError, match="needs at least one update"):
        acc.compute()
    masks = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\] \(apply torch.sigmoid to logits\)"):
        acc.update(torch.full((2, 1, 8, 8), 3.0), masks)
    with pytest.raises(ValueError, match=r"probs_or_pred and masks of the same shape; got \(2, 8, 8\) and \(2, 4, 4\)"):
        acc.update(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4))
    acc.update(torch.zeros(2, 1, 8, 8), masks, torch.zeros(2, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels with every batch or with none"):
        acc.update(torch.zeros(2, 1, 8, 8), masks)
    with pytest.raises(ValueError, match=r"threshold in \[0, 1\); got 1.5"):
        MetricAccumulator(threshold=1.5)


def test_bad_inputs_get_clear_messages():
    a = _masks(["01", "10"])
    with pytest.raises(ValueError, match=r"pred and truth of the same shape; got \(1, 2, 2\) and \(2, 2, 2\)"):
        confusion_counts(a, torch.cat([a, a]))
    with pytest.raises(ValueError, match=r"pred of shape \(B, H, W\) or \(B, 1, H, W\); got \(2, 2\)"):
        confusion_counts(a[0], a[0])
    with pytest.raises(ValueError, match="truth as a boolean mask.*got dtype torch.float32"):
        confusion_counts(a, a.float())
    with pytest.raises(TypeError, match="pred as a torch.Tensor or numpy array; got list"):
        pooled_scores([[0, 1]], a)
    with pytest.raises(ValueError, match=r"labels in 0..6 \(one per class name\); got values 0..7"):
        class_recall(a, torch.tensor([[[0, 7], [1, 2]]]))
    with pytest.raises(ValueError, match="labels as integer class ids.*got dtype torch.float32"):
        class_recall(a, a.float())
    with pytest.raises(ValueError, match=r"min_fraction in \(0, 1\]; got 0"):
        instance_recall(a, a, min_fraction=0)


# ----------------------------------------------------------------------------------------------------------------
# Pooled scores and class Dice: one definition each


def test_pooled_from_counts_sums_first_then_takes_one_ratio():
    # Two images: (tp, fp, fn) = (2, 1, 1) and (0, 3, 0). Pooled: 2, 4, 1 -> Dice 4/9, precision 1/3, recall 2/3.
    scores = pooled_from_counts(torch.tensor([2, 0]), np.array([1, 3]), torch.tensor([1, 0]))
    assert scores == pytest.approx({"dice": 4 / 9, "iou": 2 / 7, "precision": 1 / 3, "recall": 2 / 3})
    assert pooled_from_counts(0, 0, 0) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}  # 0 / 0 = 1
    pred, truth = _masks(["110", "010"], ["000", "001"]), _masks(["100", "011"], ["000", "000"])
    tp, fp, fn, _ = confusion_counts(pred, truth)
    assert pooled_scores(pred, truth) == pooled_from_counts(tp, fp, fn)


def test_class_dice_averages_the_classes_with_truth_pixels_only():
    # Class 0: tp 1, fp 1, fn 1 -> 1/2. Class 1: perfect -> 1. Class 2: nothing to find but 4 false alarms.
    tp, fp, fn = [1, 3, 0], [1, 0, 4], [1, 0, 0]
    by_class = scores_by_class(tp, fp, fn)
    assert by_class["dice"][:2] == pytest.approx([0.5, 1.0]) and math.isnan(by_class["dice"][2])
    assert class_dice(tp, fp, fn) == pytest.approx(0.75)  # (1/2 + 1) / 2: class 2 takes no part
    assert math.isnan(class_dice([0, 0], [5, 0], [0, 0]))  # no truth pixel in any class: nothing to average

