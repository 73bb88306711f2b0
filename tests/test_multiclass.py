"""Multi-class segmentation: confusion matrix and per-class scores, fit on class labels, argmax prediction,
evaluation, figures and the command line."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from unetlab import (MULTICLASS_LR, QUICK_MULTICLASS, DefectConfig, UNet, confusion_matrix, evaluate_multiclass, fit,
                     load_checkpoint, plot_confusion, predict, predict_labels, scores_from_confusion,
                     show_label_predictions)
from unetlab.cli import main
from unetlab.config import FULL, MULTICLASS, QUICK, run_sizes


def test_confusion_matrix_by_hand():
    truth = torch.tensor([[0, 1, 1, 2, 3, 3]])
    pred = torch.tensor([[0, 1, 2, 2, 3, 0]])
    m = confusion_matrix(pred, truth, 4)
    expected = [[1, 0, 0, 0],   # true background: 1 right
                [0, 1, 1, 0],   # true scratch: 1 right, 1 called crack
                [0, 0, 1, 0],   # true crack: right
                [1, 0, 0, 1]]   # true stain: 1 right, 1 missed (background)
    assert m.tolist() == expected
    assert np.array_equal(confusion_matrix(pred.numpy(), truth.numpy(), 4).numpy(), np.array(expected))


def test_scores_from_confusion_by_hand():
    m = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 1]])
    s = scores_from_confusion(m)
    # scratch: tp 1, fp 0, fn 1 -> Dice 2/3; crack: tp 1, fp 1, fn 0 -> 2/3; stain: tp 1, fp 0, fn 1 -> 2/3
    # background: tp 1, fp 1 (the missed stain pixel), fn 0 -> 2/3
    assert s["dice"] == pytest.approx([2 / 3] * 4)
    assert s["iou"] == pytest.approx([1 / 2] * 4)
    assert s["recall"] == pytest.approx([1.0, 0.5, 1.0, 0.5])
    # A class neither present nor predicted scores 1 (0 / 0), like an empty mask.
    assert scores_from_confusion(torch.tensor([[5, 0], [0, 0]]))["dice"] == [1.0, 1.0]


@pytest.mark.parametrize("pred, truth, n, match", [
    (torch.zeros(1, 4), torch.zeros(1, 5), 4, "same shape"),
    (torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.long), 4, "integer class ids as pred"),
    (torch.full((1, 4), 4), torch.zeros(1, 4, dtype=torch.long), 4, r"ids in \[0, 4\)"),
    (torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long), 1, "n_classes as an int >= 2"),
])
def test_confusion_matrix_bad_input(pred, truth, n, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, truth, n)


def _toy_labels(n: int = 16, seed: int = 0) -> TensorDataset:
    """32x32 images whose class is read off the gray level: < .25 background, then classes 1, 2, 3."""
    images = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    labels = (images[:, 0] * 4).long().clamp(max=3)
    return TensorDataset(images, (labels > 0).float()[:, None], labels)


def _tiny(out_channels: int) -> UNet:
    """Every class covers a quarter of the toy pixels: no prior toward the background (prior=None)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return UNet(out_channels=out_channels, base=4, prior=None)


def test_fit_trains_a_multiclass_model_on_the_labels():
    model = _tiny(4)
    loader = DataLoader(_toy_labels(), batch_size=4)
    # float32 (amp="off"): the test is about the multi-class loop, not about bf16 on CPUs that have it
    history = fit(model, loader, loader, epochs=12, lr=2e-2, progress=False, device="cpu", amp="off")
    assert history.train_loss[-1] < 0.6 * history.train_loss[0]
    assert history.val_dice[-1] > 0.6  # mean Dice of the three defect classes
    scores = evaluate_multiclass(model, loader, progress=False, device="cpu")
    assert scores["n_images"] == 16 and len(scores["matrix"]) == 4
    assert sum(map(sum, scores["matrix"])) == 16 * 32 * 32
    assert scores["mean_dice"] == pytest.approx(np.mean([scores["dice"][c] for c in ("scratch", "crack", "stain")]))
    assert scores["mean_dice"] > 0.6


def test_multiclass_fit_needs_labels_in_range():
    images = torch.rand(4, 1, 32, 32)
    no_labels = DataLoader(TensorDataset(images, torch.zeros(4, 1, 32, 32)), batch_size=2)
    with pytest.raises(ValueError, match="needs batches \\(images, masks, labels\\)"):
        fit(_tiny(4), no_labels, epochs=1, progress=False)
    out_of_range = DataLoader(TensorDataset(images, torch.zeros(4, 1, 32, 32), torch.full((4, 32, 32), 5)),
                              batch_size=2)
    with pytest.raises(ValueError, match=r"class ids in \[0, 4\)"):
        fit(_tiny(4), out_of_range, epochs=1, progress=False)


def test_predict_labels_any_size_and_binary_functions_refuse_a_multiclass_model():
    model = _tiny(4)
    ids = predict_labels(model, np.random.default_rng(0).random((37, 53), dtype=np.float32), device="cpu")
    assert ids.shape == (37, 53) and ids.dtype == np.int64 and 0 <= ids.min() and ids.max() < 4
    with pytest.raises(ValueError, match="binary model"):
        predict(model, np.zeros((32, 32), np.float32), device="cpu")
    with pytest.raises(ValueError, match="multi-class model"):
        predict_labels(_tiny(1), np.zeros((32, 32), np.float32), device="cpu")


def test_multiclass_figures():
    rng = np.random.default_rng(0)
    images = rng.random((2, 16, 16), dtype=np.float32)
    truths = rng.integers(0, 4, (2, 16, 16))
    fig = show_label_predictions(images, truths, truths[::-1], titles=["a", "b"])
    assert len(fig.axes) == 6
    plt.close(fig)
    fig = plot_confusion([[90, 5, 3, 2], [1, 8, 1, 0], [0, 2, 8, 0], [0, 0, 0, 10]])
    assert "90.0%" in [t.get_text().split("\n")[0] for t in fig.axes[0].texts]
    plt.close(fig)
    with pytest.raises(ValueError, match="one row per class name"):
        plot_confusion(np.zeros((3, 3)), class_names=("background", "scratch"))


def test_cli_records_the_preset_window_and_learning_rate_it_trained_with(tmp_path):
    out = tmp_path / "mc"
    assert main(["train", "--task", "multiclass", "--preset", "default", "--crop", "0", "--lr", "0.002", "--quick",
                 "--base", "4", "--out", str(out), "--figures", str(tmp_path / "figures")]) == 0
    _, info = load_checkpoint(out / "model.pt")
    training = json.loads((out / "results.json").read_text())["training"]
    assert (training["preset"], training["crop"], training["lr"]) == ("default", None, 0.002)
    assert info["data_config"] == DefectConfig(size=info["data_config"]["size"]).to_dict()


def test_cli_trains_and_evaluates_a_multiclass_model(tmp_path, capsys):
    out, figures = tmp_path / "mc", tmp_path / "figures"
    assert main(["train", "--task", "multiclass", "--quick", "--base", "4", "--out", str(out),
                 "--figures", str(figures)]) == 0
    model, info = load_checkpoint(out / "model.pt")
    assert model.config["out_channels"] == 4 and model.config["depth"] == 3
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "multiclass" and set(results["test"]["dice"]) == {
        "background", "scratch", "crack", "stain"}
    training = results["training"]
    assert (training["preset"], training["crop"], training["lr"]) == ("multiclass", QUICK_MULTICLASS.crop,
                                                                      MULTICLASS_LR)
    assert info["data_config"] == DefectConfig.preset("multiclass", size=info["data_config"]["size"]).to_dict()
    assert sorted(p.name for p in figures.iterdir()) == ["multiclass_confusion.png", "multiclass_predictions.png"]
    printed = capsys.readouterr().out
    assert "crack" in printed and "Dice" in printed
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--quick", "--figures", str(figures),
                 "--out", str(tmp_path / "scores.json")]) == 0
    assert json.loads((out / "results.json").read_text()) == results  # evaluating does not overwrite it
    again = json.loads((tmp_path / "scores.json").read_text())
    assert again["test"]["dice"] == pytest.approx(results["test"]["dice"])
    with pytest.raises(SystemExit, match="synthetic data only"):
        main(["train", "--task", "multiclass", "--quick", "--data", str(tmp_path), "--out", str(tmp_path / "x")])


def test_run_sizes_per_task_and_a_bad_task_is_named(monkeypatch):
    monkeypatch.delenv("UNETLAB_QUICK", raising=False)
    assert run_sizes("multiclass") == MULTICLASS and run_sizes() == run_sizes("binary") == FULL
    assert FULL.crop == MULTICLASS.crop == 128  # both tasks train on windows
    monkeypatch.setenv("UNETLAB_QUICK", "1")
    assert run_sizes("multiclass") == QUICK_MULTICLASS and run_sizes("binary") == QUICK
    with pytest.raises(ValueError, match=r"task must be one of \('binary', 'multiclass'\); got 'segmentation'"):
        run_sizes("segmentation")


def test_cli_refuses_a_window_larger_than_the_images(tmp_path, capsys):
    assert main(["train", "--task", "multiclass", "--quick", "--crop", "512", "--out", str(tmp_path / "mc")]) == 2
    assert "larger than the images" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--crop must be >= 0; got -1"):
        main(["train", "--quick", "--crop", "-1", "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="--crop windows synthetic images only"):
        main(["train", "--quick", "--crop", "32", "--data", str(tmp_path), "--out", str(tmp_path / "d")])
    with pytest.raises(SystemExit, match="--crop must be a multiple of 8 for a depth-3 UNet; got 100"):
        main(["train", "--task", "multiclass", "--quick", "--crop", "100", "--out", str(tmp_path / "c")])


class _ReadsTheClass(torch.nn.Module):
    """A 'model' whose argmax is the class written in the image as gray level k / 4, so scores are known."""

    config = {"in_channels": 1, "out_channels": 4, "depth": 0}

    def forward(self, x):
        return torch.nn.functional.one_hot((x[:, 0] * 4).long().clamp(max=3), 4).permute(0, 3, 1, 2).float()


def test_mean_dice_is_the_class_dice_of_the_defect_classes_present():
    # Truth: background and scratch only. The model finds the scratch exactly and calls one background pixel
    # crack: crack has Dice 0 (a false alarm, nothing to find), stain 1 (0 / 0). Class Dice leaves both out.
    images = torch.zeros(1, 1, 4, 4)
    images[0, 0, 0, :2] = 0.25  # scratch, predicted scratch
    labels = (images[:, 0] * 4).long()
    images[0, 0, 3, 3] = 0.5  # a background pixel the model calls crack
    loader = DataLoader(TensorDataset(images, (labels > 0).float()[:, None], labels), batch_size=1)
    scores = evaluate_multiclass(_ReadsTheClass(), loader, device="cpu", progress=False)
    assert (scores["dice"]["scratch"], scores["dice"]["crack"], scores["dice"]["stain"]) == (1.0, 0.0, 1.0)
    assert scores["mean_dice"] == 1.0 and scores["mean_iou"] == 1.0
