"""Real use: pretrain, finetune, predict and evaluate on folders the tests make themselves (no real images)."""

from __future__ import annotations

import json
import re
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch

from unetlab import (Backgrounds, DefectConfig, FinetuneConfig, PretrainConfig, RealSet, UNet, best_threshold,
                     defect_mask, finetune, holdout_split, load_backgrounds, load_checkpoint, make_sample, predict,
                     predict_masks, pretrain, save_checkpoint, score_masks, write_dataset)
from unetlab.cli import main
from unetlab.finetune import MixedWindows, image_counts, images_to_be_sure, win_rate

# Without the default refit: the plain run, validated throughout (the refit has tests of its own).
TINY = FinetuneConfig(crop=32, batch_size=2, min_steps=4, max_steps=4, evals=2, depth=2, base=4, refit=False)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A small labelled folder of 64 px images in two classes (stems ``A__i`` / ``B__i``), like a real one."""
    root = tmp_path_factory.mktemp("labelled")
    cfg = DefectConfig(size=64, defect_free=0.0, stains=(1, 1), cracks=(0, 0), scratches=(0, 0))
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(8):
        image, labels = make_sample(cfg, i)
        stem = f"{'AB'[i % 2]}__{i}"
        cv2.imwrite(str(root / "images" / f"{stem}.png"), np.rint(image * 255).astype(np.uint8))
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), (labels > 0).astype(np.uint8) * 255)
    return root


def test_holdout_split_keeps_one_of_every_class_with_two_and_is_seeded():
    classes = ["a"] * 10 + ["b"] * 2 + ["c"]
    train, val = holdout_split(classes, 0.2, seed=3)
    assert sorted(train + val) == list(range(13)) and not set(train) & set(val)
    assert [classes[i] for i in val].count("a") == 2 and [classes[i] for i in val].count("b") == 1
    assert "c" not in [classes[i] for i in val]
    assert holdout_split(classes, 0.2, seed=3) == (train, val) and holdout_split(classes, 0.2, seed=4) != (train, val)
    assert len(holdout_split(["x", "y"], 0.2)[1]) == 1  # singletons only: one is held out anyway
    with pytest.raises(ValueError, match="at least 2 images"):
        holdout_split(["x"])


def test_best_threshold_maximises_the_class_dice():
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    prob = np.where(mask, 0.6, 0.3).astype(np.float32)
    real = RealSet([np.zeros((8, 8), np.float32)], [mask], ["x"], ["a"])
    threshold, score = best_threshold([prob], real)
    assert 0.3 <= threshold < 0.6 and score == 1.0
    assert best_threshold([prob], real, thresholds=(0.1, 0.7)) == (0.1, pytest.approx(8 / 68))


def test_finetune_holds_out_images_keeps_the_last_step_when_they_are_few_and_is_reproducible(labelled):
    data = RealSet.load(labelled, progress=False)
    runs = [finetune(None, data, TINY, seed=1, device="cpu", progress=False, log=lambda _: None) for _ in range(2)]
    a, b = runs
    assert set(a.val_stems).isdisjoint(a.train_stems) and {s[0] for s in a.val_stems} == {"A", "B"}
    assert a.steps == 4 and [e["step"] for e in a.evals] == [2, 4]
    assert a.best_step == 4 and 0 <= a.threshold < 1  # 2 held-out images cannot be sure: fresh weights keep the last
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        torch.testing.assert_close(pa, pb)
    assert not a.model.training


def test_a_pretrained_start_is_validated_at_step_0_and_replaces_the_last_weights_only_when_clearly_better(
        labelled, monkeypatch):
    import sys

    from unetlab.history import History

    finetune_module = sys.modules["unetlab.finetune"]  # the package's `finetune` is the function
    data = RealSet.load(labelled, progress=False)
    start = UNet(depth=2, base=4)
    with torch.no_grad():
        start.head.bias.fill_(30.0)  # calls every pixel a defect: a poor start, but better than finding nothing
    kept = {k: v.clone() for k, v in start.state_dict().items()}

    def ruinous_fit(model, loader, val, *, validate, **kwargs):  # training that only makes things worse
        with torch.no_grad():
            model.head.bias.fill_(-30.0)  # predicts no defect anywhere: class Dice 0
        validate(model)
        return History()

    monkeypatch.setattr(finetune_module, "fit", ruinous_fit)

    def run(**changes):
        model = UNet(depth=2, base=4)
        model.load_state_dict(kept)
        # 4 of the 8 images held out: enough for a sure choice at the default confidence (images_to_be_sure)
        return finetune(model, data, TINY.replace(val_fraction=0.5, **changes), seed=1, device="cpu",
                        progress=False, log=lambda _: None)

    clear = run()  # the start beats the ruined last weights on every held-out image: it is kept
    assert [e["step"] for e in clear.evals] == [0, 2] and clear.evals[1]["val_class_dice"] == 0
    assert clear.evals[0]["val_class_dice"] > 0 and clear.best_step == 0
    for name, value in clear.model.state_dict().items():
        torch.testing.assert_close(value, kept[name])
    assert len(clear.val_stems) == 4
    # With a refit the first of the two parts is validated (step 2), and the start, clearly better, is kept.
    refit = run(refit=True)
    assert [e["step"] for e in refit.evals] == [0, 2] and refit.best_step == 0 and not refit.refitted
    for name, value in refit.model.state_dict().items():
        torch.testing.assert_close(value, kept[name])
    monkeypatch.setattr(finetune_module, "win_rate", lambda *args, **kwargs: 0.5)  # held-out images unsure
    unsure = run()
    assert unsure.best_step == 2 and float(unsure.model.head.bias.detach()[0]) == -30.0  # the last weights stay
    monkeypatch.undo()

    def no_fit(*args, **kwargs):
        raise AssertionError("fit was called although no choice could be sure")

    monkeypatch.setattr(finetune_module, "fit", no_fit)
    model = UNet(depth=2, base=4)
    model.load_state_dict(kept)  # with the default fifth held out: 2 images, too few to be sure of anything
    said = []
    result = finetune(model, data, TINY, seed=1, device="cpu", progress=False, log=said.append)
    assert len(result.val_stems) == 2 and result.best_step == 0 and result.steps == 0  # the start, untrained
    assert "without training" in said[0] and result.history.epochs == 0 and len(result.evals) == 1
    assert result.evals[0]["val_class_dice"] == result.val_score and 0 <= result.threshold < 1
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(value, kept[name])
    # The start's own decision is kept with it: two held-out images cannot choose a threshold either.
    kept_with = finetune(model, data, TINY, seed=1, device="cpu", progress=False, log=said.append,
                         start_decision=(0.85, 0.95))
    assert (kept_with.threshold, kept_with.seed_threshold) == (0.85, 0.95) and "its own decision" in said[-1]
    preds = predict_masks(model, data.subset(
        [data.stems.index(stem) for stem in kept_with.val_stems]), 0.85, 0.95, device="cpu", progress=False)
    assert kept_with.val_score == pytest.approx(score_masks(preds, data.subset(
        [data.stems.index(stem) for stem in kept_with.val_stems]))["class_dice"], nan_ok=True)
    with pytest.raises(ValueError, match="start_decision: seed_threshold"):
        finetune(model, data, TINY, seed=1, device="cpu", progress=False, log=said.append, start_decision=(0.5, 0.4))


def test_a_refit_trains_its_last_steps_on_every_image_and_chooses_the_decision_with_them(labelled, monkeypatch):
    finetune_module = sys.modules["unetlab.finetune"]
    data = RealSet.load(labelled, progress=False)
    calls = []
    real_fit = finetune_module.fit

    def spy(model, loader, *args, **kwargs):
        calls.append((loader, kwargs))
        return real_fit(model, loader, *args, **kwargs)

    monkeypatch.setattr(finetune_module, "fit", spy)
    quiet = dict(seed=1, device="cpu", progress=False, log=lambda _: None)
    plain = finetune(None, data, TINY, **quiet)  # refit=False
    assert not plain.refitted and plain.refit_steps == 0 and len(calls) == 1 and plain.trained_on == plain.train_stems
    assert plain.steps == 4 and calls[0][1]["epochs"] == 2 and [e["step"] for e in plain.evals] == [2, 4]
    said = []
    result = finetune(None, data, TINY.replace(refit=True), **{**quiet, "log": said.append})
    assert result.refitted and len(calls) == 2  # one run, one schedule
    assert "2 validations" not in said[0] and "the last 2 steps on all 8 images (refit)" in said[0]
    # The time to go counts the validations that follow (none here: the second half is not validated).
    assert re.fullmatch(r"first 2 steps took \d+ s and a validation \d+ s: about \d+\.\d min to go", said[1])
    loader, kwargs = calls[1]
    first, every = loader.dataset.datasets
    assert len(first.images) == len(result.train_stems) == 6 and len(every.images) == len(data)
    loader.sampler.set_epoch(1)  # the first half draws windows of the training images, the second of every image
    assert all(i < len(first) for i in loader.sampler)
    loader.sampler.set_epoch(2)
    assert all(len(first) <= i < len(first) + len(every) for i in loader.sampler)
    assert sorted(result.trained_on) == sorted(data.stems)  # the held-out images too
    assert (result.steps, result.best_step, result.refit_steps, kwargs["epochs"]) == (4, 4, 2, TINY.evals)
    # Only the first half is validated: the second trained on the held-out images too.
    assert [e["step"] for e in result.evals] == [2] and np.isnan(result.history.val_dice[1])
    # The decision is chosen by the last weights on the held-out images; the score is the last validation's.
    val = data.subset([data.stems.index(stem) for stem in result.val_stems])
    assert (result.threshold, result.seed_threshold) == finetune_module._flip_decision(result.model, val, "cpu",
                                                                                       "auto")[:2]
    assert result.val_score == result.evals[-1]["val_class_dice"] and not result.model.training
    # A choosing share of 1 leaves no step for every image: the plain run, the same weights.
    whole = finetune(None, data, TINY.replace(refit=True, choosing_share=1.0), **quiet)
    assert not whole.refitted and whole.evals == plain.evals and whole.best_step == plain.best_step
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(value, plain.model.state_dict()[name])
    with pytest.raises(ValueError, match="refit"):
        FinetuneConfig(refit=1)


def test_unanimous_images_are_needed_in_a_number_that_can_reach_the_confidence():
    assert [images_to_be_sure(c) for c in (0.0, 0.5, 0.75, 0.8, 0.9, 0.95)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="keep_confidence"):
        FinetuneConfig(keep_confidence=1.0)


def test_win_rate_is_sure_only_when_many_images_agree():
    rng = np.random.default_rng(0)

    def counts(n, hit):  # n images of 100 defect pixels each, `hit` of them found, 10 false alarms
        return np.stack([hit, np.full(n, 10), 100 - hit], 1)

    many = [c for c in "ABC" for _ in range(10)]
    good, worse = counts(30, rng.integers(60, 80, 30)), counts(30, rng.integers(40, 60, 30))
    assert win_rate(good, worse, many) > 0.99 and win_rate(worse, good, many) < 0.01
    few = ["A", "B"]
    a, b = counts(2, np.array([90, 20])), counts(2, np.array([50, 50]))  # a is better on average, not on both
    assert 0.2 < win_rate(a, b, few) < 0.9
    assert win_rate(a, a, few) == 0  # a tie is not a win
    assert win_rate(a, b, few, seed=3) == win_rate(a, b, few, seed=3)
    free = counts(2, np.array([0, 0]))
    free[:, 2] = 0  # no defect pixel anywhere: nothing to prefer
    assert win_rate(free, free, few) == 0
    with pytest.raises(ValueError, match="win_rate"):
        win_rate(a, b[:1], few)


def test_image_counts_are_the_pixels_of_each_image():
    masks = [np.eye(4, dtype=bool), np.zeros((3, 5), bool)]
    real = RealSet([np.zeros(m.shape, np.float32) for m in masks], masks, ["x", "Free"], ["a", "b"])
    probs = [np.where(np.eye(4), 0.9, 0.0) + np.pad(np.full((1, 1), 0.7), ((0, 3), (3, 0))), np.full((3, 5), 0.6)]
    assert image_counts(probs, real, 0.5).tolist() == [[4, 1, 0], [0, 15, 0]]
    assert image_counts(probs, real, 0.8).tolist() == [[4, 0, 0], [0, 0, 0]]


def test_finetune_steps_follow_the_data_and_bad_settings_are_refused():
    cfg = FinetuneConfig()
    assert cfg.steps_for(5) == cfg.min_steps and cfg.steps_for(10_000) == cfg.max_steps
    assert cfg.steps_for(90) == 90 * cfg.steps_per_image
    # Good parts count up to as many as the images with a defect: 24 defects + 160 good parts count as 48 images.
    assert cfg.steps_for(90, 30) == 90 * cfg.steps_per_image and cfg.steps_for(100, 60) == 80 * cfg.steps_per_image
    assert cfg.steps_for(184, 160) == cfg.min_steps and cfg.steps_for(184, 0) == cfg.max_steps
    assert cfg.steps_for(3, 3) == cfg.min_steps
    with pytest.raises(ValueError, match="n_good <= n_train"):
        cfg.steps_for(3, 4)

    def folder(n, good=0):  # n tiny images, the first ``good`` of them good parts (class "good")
        masks = [np.full((4, 4), i >= good) for i in range(n)]
        return RealSet([np.zeros((4, 4), np.float32)] * n, masks, ["good" if i < good else "x" for i in range(n)],
                       [str(i) for i in range(n)])

    # k = 20 (14 + 6 held out): the steps for all 20, the first 500 validated (5 of 10 validations) on the 14,
    # the last 500 on all 20; the whole magnetic-tile pool (119 + 30, 16 + 4 good) fills the 1,400 steps, the last
    # 700 on all 149.
    assert cfg.refit is True and cfg.plan(folder(14), folder(20)) == (1000, 5, 500)
    assert cfg.plan(folder(119, 16), folder(149, 20)) == (1400, 5, 700)
    assert cfg.replace(refit=False).plan(folder(119, 16), folder(149, 20)) == (1400, 10, 0)
    assert cfg.replace(refit=False).plan(folder(14), folder(20)) == (1000, 10, 0)
    assert cfg.replace(choosing_share=0.3).plan(folder(14), folder(20)) == (1000, 3, 700)
    assert cfg.replace(choosing_share=1.0).plan(folder(14), folder(20)) == (1000, 10, 0)
    assert cfg.replace(min_steps=100, evals=3, choosing_share=0.1).plan(folder(5), folder(6)) == (99, 1, 66)
    for bad in (dict(crop=0), dict(lr=2.0), dict(min_steps=10, max_steps=5), dict(defect_share=1.5),
                dict(refit="yes"), dict(choosing_share=0), dict(choosing_share=1.5)):
        with pytest.raises(ValueError, match="FinetuneConfig"):
            FinetuneConfig(**bad)
    one = RealSet([np.zeros((32, 32), np.float32)], [np.zeros((32, 32), bool)], ["x"], ["a"])
    with pytest.raises(ValueError, match="at least 2 labelled images"):
        finetune(None, one, TINY)
    with pytest.raises(ValueError, match="multiple of 16"):
        finetune(UNet(base=4, depth=4), RealSet(one.images * 2, one.masks * 2, ["x"] * 2, ["a", "b"]),
                 TINY.replace(crop=40), log=lambda _: None)


def test_pretrain_paints_on_backgrounds_and_chooses_a_threshold():
    bank = Backgrounds([np.full((80, 90), 0.5, np.float32), np.full((70, 100), 0.3, np.float32)])
    cfg = PretrainConfig(size=32, n_train=8, epochs=1, n_val=4, batch_size=4, depth=2, base=4, workers=0)
    result = pretrain(cfg, bank, device="cpu", progress=False, log=lambda _: None)
    assert 0 <= result.threshold < 1 and result.history.epochs == 1 and not result.model.training
    assert result.seed_threshold is None or result.threshold < result.seed_threshold < 1
    with pytest.raises(ValueError, match="multiple of 16"):
        PretrainConfig(size=40)
    for bad in (-1, "all", 1.5):
        with pytest.raises(ValueError, match="PretrainConfig.workers"):
            PretrainConfig(workers=bad)


def test_pretrain_gives_the_same_weights_whatever_the_number_of_workers():
    # The order of the samples comes from (seed, epoch) alone; before, a worker process changed it.
    cfg = PretrainConfig(size=32, n_train=12, epochs=2, n_val=4, batch_size=4, depth=2, base=4)
    states = [pretrain(cfg.replace(workers=workers), device="cpu", progress=False, log=lambda _: None).model.state_dict()
              for workers in (0, 1)]
    assert all(torch.equal(states[0][name], states[1][name]) for name in states[0])


class _ProbabilityIsBrightness(torch.nn.Module):
    """A stand-in model whose defect probability is the pixel's gray level."""

    def forward(self, x):
        return torch.logit(x.clamp(1e-4, 1 - 1e-4))


def test_pretrain_counts_false_alarms_on_the_unpainted_backgrounds():
    from unetlab.pretrain import _decision

    truth = torch.zeros(1, 32, 32, dtype=torch.bool)
    truth[:, 8:16, 8:16] = True
    val = [(torch.where(truth, 0.8, 0.2).float(), truth.float())] * 2  # defects at p = 0.8, the rest at p = 0.2
    assert _decision(_ProbabilityIsBrightness(), val, None, 0, "cpu", "off")[:2] == (0.2, None)  # lowest of the perfect
    shaded = np.full((40, 40), 0.2, np.float32)
    shaded[5:30, 5:30] = 0.55  # a real good part with a faint, wide response: a false alarm below 0.55
    threshold, seed, dice = _decision(_ProbabilityIsBrightness(), val, Backgrounds([shaded]), 0, "cpu", "off")
    assert (threshold, seed, dice) == (0.55, None, 1.0)
    # The real pixels are capped at as many as the synthetic ones (2 x 32 x 32), but the first image (in the order
    # seed 0 gives: image 0, then 1) always counts: the big image's false alarm counts, the hotter one's does not.
    big, hot = np.full((100, 100), 0.2, np.float32), shaded.copy()
    big[10:20, 10:20], hot[5:30, 5:30] = 0.65, 0.85
    assert _decision(_ProbabilityIsBrightness(), val, Backgrounds([big, hot]), 0, "cpu", "off")[0] == 0.65


def test_finetune_decision_counts_false_alarms_on_held_out_good_parts():
    from unetlab.finetune import _flip_decision

    defect = np.full((32, 32), 0.2, np.float32)
    defect[8:16, 8:16] = 0.8
    good = np.full((32, 32), 0.2, np.float32)
    good[4:28, 4:28] = 0.55  # a held-out good part with a faint, wide response
    val = RealSet([defect, good], [defect > 0.5, np.zeros((32, 32), bool)], ["Crack", "Free"], ["c", "f"])
    # 0.2 without the good part
    assert _flip_decision(_ProbabilityIsBrightness(), val, "cpu", "off") == (0.55, None, 1.0)


def test_checkpoints_carry_the_threshold(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", UNet(base=4), threshold=0.35)
    assert load_checkpoint(path)[1]["threshold"] == 0.35
    assert load_checkpoint(save_checkpoint(tmp_path / "n.pt", UNet(base=4)))[1]["threshold"] is None
    with pytest.raises(ValueError, match="threshold must be a number in"):
        save_checkpoint(tmp_path / "o.pt", UNet(base=4), threshold=1.5)


def test_load_backgrounds_reads_any_depth_and_colour_and_refuses_a_labelled_folder(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 50), 40000, np.uint16))
    cv2.imwrite(str(tmp_path / "b.png"), np.full((30, 60, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "c.png"), np.full((30, 60, 3), 128, np.uint8))
    with pytest.warns(UserWarning, match="colour") as caught:
        bank = load_backgrounds(tmp_path, progress=False)
    assert [str(w.message) for w in caught] == [f"2 colour images converted to grayscale (the first: "
                                                f"{tmp_path / 'b.png'})"]
    assert len(bank) == 3 and bank.images[0].max() == pytest.approx(40000 / 65535)
    labelled = tmp_path / "set"
    write_dataset(labelled, 2, DefectConfig(size=32), progress=False)
    with pytest.raises(ValueError, match="images/ and masks/"):
        load_backgrounds(labelled)


def test_the_command_line_from_pretrain_to_predict_and_evaluate(labelled, tmp_path, capsys):
    bg = tmp_path / "good"
    bg.mkdir()
    for i in range(2):
        cv2.imwrite(str(bg / f"{i}.png"), np.full((90, 140), 100 + 20 * i, np.uint8))
    assert main(["pretrain", "--backgrounds", str(bg), "--out", str(tmp_path / "pre"), "--quick"]) == 0
    assert main(["finetune", "--data", str(labelled), "--init", str(tmp_path / "pre" / "model.pt"),
                 "--out", str(tmp_path / "ft"), "--quick"]) == 0
    assert "kept the pretrained start, untrained" in capsys.readouterr().out  # 2 held-out images judge nothing
    record = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    model, info = load_checkpoint(tmp_path / "ft" / "model.pt")
    assert info["threshold"] == record["threshold"] and (tmp_path / "ft" / "validation.png").is_file()
    pretrained = load_checkpoint(tmp_path / "pre" / "model.pt")[1]
    assert (info["threshold"], info["seed_threshold"]) == (pretrained["threshold"], pretrained["seed_threshold"])
    assert info["seed_threshold"] == record["seed_threshold"]
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        main(["finetune", "--data", str(labelled), "--init", "none", "--out", str(tmp_path / "ft"), "--quick"])
    assert main(["finetune", "--data", str(labelled), "--init", "none", "--out", str(tmp_path / "fresh"), "--quick",
                 "--backgrounds", str(bg), "--synthetic-share", "0.25"]) == 0
    assert "synthetic defects ('transfer' preset) painted on 2 defect-free image(s)" in capsys.readouterr().out
    fresh = json.loads((tmp_path / "fresh" / "finetune.json").read_text())
    assert fresh["backgrounds"] == str(bg.resolve()) and fresh["steps"] == 8 and record["backgrounds"] is None
    assert fresh["refitted"] and not record["refitted"]  # the default refits; the kept start did not train
    assert main(["finetune", "--data", str(labelled), "--init", "none", "--out", str(tmp_path / "never"), "--quick",
                 "--refit", "never"]) == 0
    assert "kept step 8 of 8: held-out class Dice" in capsys.readouterr().out  # no refit: validated throughout
    never = json.loads((tmp_path / "never" / "finetune.json").read_text())
    assert not never["refitted"] and never["config"]["refit"] is False and len(never["evals"]) == 2
    assert main(["finetune", "--data", str(labelled), "--init", "none", "--out", str(tmp_path / "refit"), "--quick",
                 "--refit"]) == 0
    assert "kept step 8 of 8, its last 4 on all 8 images (refit; held-out score of step 4)" in capsys.readouterr().out
    refit = json.loads((tmp_path / "refit" / "finetune.json").read_text())
    assert refit["refit_steps"] == 4 and refit["config"]["refit"] is True and record["config"]["refit"] is True
    trained_on = load_checkpoint(tmp_path / "refit" / "model.pt")[1]["data_config"]["finetuned_on"]
    assert refit["refitted"] and sorted(trained_on) == sorted(refit["train_stems"] + refit["val_stems"])
    assert fresh["config"]["synthetic_share"] == 0.25 and record["config"]["synthetic_share"] == 0

    big = tmp_path / "big.png"  # a 16-bit image of another size than the training windows
    cv2.imwrite(str(big), np.full((300, 200), 30000, np.uint16))
    assert main(["predict", "--checkpoint", str(tmp_path / "ft" / "model.pt"), "--out", str(tmp_path / "masks"),
                 str(labelled), str(big), "--probs", "--overlays"]) == 0
    out = capsys.readouterr().out
    seed = record["seed_threshold"]
    said = f"threshold {record['threshold']:g}" + (f", seed threshold {seed:g}" if seed is not None else "")
    assert f"{said} (from the checkpoint)" in out
    mask = cv2.imread(str(tmp_path / "masks" / "big.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (300, 200) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert len(list((tmp_path / "masks").glob("*_overlay.png"))) == 9

    assert main(["evaluate", "--checkpoint", str(tmp_path / "ft" / "model.pt"), "--data", str(labelled),
                 "--out", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores["scores"]["per_class"]) == {"A", "B"} and "class_dice" in scores["scores"]
    assert len(scores["per_image_dice"]) == 8


def test_predict_refuses_two_files_with_one_stem_before_any_work(tmp_path):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "part.png"), np.zeros((32, 32), np.uint8))
    with pytest.raises(SystemExit, match="same name 'part'"):
        main(["predict", "--checkpoint", "nope.pt", "--out", str(tmp_path / "o"), str(tmp_path / "x"),
              str(tmp_path / "y")])
    assert not (tmp_path / "o").exists()


def test_synthetic_windows_replace_their_share_of_the_real_ones_by_seed():
    real = [(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))] * 400
    painted = [(torch.ones(1, 8, 8), torch.ones(1, 8, 8))] * 400
    mixed = MixedWindows(real, painted, 0.25, seed=3)
    share = np.mean([float(mixed[i][0].max()) for i in range(400)])
    assert 0.18 < share < 0.32  # about a quarter, drawn per item
    assert [float(mixed[i][0].max()) for i in range(50)] == [float(mixed[i][0].max()) for i in range(50)]
    assert [float(mixed[i][0].max()) for i in range(50)] != [
        float(MixedWindows(real, painted, 0.25, seed=4)[i][0].max()) for i in range(50)]
    assert all(MixedWindows(real, painted, 0.0, seed=3)[i][0].max() == 0 for i in range(50))
    assert all(MixedWindows(real, painted, 1.0, seed=3)[i][0].max() == 1 for i in range(50))
    with pytest.raises(ValueError, match="one length"):
        MixedWindows(real, painted[:3], 0.5, seed=0)


def test_finetune_paints_synthetic_windows_on_good_parts_and_says_so(labelled):
    data = RealSet.load(labelled, progress=False)
    good = [np.full((40, 50), 0.5, np.float32), np.full((70, 30), 0.4, np.float32)]

    painting = TINY.replace(synthetic_share=0.25)

    def plan(data, config=painting, backgrounds=None):  # the line that announces the run
        said = []
        finetune(None, data, config, seed=1, backgrounds=backgrounds, device="cpu", progress=False, log=said.append)
        return said[0]

    assert "real windows only (no defect-free training image" in plan(data)  # both classes have defects
    assert "25% of them synthetic defects ('transfer' preset) painted on 2 defect-free image(s)" in plan(
        data, backgrounds=Backgrounds(good))
    with_free = RealSet(data.images + good, data.masks + [np.zeros(g.shape, bool) for g in good],
                        data.classes + ["Free", "Free"], data.stems + ["F__0", "F__1"])
    assert "painted on 1 defect-free image(s)" in plan(with_free)  # the other good part is held out
    assert plan(data, TINY, Backgrounds(good)).endswith("real windows only")  # the default paints nothing
    with pytest.raises(ValueError, match="backgrounds as a unetlab.Backgrounds"):
        finetune(None, data, painting, backgrounds=good, device="cpu", progress=False, log=lambda _: None)
    for bad in (dict(synthetic_share=1.5), dict(synthetic_preset="nope")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FinetuneConfig(**bad)


def test_predict_and_evaluate_use_the_checkpoints_seed_threshold(labelled, tmp_path, capsys):
    # A briefly trained model (seeded), so that its probabilities spread out: a fresh one answers about its prior
    # everywhere, and quantiles of such a map are ties that decide nothing.
    torch.manual_seed(0)
    model = finetune(None, RealSet.load(labelled, progress=False), TINY.replace(min_steps=30, max_steps=30, lr=1e-2),
                     device="cpu", progress=False, log=lambda _: None).model
    image = RealSet.load(labelled, progress=False).images[0]
    prob = predict(model, image, flips=True)
    threshold, seed = (float(np.quantile(prob, q)) for q in (0.5, 0.999))
    assert not np.array_equal(defect_mask(prob, threshold, seed), prob > threshold)  # the seed removes something
    path = save_checkpoint(tmp_path / "m.pt", model, threshold=threshold, seed_threshold=seed)
    stem = RealSet.load(labelled, progress=False).stems[0]
    assert main(["predict", "--checkpoint", str(path), "--out", str(tmp_path / "masks"),
                 str(labelled / "images" / f"{stem}.png")]) == 0
    assert f"seed threshold {seed:g} (from the checkpoint)" in capsys.readouterr().out
    mask = cv2.imread(str(tmp_path / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED) > 0
    assert np.array_equal(mask, defect_mask(prob, threshold, seed))
    assert main(["predict", "--checkpoint", str(path), "--out", str(tmp_path / "plain"), "--threshold", "0.5",
                 str(labelled / "images" / f"{stem}.png")]) == 0
    assert "threshold 0.5 (from --threshold)" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(path), "--data", str(labelled),
                 "--out", str(tmp_path / "scores.json")]) == 0
    assert json.loads((tmp_path / "scores.json").read_text())["seed_threshold"] == seed


def test_finetune_and_evaluate_read_good_parts_without_masks_when_asked(labelled, tmp_path, capsys):
    root = tmp_path / "mvtec_like"  # good parts come without a mask file, as in MVTec AD or DAGM
    shutil.copytree(labelled, root)
    for i in range(3):
        cv2.imwrite(str(root / "images" / f"ok_{i}.png"), np.full((64, 64), 120 + 10 * i, np.uint8))
    assert main(["finetune", "--data", str(root), "--init", "none", "--out", str(tmp_path / "ft"), "--quick"]) == 2
    assert re.search(r"3 image\(s\) .*ok_0, ok_1, ok_2.*--missing-masks good", capsys.readouterr().err)
    assert not (tmp_path / "ft" / "model.pt").exists()
    data = RealSet.load(root, progress=False, missing_masks="good")
    assert [data.stems[i] for i in data.good_parts()] == ["ok_0", "ok_1", "ok_2"]
    assert main(["finetune", "--data", str(root), "--init", "none", "--out", str(tmp_path / "ft"), "--quick",
                 "--missing-masks", "good"]) == 0
    record = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert {s for s in record["train_stems"] + record["val_stems"] if s.startswith("ok_")} == {"ok_0", "ok_1", "ok_2"}
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ft" / "model.pt"), "--data", str(root),
                 "--missing-masks", "good", "--out", str(tmp_path / "scores.json")]) == 0
    assert "11 images (3 defect-free)" in capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text())["scores"]
    assert scores["n_defect_free"] == 3 and set(scores["per_class"]) == {"A", "B"}


def test_finetune_and_evaluate_read_an_mvtec_category_as_it_ships(labelled, tmp_path, capsys):
    root = tmp_path / "bottle"  # MVTec AD: train/good, test/<defect> with ground_truth/<defect>/<stem>_mask
    for part in ("train/good", "test/good", "test/A", "test/B", "ground_truth/A", "ground_truth/B"):
        (root / part).mkdir(parents=True)
    for path in sorted((labelled / "images").iterdir()):
        cls, n = path.stem.split("__")
        shutil.copy(path, root / "test" / cls / f"{n}.png")
        shutil.copy(labelled / "masks" / path.name, root / "ground_truth" / cls / f"{n}_mask.png")
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            cv2.imwrite(str(root / split / "good" / f"{i}.png"), np.full((64, 64), 120 + 10 * i, np.uint8))
    assert main(["finetune", "--data", str(root), "--init", "none", "--out", str(tmp_path / "ft"), "--quick"]) == 0
    record = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    stems = record["train_stems"] + record["val_stems"]
    assert len(stems) == 13 and {s for s in stems if s.startswith("good__")} == {
        "good__train_0", "good__train_1", "good__train_2", "good__test_0", "good__test_1"}
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ft" / "model.pt"), "--data", str(root),
                 "--out", str(tmp_path / "scores.json")]) == 0
    assert "13 images (5 defect-free)" in capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text())["scores"]
    assert scores["n_defect_free"] == 5 and set(scores["per_class"]) == {"A", "B"}


def test_predict_on_a_folder_of_colour_images_warns_once(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "in" / f"{i}.png"), np.full((32, 32, 3), 60 * i, np.uint8))
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", UNet(depth=2, base=4), threshold=0.5)
    with pytest.warns(UserWarning) as caught:
        assert main(["predict", "--checkpoint", str(path), "--out", str(tmp_path / "out"), str(tmp_path / "in")]) == 0
    assert [str(w.message) for w in caught] == [f"3 colour images converted to grayscale (the first: "
                                                f"{tmp_path / 'in' / '0.png'})"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]


def _with_good_parts(data: RealSet, n: int) -> RealSet:
    """``data`` and ``n`` plain 64 px images of class "good" with empty masks (stems ``g0``, ``g1``, ...)."""
    blank = [np.full((64, 64), 0.4, np.float32) for _ in range(n)]
    return RealSet(data.images + blank, data.masks + [np.zeros((64, 64), bool)] * n, data.classes + ["good"] * n,
                   data.stems + [f"g{i}" for i in range(n)])


def test_step_validation_does_not_predict_the_held_out_good_parts(labelled, monkeypatch):
    # Class Dice, which scores the steps, takes no part in a class without defect pixels: in a folder of many good
    # parts (MVTec AD's train/good) predicting them at every validation would cost most of the time for nothing.
    both = _with_good_parts(RealSet.load(labelled, progress=False), 10)
    calls = []
    monkeypatch.setattr(sys.modules["unetlab.finetune"], "predict",
                        lambda model, image, **kw: calls.append(kw.get("flips", False)) or predict(model, image, **kw))
    result = finetune(None, both, TINY, seed=0, progress=False, log=lambda _: None)
    held_good = [s for s in result.val_stems if s.startswith("g")]
    assert len(held_good) == 2
    assert calls.count(False) == TINY.evals * (len(result.val_stems) - len(held_good))  # the steps' validations
    assert calls.count(True) == len(result.val_stems)  # the final decision still counts the good parts' alarms


def test_final_decision_counts_at_most_as_many_good_pixels_as_defect_image_pixels(labelled, monkeypatch):
    # A folder of hundreds of large good parts (MVTec AD's train/good: 1024 px each) held out a fifth of them, and
    # the final decision predicted every one with flips: minutes for a handful of defect images. Now whole good
    # parts, in held-out order, up to the pixels of the held-out images with defects.
    both = _with_good_parts(RealSet.load(labelled, progress=False), 30)
    flipped = []
    monkeypatch.setattr(sys.modules["unetlab.finetune"], "predict",
                        lambda model, image, **kw: kw.get("flips") and flipped.append(image)
                        or predict(model, image, **kw))
    result = finetune(None, both, TINY, seed=0, progress=False, log=lambda _: None)
    held_good = [s for s in result.val_stems if s.startswith("g")]
    held_defect = len(result.val_stems) - len(held_good)
    assert len(held_good) == 6 and held_defect == 2  # a stratified fifth of each class
    assert len(flipped) == 2 * held_defect  # 2 defect images and 2 good ones of the same size, not all 8
    good_first = both.images[both.stems.index(held_good[0])]
    assert any(image is good_first for image in flipped) and np.isfinite(result.val_score)
