"""predict, evaluate and threshold_sweep, checked against hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from unetlab.evaluate import EvalResult, evaluate, predict, threshold_sweep
from unetlab.model import UNet


class ImageIsProbability(nn.Module):
    """A 'model' whose predicted probability is the input pixel itself: logits = logit(image)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x.clamp(1e-6, 1 - 1e-6))


def tiny_unet() -> UNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return UNet(base=4).eval()


def hand_case(with_labels: bool = False) -> DataLoader:
    """Three 4x4 images whose pixels are the predicted probabilities (see ImageIsProbability).

    image 0: truth = 4 pixels (2 scratch, 2 stain); the prediction (p = 0.9) hits 1 scratch and 1 stain pixel and
             adds 2 false pixels: tp 2, fp 2, fn 2 -> Dice 4/8, IoU 2/6.
    image 1: no defect, nothing predicted -> Dice 1.
    image 2: no defect, 1 pixel predicted at p = 0.7 -> Dice 0, a false positive on a defect-free image.
    Pooled at 0.5: tp 2, fp 3, fn 2 -> Dice 4/9, IoU 2/7, precision 2/5, recall 2/4.
    """
    images = torch.full((3, 1, 4, 4), 0.1)
    labels = torch.zeros(3, 4, 4, dtype=torch.int64)
    labels[0, 0, 0:2] = 1  # scratch pixels (0, 0) and (0, 1)
    labels[0, 3, 2:4] = 3  # stain pixels (3, 2) and (3, 3)
    images[0, 0, 0, 0] = images[0, 0, 3, 2] = 0.9  # found: one scratch pixel, one stain pixel
    images[0, 0, 1, 3] = images[0, 0, 2, 0] = 0.9  # false positives
    images[2, 0, 2, 2] = 0.7
    masks = (labels > 0).float()[:, None]
    tensors = (images, masks, labels) if with_labels else (images, masks)
    return DataLoader(TensorDataset(*tensors), batch_size=2)


def test_evaluate_matches_the_hand_computed_case():
    result = evaluate(ImageIsProbability(), hand_case(with_labels=True), device="cpu", progress=False)
    s = result.summary
    assert s["dice"] == pytest.approx(4 / 9) and s["iou"] == pytest.approx(2 / 7)
    assert s["precision"] == pytest.approx(2 / 5) and s["recall"] == pytest.approx(2 / 4)
    assert s["mean_dice"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert s["fp_rate_defect_free"] == pytest.approx(1 / 2)
    assert s["n_images"] == 3 and s["n_defect_free"] == 2 and s["threshold"] == 0.5
    assert s["class_recall"]["scratch"] == pytest.approx(0.5) and s["class_recall"]["stain"] == pytest.approx(0.5)
    assert "crack" not in s["class_recall"]  # absent from the labels: no recall (and no NaN in JSON)
    # each defect (scratch, stain) has half its pixels predicted: found at the default min_fraction 0.5
    assert (s["instances_found"], s["instances_total"]) == (2, 2)
    rows = result.per_image
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["dice"] for r in rows] == pytest.approx([0.5, 1.0, 0.0])
    assert rows[0]["iou"] == pytest.approx(2 / 6)
    assert [r["truth_pixels"] for r in rows] == [4, 0, 0] and [r["pred_pixels"] for r in rows] == [4, 0, 1]
    assert result.worst(2) == [2, 0] and result.worst(3, with_defects=True) == [0]
    json.dumps(result.to_dict())  # plain values only


def test_evaluate_higher_threshold_drops_the_weak_false_positive():
    result = evaluate(ImageIsProbability(), hand_case(), threshold=0.8, device="cpu", progress=False)
    assert result.summary["fp_rate_defect_free"] == 0 and result.summary["class_recall"] == {}
    assert [r["dice"] for r in result.per_image] == pytest.approx([0.5, 1.0, 1.0])


def test_evaluate_of_a_perfect_model_scores_one_and_restores_the_mode():
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    images[0] = 0.2  # a defect-free image
    data = DataLoader(TensorDataset(images, (images > 0.5).float()), batch_size=4)
    model = ImageIsProbability().train()
    result = evaluate(model, data, device="cpu", progress=False)
    assert model.training  # put back in the mode it came in
    for name in ("dice", "iou", "precision", "recall", "mean_dice", "instance_recall"):
        assert result.summary[name] == 1.0, name
    assert result.summary["fp_rate_defect_free"] == 0.0


def test_threshold_sweep_agrees_with_evaluate_at_each_threshold():
    thresholds = [0.05, 0.5, 0.8, 0.95]
    sweep = threshold_sweep(ImageIsProbability(), hand_case(), thresholds, device="cpu", progress=False)
    for key in ("thresholds", "dice", "iou", "precision", "recall"):
        assert sweep[key].shape == (4,)
    for t, dice, iou in zip(thresholds, sweep["dice"], sweep["iou"]):
        summary = evaluate(ImageIsProbability(), hand_case(), threshold=t, device="cpu", progress=False).summary
        assert (dice, iou) == (pytest.approx(summary["dice"]), pytest.approx(summary["iou"]))
    # t = 0.05 flags every pixel of the 3 images: tp 4, fp 44 -> Dice 8/52; t = 0.95 flags nothing -> Dice 0
    assert sweep["dice"] == pytest.approx([8 / 52, 4 / 9, 4 / 8, 0])
    assert sweep["best_threshold"] == 0.8 and sweep["best_dice"] == pytest.approx(0.5)


def test_threshold_sweep_default_grid_and_bad_thresholds():
    sweep = threshold_sweep(ImageIsProbability(), hand_case(), device="cpu", progress=False)
    assert len(sweep["thresholds"]) == 19 and sweep["thresholds"][0] == 0.05 and sweep["thresholds"][-1] == 0.95
    for bad in ([], [0.5, 1.0], [[0.5]], [-0.1]):
        with pytest.raises(ValueError, match="thresholds must be a non-empty 1-D sequence"):
            threshold_sweep(ImageIsProbability(), hand_case(), bad, device="cpu", progress=False)


@pytest.mark.parametrize("shape", [(37, 50), (5, 37, 50), (32, 32), (3, 1, 37, 50)])
def test_predict_keeps_numpy_shapes_on_odd_sizes(shape):
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    probs = predict(tiny_unet(), images, device="cpu")
    assert isinstance(probs, np.ndarray) and probs.shape == shape and probs.dtype == np.float32
    assert probs.min() >= 0 and probs.max() <= 1


@pytest.mark.parametrize("shape", [(37, 50), (1, 37, 50), (2, 1, 37, 50)])
def test_predict_keeps_tensor_shapes(shape):
    probs = predict(tiny_unet(), torch.rand(shape), device="cpu")
    assert isinstance(probs, torch.Tensor) and probs.shape == shape


def test_predict_equals_the_model_in_eval_mode_and_is_independent_of_batching():
    model = tiny_unet().train()
    images = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    probs = predict(model, images, device="cpu", batch_size=2, amp="off")  # float32, to compare exactly
    assert model.training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(probs, torch.sigmoid(model(images)))  # batch-statistics BatchNorm would differ
    one_by_one = torch.stack([predict(model, image, device="cpu", amp="off") for image in images])  # (1, H, W) each
    torch.testing.assert_close(one_by_one, probs)


def test_predict_pads_by_reflection_and_crops_back():
    model = tiny_unet()
    image = torch.rand(1, 1, 30, 31, generator=torch.Generator().manual_seed(2))
    padded = torch.nn.functional.pad(image, (0, 1, 0, 2), mode="reflect")  # up to 32 x 32 (multiple of 4)
    with torch.no_grad():
        expected = torch.sigmoid(model(padded))[..., :30, :31]
    # (the sigmoid runs on the cropped logits, so SIMD rounding may differ in the last bit)
    torch.testing.assert_close(predict(model, image, device="cpu", amp="off"), expected, rtol=0, atol=1e-6)


def test_predict_divides_uint8_by_255():
    gray = np.random.default_rng(3).integers(0, 256, size=(32, 32), dtype=np.uint8)
    model = tiny_unet()
    np.testing.assert_allclose(predict(model, gray, device="cpu"),
                               predict(model, gray.astype(np.float32) / 255, device="cpu"), atol=1e-6)


@pytest.mark.parametrize(
    "images, error, message",
    [
        (np.zeros((32, 32, 3), np.float32), ValueError, "colour channels: convert to grayscale first, e.g. cv2"),
        (torch.zeros(2, 3, 32, 32), ValueError, "got 3 channels .*convert to grayscale first"),
        (torch.zeros(3, 32, 32), ValueError, "got 3 channels .*convert to grayscale first"),
        (np.full((32, 32), np.nan, np.float32), ValueError, "NaN or infinite"),
        (np.full((32, 32), 200.0), ValueError, r"in \[0, 1\]; got values 200\.\.200 .*divide by 255"),
        (np.full((32, 32), -0.5), ValueError, r"in \[0, 1\]; got values -0.5"),
        (np.zeros(32, np.float32), ValueError, r"numpy array of shape \(H, W\), \(N, H, W\) or \(N, 1, H, W\)"),
        (np.zeros((2, 2, 32, 32), np.float32), ValueError, r"of shape \(H, W\), \(N, H, W\) or \(N, 1, H, W\)"),
        (np.zeros((3, 64, 48), np.float32), ValueError,
         r"shape \(3, 64, 48\) is ambiguous: a colour image with its 3 channels first, or a stack of 3 grayscale "
         r"images\? .*images\[:, None\]"),
        (np.zeros((4, 64, 48), np.uint8), ValueError, r"shape \(4, 64, 48\) is ambiguous"),
        (np.zeros((32, 0), np.float32), ValueError, r"predict expects non-empty images; got shape \(32, 0\)"),
        (np.zeros((32, 32), np.int32), ValueError, "uint8 gray levels; got dtype torch.int32"),
        (np.zeros((2, 2), np.float32), ValueError, "at least 4 x 4 pixels"),
        (np.zeros((0, 32, 32), np.float32), ValueError, "no images"),
        ([[0.0, 0.5]], TypeError, "numpy array or a torch tensor; got list"),
    ],
)
def test_predict_rejects_bad_images(images, error, message):
    with pytest.raises(error, match=message):
        predict(tiny_unet(), images, device="cpu")


def test_predict_and_evaluate_refuse_a_model_that_outputs_nan():
    model = tiny_unet()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="the model's output holds NaN or infinite values"):
        predict(model, np.zeros((32, 32), np.float32), device="cpu")
    with pytest.raises(ValueError, match="the model's output holds NaN or infinite values"):
        evaluate(model, hand_case(), device="cpu", progress=False)


def test_predict_rejects_a_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        predict(tiny_unet(), np.zeros((32, 32), np.float32), device="cpu", batch_size=0)


def test_evaluate_rejects_bad_input():
    model = ImageIsProbability()
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\)"):
        evaluate(model, hand_case(), threshold=1.0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="empty loader"):
        evaluate(model, [], device="cpu", progress=False)
    colour = DataLoader(TensorDataset(torch.rand(2, 3, 8, 8), torch.zeros(2, 1, 8, 8)), batch_size=2)
    with pytest.raises(ValueError, match="got 3 channels: convert colour images to grayscale"):
        evaluate(tiny_unet(), colour, device="cpu", progress=False)


def test_eval_result_worst_breaks_ties_by_index():
    rows = [{"index": i, "dice": d, "truth_pixels": 1} for i, d in enumerate([0.5, 0.2, 0.5, 0.9])]
    assert EvalResult(summary={}, per_image=rows).worst(3) == [1, 0, 2]


def test_large_images_are_predicted_in_tiles_with_the_whole_image_result(monkeypatch):
    import sys

    evaluate_module = sys.modules["unetlab.evaluate"]  # (the package's `evaluate` name is the function)

    image = np.random.default_rng(0).random((200, 330)).astype(np.float32)
    for depth in (2, 4):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(depth)
            model = UNet(base=4, depth=depth).eval()
        whole = predict(model, image, device="cpu")
        calls = []
        real_whole = evaluate_module._whole_logits
        monkeypatch.setattr(evaluate_module, "TILE", 160)
        monkeypatch.setattr(evaluate_module, "_whole_logits",
                            lambda m, x, k: calls.append(x.shape) or real_whole(m, x, k))
        tiled = predict(model, image, device="cpu")
        monkeypatch.undo()
        assert len(calls) > 1 and all(max(shape[-2:]) < 330 for shape in calls)  # never the whole image at once
        np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_flip_averaging_is_the_mean_of_the_four_flipped_predictions():
    image = np.random.default_rng(1).random((40, 56)).astype(np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UNet(base=4).eval()
    views = [predict(model, np.ascontiguousarray(image[::a, ::b]), device="cpu")[::a, ::b]
             for a, b in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    np.testing.assert_allclose(predict(model, image, device="cpu", flips=True), np.mean(views, axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="flips must be True or False"):
        predict(model, image, flips="yes")


def test_predict_runs_the_network_in_the_precision_amp_asks_for(monkeypatch):
    import sys

    image = np.random.default_rng(4).random((64, 48)).astype(np.float32)
    model = tiny_unet()
    exact = predict(model, image, device="cpu", amp="off")
    half = predict(model, image, device="cpu", amp="bf16")
    assert half.dtype == np.float32 and not np.array_equal(half, exact)  # bfloat16 ran: other round-off
    np.testing.assert_allclose(half, exact, atol=0.02)  # probabilities, not bits: the same picture
    monkeypatch.setattr(sys.modules["unetlab.device"], "cpu_has_native_bf16", lambda: False)
    np.testing.assert_array_equal(predict(model, image, device="cpu"), exact)  # "auto" without native bf16: fp32
    monkeypatch.setattr(sys.modules["unetlab.device"], "cpu_has_native_bf16", lambda: True)
    np.testing.assert_array_equal(predict(model, image, device="cpu"), half)  # ... and with it: bf16
    with pytest.raises(ValueError, match="amp must be one of"):
        predict(model, image, amp="half")
