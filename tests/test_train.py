"""fit, History and checkpoints on a toy task a tiny UNet learns in seconds (mask = image > 0.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import unetlab
from unetlab.evaluate import evaluate
from unetlab.losses import BCEDiceLoss
from unetlab.model import UNet
from unetlab.checkpoint import load_checkpoint, save_checkpoint, weights_digest
from unetlab.history import History
from unetlab.train import fit


def tiny_unet(seed: int = 0) -> UNet:
    """UNet(base=4) with weights drawn from ``seed``, leaving the global RNG as it was. The toy masks cover
    half the pixels, so the head starts at that prior (0.5), not at the 1% of real defects."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet(base=4, prior=0.5)


def toy_batches(n: int = 16, seed: int = 0) -> TensorDataset:
    """Random 32x32 images whose defect mask is simply ``image > 0.5``."""
    images = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(images, (images > 0.5).float())


def loader(shuffle: bool = False, n: int = 16, seed: int = 0) -> DataLoader:
    return DataLoader(toy_batches(n, seed), batch_size=4, shuffle=shuffle)


FAST = dict(lr=1e-2, progress=False, device="cpu")


class InterruptingLoader:
    """Yields the batches of ``base`` and raises KeyboardInterrupt after one batch of pass ``interrupt_pass``."""

    def __init__(self, base: DataLoader, interrupt_pass: int) -> None:
        self.base, self.interrupt_pass, self.passes = base, interrupt_pass, 0

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self):
        self.passes += 1
        for i, batch in enumerate(self.base):
            if self.passes == self.interrupt_pass and i == 1:
                raise KeyboardInterrupt
            yield batch


def test_fit_learns_the_toy_task_and_records_every_epoch():
    model = tiny_unet()
    history = fit(model, loader(shuffle=True), loader(seed=1), epochs=5, **FAST)
    assert history.epochs == 5
    for values in (history.train_loss, history.val_loss, history.val_dice, history.lr, history.seconds):
        assert len(values) == 5 and all(math.isfinite(v) for v in values)
    assert history.train_loss[-1] < 0.85 * history.train_loss[0]
    assert history.val_dice[-1] > history.val_dice[0] + 0.1
    assert history.lr == [1e-2] * 5  # constant by default


def test_fit_without_validation_leaves_the_validation_lists_empty():
    history = fit(tiny_unet(), loader(), epochs=2, **FAST)
    assert history.epochs == 2 and history.val_loss == [] and history.val_dice == []
    assert history.best_epoch == 2


def test_a_validate_callback_may_skip_epochs_and_must_not_return_nan():
    scores = iter([0.2, None, 0.5, None])  # epochs 2 and 4 not scored (e.g. trained on the held-out images)
    history = fit(tiny_unet(), loader(), epochs=4, validate=lambda model: next(scores), **FAST)
    assert history.val_dice[0::2] == [0.2, 0.5] and all(math.isnan(v) for v in history.val_dice[1::2])
    assert history.best_epoch == 3
    with pytest.raises(ValueError, match="returned NaN"):
        fit(tiny_unet(), loader(), epochs=1, validate=lambda model: float("nan"), **FAST)


def test_fit_accepts_batches_with_labels():
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    labels = (images[:, 0] > 0.5).long() * 2
    data = DataLoader(TensorDataset(images, (images > 0.5).float(), labels), batch_size=4)
    assert fit(tiny_unet(), data, data, epochs=1, **FAST).epochs == 1


def test_progress_bar_shows_epoch_loss_and_val_dice(capsys):
    fit(tiny_unet(), loader(), loader(seed=1), epochs=2, **{**FAST, "progress": True})
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss=" in err and "val_dice=" in err and "8/8" in err
    fit(tiny_unet(), loader(), epochs=1, **FAST)
    assert capsys.readouterr().err == ""


def test_fit_leaves_the_global_rng_untouched():
    before = torch.random.get_rng_state()
    fit(tiny_unet(), loader(shuffle=True), epochs=1, **FAST)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("channels_last, expected", [("auto", True), (False, False)])
def test_fit_sets_the_memory_format(channels_last, expected):
    model = tiny_unet()
    fit(model, loader(n=4), epochs=1, channels_last=channels_last, **FAST)
    weight = model.encoder[0][3].weight  # (4, 4, 3, 3): the layouts differ
    assert weight.is_contiguous(memory_format=torch.channels_last) == expected


def test_fit_bf16_autocast_on_cpu_trains():
    history = fit(tiny_unet(), loader(), epochs=2, amp="bf16", **FAST)
    assert all(math.isfinite(v) for v in history.train_loss)


@pytest.mark.parametrize(
    "scheduler, last_lr",
    [
        ("onecycle", 1e-2 / 25 / 1e4),  # OneCycleLR's defaults: start at max_lr / 25, end 1e4 times lower
        ("cosine", 1e-2 * (1 + math.cos(math.pi * 11 / 12)) / 2),  # step 11 of 12 (3 epochs x 4 batches)
    ],
)
def test_schedulers_step_per_batch(scheduler, last_lr):
    history = fit(tiny_unet(), loader(), epochs=3, scheduler=scheduler, **FAST)
    assert max(history.lr) <= 1e-2 and history.lr[0] > 1e-3
    assert history.lr[-1] == pytest.approx(last_lr, rel=1e-6)


def test_history_round_trips_through_a_dict():
    history = History(train_loss=[3.0, 2.0, 1.5], val_loss=[3.1, 2.2, 2.4], val_dice=[0.2, 0.7, 0.7],
                      lr=[1e-4] * 3, seconds=[1.0, 1.1, 0.9])
    assert History.from_dict(history.to_dict()) == history
    assert history.best_epoch == 2  # the first of the tied best epochs, counted from 1
    assert History().best_epoch is None
    with pytest.raises(ValueError, match="unknown keys"):
        History.from_dict({"train_loss": [1.0], "accuracy": [0.5]})


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_unet()
    path = tmp_path / "runs" / "model.pt"
    data_config = {"size": 32, "brightness": (70.0, 170.0), "surface": "mixed"}
    history = fit(model, loader(), loader(seed=1), epochs=1, checkpoint=path, data_config=data_config, **FAST)
    loaded, info = load_checkpoint(path)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert info["model_config"] == model.config
    assert info["data_config"] == data_config
    assert info["history"] == history
    assert info["epoch"] == 1
    assert info["unetlab_version"] == unetlab.__version__
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary files left


def test_save_checkpoint_round_trip(tmp_path):
    model = tiny_unet(seed=7).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, history=History(train_loss=[1.0]), epoch=1)
    loaded, info = load_checkpoint(path)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert info["history"].train_loss == [1.0] and info["data_config"] is None


def test_checkpoint_holds_the_best_epoch_not_the_last(tmp_path):
    # Training toward the inverted masks makes validation Dice fall, so the first epoch is the best one.
    bce_dice = BCEDiceLoss()
    model = tiny_unet()
    history = fit(model, loader(), loader(seed=1), epochs=3, checkpoint=tmp_path / "m.pt",
                  loss_fn=lambda logits, masks: bce_dice(logits, 1 - masks), **FAST)
    assert history.best_epoch == 1 and history.val_dice[-1] < history.val_dice[0]
    loaded, info = load_checkpoint(tmp_path / "m.pt")
    assert info["epoch"] == 1 and info["history"].epochs == 3
    best_dice = evaluate(loaded, loader(seed=1), device="cpu", progress=False).summary["dice"]
    last_dice = evaluate(model, loader(seed=1), device="cpu", progress=False).summary["dice"]
    assert best_dice == pytest.approx(history.val_dice[0], abs=1e-12)
    assert last_dice == pytest.approx(history.val_dice[-1], abs=1e-12)


def test_resume_continues_exactly_where_training_stopped(tmp_path):
    straight = fit(tiny_unet(), loader(shuffle=True), loader(seed=1), epochs=4, **FAST)
    path = tmp_path / "m.pt"
    first = fit(tiny_unet(), loader(shuffle=True), loader(seed=1), epochs=2, checkpoint=path, **FAST)
    resumed_model = tiny_unet(seed=99)  # weights are overwritten by the checkpoint's
    resumed = fit(resumed_model, loader(shuffle=True), loader(seed=1), epochs=4, checkpoint=path, resume=True,
                  **FAST)
    assert resumed.epochs == 4 and resumed.train_loss[:2] == first.train_loss
    np.testing.assert_allclose(resumed.train_loss, straight.train_loss, rtol=1e-5)
    np.testing.assert_allclose(resumed.val_dice, straight.val_dice, rtol=1e-5)
    assert load_checkpoint(path)[1]["history"].epochs == 4


def test_resume_refuses_incompatible_checkpoints(tmp_path):
    save_checkpoint(tmp_path / "weights_only.pt", tiny_unet())
    with pytest.raises(ValueError, match="no training state"):
        fit(tiny_unet(), loader(), epochs=2, checkpoint=tmp_path / "weights_only.pt", resume=True, **FAST)
    fit(tiny_unet(), loader(), epochs=1, checkpoint=tmp_path / "m.pt", **FAST)
    with pytest.raises(ValueError, match="cannot resume .* holds UNet"):
        fit(UNet(base=8), loader(), epochs=2, checkpoint=tmp_path / "m.pt", resume=True, **FAST)
    with pytest.raises(ValueError, match="scheduler"):
        fit(tiny_unet(), loader(), epochs=2, checkpoint=tmp_path / "m.pt", resume=True, scheduler="cosine", **FAST)
    with pytest.raises(ValueError, match="trained without a val_loader"):
        fit(tiny_unet(), loader(), loader(), epochs=2, checkpoint=tmp_path / "m.pt", resume=True, **FAST)
    fit(tiny_unet(), loader(), epochs=1, checkpoint=tmp_path / "onecycle.pt", scheduler="onecycle", **FAST)
    with pytest.raises(ValueError, match="planned for 1 epochs; resume with epochs=1"):
        fit(tiny_unet(), loader(), epochs=2, checkpoint=tmp_path / "onecycle.pt", resume=True,
            scheduler="onecycle", **FAST)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit(tiny_unet(), loader(), epochs=2, checkpoint=tmp_path / "missing.pt", resume=True, **FAST)


def test_keyboard_interrupt_leaves_the_last_finished_epoch_on_disk(tmp_path):
    path = tmp_path / "m.pt"
    interrupting = InterruptingLoader(loader(), interrupt_pass=3)  # pass 1: fit's first-batch check
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_unet(), interrupting, epochs=3, checkpoint=path, **FAST)
    assert interrupting.passes == 3
    _, info = load_checkpoint(path)
    assert info["epoch"] == 1 and info["history"].epochs == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    history = fit(tiny_unet(), loader(), epochs=3, checkpoint=path, resume=True, **FAST)
    assert history.epochs == 3


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", tiny_unet(seed=1), epoch=1)
    before = path.read_bytes()

    def dies_mid_write(obj, file):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny_unet(seed=2), epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    assert load_checkpoint(path)[1]["epoch"] == 1


def test_load_checkpoint_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    good = save_checkpoint(tmp_path / "good.pt", tiny_unet())
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.pt: it is truncated, corrupt"):
        load_checkpoint(tmp_path / "truncated.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="notes.pt: it is truncated, corrupt"):
        load_checkpoint(tmp_path / "notes.pt")
    torch.save(tiny_unet(), tmp_path / "pickled_module.pt")  # a whole pickled model, not weights
    with pytest.raises(ValueError, match="not a weights-only torch file"):
        load_checkpoint(tmp_path / "pickled_module.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a unetlab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    payload = torch.load(good, weights_only=True)
    payload["model_config"]["base"] = 8
    payload["sha256"] = weights_digest(payload)  # consistent, so the check that follows the digest answers
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="mismatch.pt do not fit"):
        load_checkpoint(tmp_path / "mismatch.pt")
    payload["model_config"]["depth"] = 0
    payload["sha256"] = weights_digest(payload)
    torch.save(payload, tmp_path / "bad_config.pt")
    with pytest.raises(ValueError, match="invalid model_config"):
        load_checkpoint(tmp_path / "bad_config.pt")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=0.0), "lr must be a finite number > 0"),
        (dict(lr=-1e-3), "lr must be a finite number > 0"),
        (dict(lr=float("nan")), "lr must be a finite number > 0"),
        (dict(epochs=0), "epochs must be an int >= 1"),
        (dict(scheduler="step"), "scheduler must be one of"),
        (dict(amp="fp16"), "amp='fp16' needs a CUDA or MPS device"),
        (dict(amp="yes"), "amp must be one of"),
        (dict(channels_last="on"), "channels_last must be"),
        (dict(resume=True), "resume=True needs the checkpoint path"),
        (dict(seed=-1), "seed must be an int >= 0"),
        (dict(data_config={"sigma": np.float64(1.0)}), r"data_config\['sigma'\] is a numpy.float64"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(tiny_unet(), loader(), **{**FAST, "epochs": 1, **kwargs})


def test_fit_rejects_bad_loaders_before_training():
    model = tiny_unet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="train_loader is empty"):
        fit(model, DataLoader(toy_batches(0), batch_size=4), **FAST)
    colour = TensorDataset(torch.rand(4, 3, 32, 32), torch.zeros(4, 1, 32, 32))
    with pytest.raises(ValueError, match="train_loader: .*got 3 channels: convert colour images to grayscale"):
        fit(model, DataLoader(colour, batch_size=2), **FAST)
    wrong_masks = TensorDataset(torch.rand(4, 1, 32, 32), torch.zeros(4, 32, 32))
    with pytest.raises(ValueError, match=r"val_loader: expected masks of shape \(2, 1, 32, 32\)"):
        fit(model, loader(), DataLoader(wrong_masks, batch_size=2), **FAST)
    with pytest.raises(ValueError, match=r"expected batches \(images, masks\)"):
        fit(model, [torch.rand(2, 1, 32, 32)], **FAST)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing was trained


def test_a_nan_validation_dice_never_wins_the_best_epoch():
    # A multi-class validation set without any defect pixel has no class Dice (NaN): that epoch is never "best".
    assert History(train_loss=[1.0, 0.9, 0.8], val_dice=[float("nan"), 0.4, 0.3]).best_epoch == 2
    assert History(train_loss=[1.0, 0.9], val_dice=[float("nan")] * 2).best_epoch == 1


def _with_masks(masks_scale: float = 1.0, nan_image: bool = False, n: int = 8, bad_batch: int = 0) -> DataLoader:
    """The toy batches with batch ``bad_batch`` spoiled: its masks times ``masks_scale``, or a NaN pixel."""
    images = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = (images > 0.5).float()
    rows = slice(4 * bad_batch, 4 * bad_batch + 4)
    masks[rows] *= masks_scale
    if nan_image:
        images[4 * bad_batch, 0, 3, 3] = float("nan")
    return DataLoader(TensorDataset(images, masks), batch_size=4)


@pytest.mark.parametrize("bad_batch", [0, 1])
def test_fit_refuses_0_255_masks_on_any_batch(bad_batch, tmp_path):
    with pytest.raises(ValueError, match=r"masks: expected 0 \(background\) and 1 \(defect\) only; got values "
                                         r"0\.\.255 .*divide by 255"):
        fit(tiny_unet(), _with_masks(255, bad_batch=bad_batch), epochs=1, checkpoint=tmp_path / "m.pt", **FAST)
    assert not (tmp_path / "m.pt").exists()  # nothing trained on them was saved
    with pytest.raises(ValueError, match="val_loader: masks: expected 0"):
        fit(tiny_unet(), loader(), _with_masks(255), epochs=1, **FAST)


@pytest.mark.parametrize("bad_batch", [0, 1])
def test_fit_refuses_nan_images_and_saves_no_nan_checkpoint(bad_batch, tmp_path):
    with pytest.raises(ValueError, match="images: expected values in \\[0, 1\\]; got NaN or infinite pixel values"):
        fit(tiny_unet(), _with_masks(nan_image=True, bad_batch=bad_batch), epochs=2, checkpoint=tmp_path / "m.pt",
            **FAST)
    assert not (tmp_path / "m.pt").exists()


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_the_last_good_epoch(tmp_path):
    calls = []
    bce_dice = BCEDiceLoss()

    def blows_up_in_epoch_two(logits, masks):
        calls.append(1)
        return bce_dice(logits, masks) * (float("nan") if len(calls) == 10 else 1.0)  # 4 + 4 val, then 2

    with pytest.raises(ValueError, match=r"training diverged in epoch 2, batch 2: the loss is nan.*lower lr"):
        fit(tiny_unet(), loader(), loader(seed=1), epochs=3, checkpoint=tmp_path / "m.pt",
            loss_fn=blows_up_in_epoch_two, **FAST)
    model, info = load_checkpoint(tmp_path / "m.pt")
    assert info["history"].epochs == 1 and all(torch.isfinite(v).all() for v in model.state_dict().values())


@pytest.mark.parametrize("make", [lambda: iter(loader()), lambda: (batch for batch in loader())])
def test_fit_refuses_a_one_shot_iterator_without_consuming_it(make):
    batches = make()
    with pytest.raises(ValueError, match="train_loader is a one-shot iterator .* pass a re-iterable"):
        fit(tiny_unet(), batches, epochs=1, **FAST)
    assert len(list(batches)) == 4  # all four batches are still there


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_gives_the_same_weights_as_one_straight_run_whatever_the_worker_count(tmp_path, workers):
    # The library's loaders: shuffled by EpochShuffle, training windows keyed by (seed, epoch, index).
    sizes = unetlab.RunSizes(n_train=8, n_val=4, n_test=2, epochs=4, batch_size=4, image_size=32, crop=16)
    cfg = unetlab.DefectConfig(size=32)

    def run(epochs, resume=False, num_workers=workers):
        loaders = unetlab.make_loaders(cfg, sizes, seed=5, num_workers=num_workers)
        model = tiny_unet()
        fit(model, loaders["train"], loaders["val"], epochs=epochs, checkpoint=tmp_path / f"{num_workers}.pt",
            resume=resume, seed=5, **FAST)
        return model.state_dict()

    straight = run(4)
    run(2)
    resumed = run(4, resume=True)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    if workers:
        zero = run(4, num_workers=0)
        assert all(torch.equal(straight[k], zero[k]) for k in straight)


@pytest.mark.parametrize("change, message", [
    (dict(lr=1e-3), r"it was trained with lr=0.01; got lr=0.001"),
    (dict(seed=1), r"it was trained with seed=0; got seed=1"),
    (dict(train=DataLoader(toy_batches(16), batch_size=8)), r"it was trained with batch_size=4; got batch_size=8"),
    (dict(train=loader(n=24)), r"it was trained with n_train=16; got n_train=24"),
    (dict(data_config={"size": 32, "surface": "cast"}), r"its data_config differs in \['surface'\]: 'woven' there"),
])
def test_resume_refuses_other_settings_than_the_run_was_trained_with(tmp_path, change, message):
    path = tmp_path / "m.pt"
    fit(tiny_unet(), loader(), epochs=1, checkpoint=path, data_config={"size": 32, "surface": "woven"}, **FAST)
    before = path.read_bytes()
    kwargs = {**FAST, "data_config": {"size": 32, "surface": "woven"}, **change}
    with pytest.raises(ValueError, match=rf"cannot resume from .*m.pt: {message}"):
        fit(tiny_unet(), kwargs.pop("train", loader()), epochs=2, checkpoint=path, resume=True, **kwargs)
    assert path.read_bytes() == before
    # The same settings resume, and data_config=None keeps the recorded one.
    fit(tiny_unet(), loader(), epochs=2, checkpoint=path, resume=True, **FAST)
    assert load_checkpoint(path)[1]["data_config"] == {"size": 32, "surface": "woven"}


def test_fit_leaves_batchnorm_statistics_of_the_final_weights():
    """After an epoch, every BatchNorm's running mean and variance are those of the last training batches under
    the final weights (not the lagging exponential average of earlier weights), so evaluation scores what the
    weights can do. The first BatchNorm follows the first convolution, so its statistics can be computed here."""
    model = tiny_unet()
    batches = [(x, y) for x, y in loader(n=48)]  # 12 batches: the last RECALIBRATION_BATCHES of them count
    fit(model, batches, epochs=1, amp="off", **{**FAST, "lr": 3e-2})
    conv, norm = model.encoder[0][0], model.encoder[0][1]
    with torch.no_grad():
        outputs = [conv(x.contiguous(memory_format=torch.channels_last)) for x, _ in batches[-8:]]
    assert unetlab.train.RECALIBRATION_BATCHES == 8
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).mean(0)
    var = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outputs]).mean(0)
    torch.testing.assert_close(norm.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.running_var, var, rtol=1e-4, atol=1e-5)
    assert norm.momentum == 0.1  # the layer's own setting is given back
