"""Sim-to-real on made-up 'real' images: scores by hand, fine-tuning, the experiment runner and its cache."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from unetlab import UNet, save_checkpoint
from unetlab.baseline import tune_baseline
from unetlab.real import RealSet
from unetlab.evaluate import predict_masks, score_masks
from unetlab.finetune import FinetuneConfig, finetune
from unetlab.real import real_splits
from unetlab.sim2real import Experiment, run_experiments

TINY = FinetuneConfig(crop=32, batch_size=4, min_steps=2, max_steps=2, evals=1, depth=2, base=4)
QUIET = dict(device="cpu", progress=False, log=lambda _: None)


def _fake_real(n: int = 8, seed: int = 0) -> RealSet:
    """Gray images of odd sizes with one dark disc each (class 'Dark') or none (class 'Free')."""
    rng = np.random.default_rng(seed)
    images, masks, classes = [], [], []
    for i in range(n):
        h, w = int(rng.integers(40, 60)), int(rng.integers(36, 70))
        image = np.full((h, w), 0.6, np.float32) + rng.normal(0, 0.02, (h, w)).astype(np.float32)
        mask = np.zeros((h, w), np.uint8)
        if i % 4 != 3:
            cv2.circle(mask, (w // 2, h // 2), 6, 1, -1)
        image[mask > 0] -= 0.4
        images.append(np.clip(image, 0, 1))
        masks.append(mask > 0)
        classes.append("Free" if i % 4 == 3 else "Dark")
    return RealSet(images, masks, classes, [f"{c}__{i}" for i, c in enumerate(classes)])


def test_score_masks_by_hand():
    truth = [np.array([[1, 1, 0, 0]], bool), np.array([[0, 0, 0, 0]], bool), np.array([[1, 0, 0, 0]], bool)]
    real = RealSet([np.zeros((1, 4), np.float32)] * 3, truth, ["A", "Free", "B"], ["a", "f", "b"])
    preds = [np.array([[1, 0, 0, 0]], bool), np.array([[0, 0, 0, 1]], bool), np.array([[1, 0, 0, 0]], bool)]
    s = score_masks(preds, real)
    # pooled: tp 2, fp 1, fn 1 -> Dice 4/6; class A: tp 1 fn 1 -> 2/3; class B: perfect -> 1
    assert s["dice"] == pytest.approx(2 / 3)
    assert s["per_class"] == pytest.approx({"A": 2 / 3, "B": 1.0})
    assert s["class_dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert s["fp_rate_defect_free"] == 1.0 and s["n_defect_free"] == 1
    assert s["per_image_dice"] == pytest.approx([2 / 3, 0.0, 1.0])
    with pytest.raises(ValueError, match="2 predictions for 3 images"):
        score_masks(preds[:2], real)
    with pytest.raises(ValueError, match="shape"):
        score_masks([p[:, :3] for p in preds], real)


def test_score_masks_and_tune_baseline_share_one_class_dice():
    real = _fake_real()
    baseline, rows = tune_baseline(real.images, real.masks, grid={"offset": [10.0, 30.0]}, progress=False,
                                   classes=real.classes)
    scores = score_masks([baseline.predict(image) for image in real.images], real)
    assert scores["class_dice"] == pytest.approx(rows[0]["class_dice"])  # the same images, the same definition
    assert set(scores["per_class"]) == {"Dark"}  # "Free" has no defect pixel: it takes no part
    # Without a single defect pixel there is nothing to average: NaN in both, never a made-up 1.0.
    empty = RealSet(real.images, [np.zeros_like(m) for m in real.masks], real.classes, real.stems)
    assert np.isnan(score_masks([np.zeros_like(m) for m in empty.masks], empty)["class_dice"])
    with pytest.raises(ValueError, match="class Dice needs defect pixels in at least one image"):
        tune_baseline(empty.images, empty.masks, grid={"offset": [10.0]}, progress=False, classes=empty.classes)


def test_finetune_learns_the_fake_defects_and_predictions_keep_every_size():
    real = _fake_real(12)
    before = score_masks(predict_masks(UNet(base=4), real, device="cpu", progress=False), real)["dice"]
    result = finetune(None, real, TINY.replace(min_steps=60, max_steps=60, evals=3, lr=1e-2), **QUIET)
    preds = predict_masks(result.model, real, result.threshold, device="cpu", progress=False)
    assert [p.shape for p in preds] == [m.shape for m in real.masks]
    after = score_masks(preds, real)["dice"]
    assert after > 0.6 and after > before


def test_run_experiments_resumes_from_its_cache(tmp_path):
    real = _fake_real(12)
    pool, test = real_splits(real.classes, seed=0)
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.pt", UNet(base=4), threshold=0.3)
    plan = [Experiment("synthetic", 0), Experiment("synthetic", 2), Experiment("fresh", 2),
            Experiment("baseline", None)]
    cache = tmp_path / "cache"
    kwargs = dict(config=TINY, cache=cache, **QUIET)
    rows = run_experiments(plan, real, {"synthetic": start}, **kwargs)
    assert [(r["start"], r["k"]) for r in rows] == [("synthetic", 0), ("synthetic", 2), ("fresh", 2),
                                                    ("baseline", None)]
    assert rows[0]["threshold"] == 0.3 and rows[0]["checkpoint"] == str(start.resolve())
    assert rows[1]["stems"] == [real.stems[i] for i in pool[:2]] and len(rows[3]["stems"]) == len(pool)
    assert all(0 <= r["dice"] <= 1 and r["n_images"] == len(test) for r in rows)
    assert rows[3]["checkpoint"] is None and "baseline" in rows[3]
    assert sorted(p.name for p in cache.iterdir()) == ["fresh_k2.pt", "rows.json", "synthetic_k2.pt"]
    # A second run reads the cache instead of training; another recipe starts over.
    logged = []
    again = run_experiments(plan, real, {"synthetic": start}, **{**kwargs, "log": logged.append})
    assert again == json.loads(json.dumps(rows))
    assert len(logged) == 1 and "4 of 4 experiments reused" in logged[0]  # nothing trained, and it says so
    # compute=False reads what the cache holds and names what it lacks, training nothing.
    logged.clear()
    more = plan + [Experiment("fresh", 3)]
    assert run_experiments(more, real, {"synthetic": start}, compute=False,
                           **{**kwargs, "log": logged.append}) == again
    assert "1 experiment(s) not in" in logged[-1] and "fresh|k=3" in logged[-1]
    assert sorted(p.name for p in cache.iterdir()) == ["fresh_k2.pt", "rows.json", "synthetic_k2.pt"]
    logged.clear()
    run_experiments(plan[1:2], real, {"synthetic": start}, **{**kwargs, "config": TINY.replace(lr=2e-3),
                                                               "log": logged.append})
    assert "reused" not in logged[0]


def test_two_runs_on_one_cache_keep_each_others_rows(tmp_path):
    # Two benchmark lanes on one split: the second reads the cache, then the first saves a row while the second
    # trains; the second's save must keep that row.
    real = _fake_real(12)
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.pt", UNet(base=4), threshold=0.3)
    kwargs = dict(config=TINY, cache=tmp_path / "cache", progress=False)
    first_lane = []

    def log(message):
        if "labelled image" in message and not first_lane:  # the second lane has read the cache by now
            first_lane.extend(run_experiments([Experiment("baseline", 2)], real, {"synthetic": start}, **kwargs))

    run_experiments([Experiment("synthetic", 0)], real, {"synthetic": start}, log=log, **kwargs)
    assert first_lane
    both = run_experiments([Experiment("baseline", 2), Experiment("synthetic", 0)], real, {"synthetic": start},
                           compute=False, **kwargs)
    assert [(r["start"], r["k"]) for r in both] == [("baseline", 2), ("synthetic", 0)]


@pytest.mark.parametrize("plan, match", [
    ([Experiment("other", 0)], "no checkpoint for start 'other'"),
    ([Experiment("synthetic", 30)], "k must be None"),
    ([Experiment("fresh", 0)], "k must be None"),
    ([Experiment("baseline", 0)], "k must be None"),
    ([Experiment("synthetic", 1)], "k must be None .* or from 0 \\(zero-shot\\) or 2"),
])
def test_run_experiments_refuses_bad_plans(tmp_path, plan, match):
    with pytest.raises(ValueError, match=match):
        run_experiments(plan, _fake_real(8), {"synthetic": tmp_path / "x.pt"}, progress=False)


def test_real_prediction_rows_and_kshot_plot():
    import matplotlib.pyplot as plt

    from unetlab import plot_kshot, show_real_predictions

    real = _fake_real(3)
    fig = show_real_predictions(real.images, real.masks, [~m for m in real.masks], titles=["a", "b", "c"])
    assert len(fig.axes) == 12 and fig.axes[3].get_title() == "errors: Dice 0.000"
    plt.close(fig)
    with pytest.raises(ValueError, match="as many"):
        show_real_predictions(real.images, real.masks[:2], real.masks)
    rows = [dict(start="synthetic", k=0, class_dice=0.2, split=0), dict(start="synthetic", k=5, class_dice=0.4,
            split=0), dict(start="synthetic", k=5, class_dice=0.6, split=1), dict(start="fresh", k=5, class_dice=0.1),
            dict(start="baseline", k=None, class_dice=0.15)]
    fig = plot_kshot(rows, pool_size=140)
    ax = fig.axes[0]
    assert ax.get_legend_handles_labels()[1] == ["synthetic start (mean of 2 splits)", "fresh weights",
                                                 "classical baseline (tuned on the k images)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "5", "all (140)"]
    synthetic = ax.containers[0]  # the errorbar of the first start: mean 0.5 at k = 5 with spread 0.1
    np.testing.assert_allclose(np.asarray(synthetic.lines[0].get_ydata(), float), [0.2, 0.5])
    plt.close(fig)


def test_cache_rows_are_dropped_when_the_starting_weights_change(tmp_path):
    real = _fake_real(8)
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.pt", UNet(base=4))
    kwargs = dict(config=TINY, cache=tmp_path / "cache", device="cpu", progress=False)
    logged = []
    run_experiments([Experiment("synthetic", 2)], real, {"synthetic": start}, log=logged.append, **kwargs)
    other = save_checkpoint(tmp_path / "other.pt", UNet(base=4))  # another start added: the row stays valid
    run_experiments([Experiment("synthetic", 2), Experiment("other", 0)], real, {"synthetic": start, "other": other},
                    log=logged.append, **kwargs)
    assert [m for m in logged if "reused" in m] == [f"1 of 2 experiments reused from {tmp_path / 'cache'} (same "
                                                    "recipe, split and starting weights; delete the folder to "
                                                    "measure them again)"]
    torch.manual_seed(1)
    save_checkpoint(start, UNet(base=4))  # retrained: same path, new weights
    logged.clear()
    run_experiments([Experiment("synthetic", 2)], real, {"synthetic": start}, log=logged.append, **kwargs)
    assert not any("reused" in m for m in logged) and logged[0] == "split 0, synthetic|k=2: 2 labelled image(s)"


def test_good_parts_are_the_images_of_defect_free_classes_not_missed_labels():
    real = _fake_real(8)
    real.masks[0] = np.zeros_like(real.masks[0])  # a 'Dark' image whose label was missed
    assert real.good_parts() == [3, 7]
    assert real.good_parts([7, 0, 1]) == [7]
    real.masks[3][0, 0] = True  # one labelled pixel: 'Free' is no longer a class of good parts
    assert real.good_parts() == []


def test_the_pretrained_start_of_a_split_paints_on_its_defect_free_pool_images_and_is_reused(tmp_path):
    from unetlab import PretrainConfig, load_checkpoint
    from unetlab.sim2real import pretrained_for_split

    real = _fake_real(12)
    cfg = PretrainConfig(size=32, n_train=4, epochs=1, n_val=4, batch_size=4, depth=2, base=4, workers=0)
    logged = []
    path = pretrained_for_split(real, 0, tmp_path, cfg, device="cpu", progress=False, log=logged.append)
    info = load_checkpoint(path)[1]
    free_in_pool = sum(1 for i in real_splits(real.classes, seed=0)[0] if real.classes[i] == "Free")
    assert info["data_config"]["backgrounds"] == free_in_pool > 0 and info["threshold"] is not None
    stamp = path.stat().st_mtime_ns
    assert pretrained_for_split(real, 0, tmp_path, cfg, device="cpu", progress=False, log=logged.append) == path
    assert path.stat().st_mtime_ns == stamp and "reusing" in logged[-1]
    # compute=False (the benchmark's --cached-only) never trains: another recipe gives None, the file is untouched.
    assert pretrained_for_split(real, 0, tmp_path, cfg.replace(lr=1e-3), progress=False, log=logged.append,
                                compute=False) is None
    assert path.stat().st_mtime_ns == stamp and "no pretrained start by this recipe" in logged[-1]
    pretrained_for_split(real, 0, tmp_path, cfg.replace(lr=1e-3), device="cpu", progress=False, log=logged.append)
    assert "pretraining" in logged[-1]  # another recipe: trained again


def test_run_experiments_scores_a_subset_of_the_test_set_but_never_pool_images():
    real = _fake_real(12)
    pool, test = real_splits(real.classes, seed=0)
    row = run_experiments([Experiment("baseline", 2)], real, {}, test=test[:2], progress=False, log=lambda _: None)[0]
    assert row["n_images"] == 2
    with pytest.raises(ValueError, match="subset of split 0's test set"):
        run_experiments([Experiment("baseline", 2)], real, {}, test=pool[:2], progress=False)
