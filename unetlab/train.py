"""Training: ``fit`` a model and return its :class:`History`.

The loop is the textbook one (Adam, BCE + Dice loss, one validation pass per epoch) with the few things a real
run needs: mixed precision, a progress bar, BatchNorm statistics that match the weights they are saved with, the
best epoch saved to disk after every epoch, and resuming after a crash. The checkpoint format is
:mod:`unetlab.checkpoint`, the batch contract :mod:`unetlab.batches`, the device and precision choices
:mod:`unetlab.device`.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .batches import check_values, split_batch
from .checkpoint import check_plain, load_weights, read_checkpoint, train_state, write_checkpoint
from . import distributed
from .checks import is_int, is_real
from .device import autocast_dtype, resolve_device, use_channels_last
from .history import History
from .losses import BCEDiceLoss, CEDiceLoss
from .metrics import class_dice, confusion_matrix, counts_from_confusion, pooled_from_counts

SCHEDULERS = (None, "onecycle", "cosine")
# BatchNorm's running statistics are re-estimated from the last batches of every epoch (see _recalibrate_batchnorm).
RECALIBRATION_BATCHES = 8


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *, epochs: int = 10,
        lr: float = 1e-4, device: str | torch.device | None = None, progress: bool = True,
        checkpoint: str | os.PathLike | None = None, resume: bool = False,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None, amp: str = "auto",
        channels_last: bool | str = "auto", scheduler: str | None = None, data_config: dict | None = None,
        seed: int = 0, validate: Callable[[nn.Module], float] | None = None) -> History:
    """Train ``model`` with Adam and return its :class:`History`.

    Args:
        model: maps (B, C, H, W) float images to (B, K, H, W) logits, e.g. :class:`unetlab.UNet`. With K = 1
            (``out_channels=1``) it learns the binary defect mask; with K > 1 it learns the K classes of the
            labels (multi-class: class 0 background, 1 scratch, 2 crack, 3 stain). It is moved to ``device``
            and trained in place; afterwards it holds the LAST epoch's weights (the best ones are in the
            checkpoint).
        train_loader: re-iterable batches ``(images, masks)`` or ``(images, masks, labels)`` (a DataLoader or a
            list, not a one-shot iterator: it is passed over once per epoch); images (B, C, H, W) float in
            [0, 1], masks (B, 1, H, W) in {0, 1}, labels (B, H, W) int64 class ids (required for a multi-class
            model, ignored by a binary one). Every batch is checked (:func:`unetlab.batches.check_values`).
        val_loader: same kind of batches, evaluated after every epoch: the loss and the Dice (binary: pooled, at
            threshold 0.5; multi-class: the class Dice of the argmax over the defect classes 1..K-1, see
            :mod:`unetlab.metrics`); None skips validation.
        epochs: total number of epochs, counting those already in the checkpoint when resuming.
        lr: Adam learning rate (constant unless ``scheduler`` is set; with ``"onecycle"`` it is the peak).
        device: where to train; None picks :func:`default_device`.
        progress: show a tqdm progress bar over the batches with the running loss and the last val Dice.
        checkpoint: path of the checkpoint file (see :mod:`unetlab.checkpoint`). After every epoch it is rewritten
            atomically with the best weights so far and the state to resume from.
        resume: continue from ``checkpoint``'s training state instead of starting over. The run must be the
            same one: the model config, ``lr``, ``scheduler`` (and, with a schedule, ``epochs``), ``seed``, the
            loader's batch size, number of images and batches, and ``data_config`` are compared with what the
            checkpoint recorded, and any difference is a ValueError naming it.
        loss_fn: ``loss_fn(logits, target) -> scalar`` where target is the masks (binary) or the labels
            (multi-class); defaults to ``BCEDiceLoss()`` or ``CEDiceLoss()``.
        amp: mixed precision. ``"auto"``: on CUDA bfloat16 where the GPU has it natively (compute capability
            >= 8.0), else float16 with gradient scaling; bfloat16 on a CPU with AMX or AVX-512 BF16; full
            float32 elsewhere (:func:`unetlab.device.autocast_dtype`); ``"bf16"``: bfloat16 autocast anywhere;
            ``"fp16"``: float16 with gradient scaling, CUDA or MPS only; ``"off"``: float32.
        channels_last: keep the weights in the channels-last memory format. ``"auto"``: on for CPU and CUDA
            (about 2x faster convolutions on CPU), off on MPS. (On a CPU, :func:`unetlab.keep_freed_memory_for_reuse`
            speeds training up further; it changes the whole process's allocator, so ``fit`` never calls it.)
        scheduler: None for a constant learning rate, ``"onecycle"`` (warm-up to ``lr`` then anneal, reaches good
            quality in fewer epochs) or ``"cosine"`` (cosine decay from ``lr`` to 0); both step once per batch.
        data_config: plain dict stored in the checkpoint to record what data the model saw (when resuming,
            None keeps the checkpoint's, and any other than the checkpoint's is refused).
        validate: ``validate(model) -> score`` to maximise, called after every epoch (the model in eval mode,
            under ``torch.no_grad``): it replaces the val_loader's Dice as the validation score that
            ``History.val_dice`` records and that picks the best epoch, e.g. the class Dice of held-out real
            images at the best threshold (:func:`unetlab.finetune`). It may return None for an epoch it does not
            score (recorded as NaN, which never wins). With a val_loader too, that still gives the validation loss.
        seed: seeds the CPU random stream for each epoch (from ``(seed, epoch)``), so the shuffling order of a
            DataLoader without its own generator is reproducible, also across a resume. The caller's global
            random state is restored when ``fit`` returns. Before every epoch, ``fit`` also calls
            ``train_loader.sampler.set_epoch(epoch)`` when that exists (:class:`unetlab.data.EpochShuffle`, or
            torch's DistributedSampler): with the library's loaders a run gives the same weights whatever the
            number of workers, interrupted and resumed or not.

    Under torchrun (a process group joined with :func:`unetlab.distributed.process_group`), the N processes train
    one model with DistributedDataParallel (see :mod:`unetlab.distributed`): ``train_loader`` must come from
    :func:`unetlab.distributed.sharded_loader` (its batch size, recorded in the checkpoint, is the total over the
    processes); only rank 0 validates, calls ``validate`` and writes the checkpoint, and every process gets its
    scores, so all return the same History and hold the same weights. Each process seeds its random stream from
    ``(seed, epoch, rank)`` (rank 0 as one process would), so random draws outside the samplers differ between
    processes.

    Returns:
        History of all epochs (including those loaded when resuming).

    Raises:
        ValueError: bad arguments, a one-shot iterator or an empty loader, batches of the wrong shape or values
            (checked on the first batch of each loader before training starts, and on every batch as it comes),
            a loss that turns NaN or infinite (training diverged: the checkpoint keeps the last finished epoch),
            or a checkpoint that cannot be resumed.
        KeyboardInterrupt: re-raised unchanged when you stop a run; the checkpoint on disk still holds the last
            finished epoch (resume with ``resume=True``).
    """
    _check_arguments(epochs=epochs, lr=lr, scheduler=scheduler, seed=seed, resume=resume, checkpoint=checkpoint,
                     data_config=data_config)
    device = resolve_device(device)
    amp_dtype = autocast_dtype(amp, device)
    memory_format = torch.channels_last if use_channels_last(channels_last, device) else torch.contiguous_format
    in_channels, n_classes = _channels(model)
    steps_per_epoch = _check_loader(train_loader, "train_loader", in_channels, n_classes)
    distributed.check_sharded(train_loader, "train_loader")
    if val_loader is not None:
        _check_loader(val_loader, "val_loader", in_channels, n_classes)

    model.to(device=device, memory_format=memory_format)
    settings = _run_settings(lr, seed, train_loader, steps_per_epoch)
    run = _Run(model, loss_fn, device=device, amp_dtype=amp_dtype, lr=lr, scheduler=scheduler, epochs=int(epochs),
               steps_per_epoch=steps_per_epoch, settings=settings, score=validate)
    if resume:
        stored_config = run.resume(Path(checkpoint), with_validation=val_loader is not None or validate is not None,
                                   data_config=data_config)
        data_config = data_config if data_config is not None else stored_config

    done = run.history.epochs
    bar = tqdm(total=steps_per_epoch * epochs if steps_per_epoch else None, unit="batch",
               disable=not (progress and distributed.is_main()),
               initial=steps_per_epoch * done if steps_per_epoch else 0, dynamic_ncols=True)
    with bar, torch.random.fork_rng(devices=[]):
        for epoch in range(done + 1, epochs + 1):
            torch.default_generator.manual_seed(_epoch_seed(seed, epoch, distributed.rank()))
            if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
                train_loader.sampler.set_epoch(epoch)
            bar.set_description(f"epoch {epoch}/{epochs}")
            run.epoch(train_loader, val_loader, bar)
            if checkpoint is not None and distributed.is_main():
                run.save(checkpoint, data_config)
    distributed.barrier()  # every process returns once the checkpoint holds the last epoch
    return run.history


class _Run:
    """The state of one :func:`fit` call: the model with its loss, optimiser, schedule and gradient scaler, the
    history so far and the best weights. ``fit`` makes it once; every epoch trains, validates and saves through it.

    A binary model (``n_classes`` 1) learns the masks and is validated by the pooled Dice at threshold 0.5; a
    multi-class one learns the labels and is validated by the class Dice of the argmax. Both count pixels in one
    confusion matrix (2 x 2 or K x K), so the two tasks differ only in :meth:`target` and :meth:`predicted`.

    ``net`` is what trains: the model itself, or under torchrun the model in DistributedDataParallel
    (:func:`unetlab.distributed.wrap`); validation and checkpoints use ``model``.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor] | None, *, device: torch.device,
                 amp_dtype: torch.dtype | None, lr: float, scheduler: str | None, epochs: int,
                 steps_per_epoch: int | None, settings: dict[str, Any],
                 score: Callable[[nn.Module], float] | None = None) -> None:
        self.model, self.device, self.scheduler, self.epochs, self.score = model, device, scheduler, epochs, score
        self.settings = settings
        self.net = distributed.wrap(model, device)
        self.in_channels, self.n_classes = _channels(model)
        self.loss_fn = loss_fn or (CEDiceLoss() if self.n_classes > 1 else BCEDiceLoss())
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.schedule = _make_schedule(scheduler, self.optimizer, lr, epochs, steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=True) if amp_dtype else nullcontext()
        self.history, self.best_state = History(), None
        self.status: dict[str, str] = {}  # the progress bar's postfix: running loss, last validation Dice

    def target(self, batch: Any, name: str) -> tuple[Tensor, Tensor]:
        """(images, target) of one batch of loader ``name`` on the device, checked: the masks for a binary model,
        the labels otherwise."""
        images, masks, labels = (t.to(self.device, non_blocking=True) if t is not None else None
                                 for t in split_batch(batch, self.in_channels))
        try:
            check_values(images, masks, labels, self.n_classes)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        return images, labels if self.n_classes > 1 else masks

    def predicted(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(B, H, W) predicted and true class ids: the mask at probability 0.5 (binary), or the argmax."""
        if self.n_classes > 1:
            return logits.argmax(1), target
        return (torch.sigmoid(logits) > 0.5)[:, 0].long(), (target > 0.5)[:, 0].long()

    def epoch(self, train_loader: Iterable, val_loader: Iterable | None, bar: tqdm) -> None:
        """Train one epoch, validate, and record both in the history (and the weights, if they are the best)."""
        start = time.perf_counter()
        train_loss, last_lr = self.train_epoch(train_loader, bar)
        self.history.train_loss.append(train_loss)
        self.history.lr.append(last_lr)
        if val_loader is not None or self.score is not None:
            val_loss, val_dice = distributed.on_main(lambda: self.scores(val_loader))
            if val_loss is not None:
                self.history.val_loss.append(val_loss)
            self.history.val_dice.append(val_dice)
            if not math.isnan(val_dice):  # NaN: an epoch the validate callback did not score
                self.status["val_dice"] = f"{val_dice:.3f}"
                bar.set_postfix(self.status)
            if self.history.best_epoch == self.history.epochs:
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.history.seconds.append(time.perf_counter() - start)

    def scores(self, val_loader: Iterable | None) -> tuple[float | None, float]:
        """(validation loss or None without a val_loader, validation score): the val_loader's Dice, or the
        ``validate`` callback's score when there is one."""
        val_loss, val_dice = self.validate(val_loader) if val_loader is not None else (None, None)
        if self.score is not None:
            val_dice = self.external_score()
        return val_loss, val_dice

    def train_epoch(self, loader: Iterable, bar: tqdm) -> tuple[float, float]:
        """One pass over ``loader``; returns the mean loss per image and the learning rate of the last step.

        Shows the running loss in ``bar``. At the end, BatchNorm's running statistics are re-estimated with the
        final weights (:func:`_recalibrate_batchnorm`). Under torchrun the mean is over all processes' images, and
        the processes' BatchNorm statistics are then averaged (:func:`unetlab.distributed.average_buffers`).
        """
        self.model.train()
        loss_sum, n, lr = 0.0, 0, math.nan
        recent: deque[Tensor] = deque(maxlen=RECALIBRATION_BATCHES)  # the epoch's last images, for BatchNorm
        for step, batch in enumerate(loader, 1):
            images, target = self.target(batch, "train_loader")
            recent.append(images)
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast:
                logits = self.net(images)
            loss = self.loss_fn(logits.float(), target)
            if not math.isfinite(loss.item()):
                raise ValueError(f"training diverged in epoch {self.history.epochs + 1}, batch {step}: the loss is "
                                 f"{loss.item()}; the checkpoint keeps the last finished epoch. Try a lower lr, or "
                                 f"amp='off' if mixed precision is on")
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self.optimizer.param_groups[0]["lr"]
            if self.schedule is not None:
                self.schedule.step()
            loss_sum += loss.item() * len(images)
            n += len(images)
            bar.update()
            self.status["loss"] = f"{loss_sum / n:.4f}"
            bar.set_postfix(self.status, refresh=False)
        if n == 0:
            raise ValueError("train_loader yielded no batches in this epoch")
        _recalibrate_batchnorm(self.model, recent)
        distributed.average_buffers(self.model)
        loss_sum, n = distributed.all_sum(loss_sum, n)
        return loss_sum / n, lr

    @torch.no_grad()
    def external_score(self) -> float:
        """The caller's validation score of the model (``fit(validate=...)``), in eval mode; NaN where the caller
        returned None (an epoch it does not score)."""
        self.model.eval()
        try:
            score = self.score(self.model)
        finally:
            self.model.train()
        if score is None:
            return math.nan
        if math.isnan(score):
            raise ValueError("fit: the validate callback returned NaN; it must return a score to maximise (or None "
                             "for an epoch it does not score)")
        return float(score)

    @torch.no_grad()
    def validate(self, loader: Iterable) -> tuple[float, float]:
        """Mean validation loss per image, and the validation Dice (see the class docstring). In float32, as
        :func:`unetlab.evaluate` and :func:`unetlab.predict` run, so the best epoch is the one they score best."""
        self.model.eval()
        k = max(2, self.n_classes)
        loss_sum, n = 0.0, 0
        matrix = torch.zeros(k, k, dtype=torch.int64, device=self.device)  # pixels, [true][predicted]
        for batch in loader:
            images, target = self.target(batch, "val_loader")
            logits = self.model(images).float()
            loss_sum += self.loss_fn(logits, target).item() * len(images)
            n += len(images)
            pred, truth = self.predicted(logits, target)
            matrix += confusion_matrix(pred, truth, k)
        self.model.train()
        if n == 0:
            raise ValueError("val_loader yielded no batches")
        tp, fp, fn = counts_from_confusion(matrix)
        if self.n_classes > 1:
            return loss_sum / n, class_dice(tp[1:], fp[1:], fn[1:])
        return loss_sum / n, pooled_from_counts(tp[1], fp[1], fn[1])["dice"]

    def save(self, path: str | os.PathLike, data_config: dict | None) -> None:
        """Rewrite the checkpoint: the best weights so far, the history, and the last epoch's state to resume."""
        last_state = self.model.state_dict()
        resumable = train_state(last_state, self.optimizer, epoch=self.history.epochs, epochs=self.epochs,
                                scheduler=self.scheduler, schedule=self.schedule, scaler=self.scaler,
                                run=self.settings)
        write_checkpoint(path, self.model, self.best_state if self.best_state is not None else last_state,
                         epoch=self.history.best_epoch, history=self.history, data_config=data_config,
                         train_state=resumable)

    def resume(self, path: Path, with_validation: bool, data_config: dict | None) -> dict | None:
        """Load the training state of ``path`` into the model, optimiser, schedule, scaler and history; return the
        checkpoint's data_config. Refuses a checkpoint this run cannot continue, saying why."""
        payload = read_checkpoint(path)
        config = getattr(self.model, "config", None)
        if payload["model_config"] != config:
            raise ValueError(f"cannot resume from {path}: it holds UNet({payload['model_config']}) "
                             f"but the model is {config}")
        state = payload["train_state"]
        if state is None:
            raise ValueError(f"cannot resume from {path}: it has no training state (it was saved without an "
                             f"optimizer)")
        _check_resumable(path, state, self.scheduler, self.epochs)
        _check_same_run(path, state.get("run", {}), self.settings, payload["data_config"], data_config)
        load_weights(self.model, state["model_state"], path)
        self.optimizer.load_state_dict(state["optimizer_state"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state["scheduler_state"])
        if self.scaler.is_enabled() and state["scaler_state"]:
            self.scaler.load_state_dict(state["scaler_state"])
        self.history = History.from_dict(payload["history"] or {})
        if self.history.epochs != state["epoch"]:
            raise ValueError(f"cannot resume from {path}: its history has {self.history.epochs} epochs "
                             f"but its training state is at epoch {state['epoch']}")
        if bool(self.history.val_dice) != with_validation:
            raise ValueError(f"cannot resume from {path}: it was trained "
                             f"{'with' if self.history.val_dice else 'without'} a val_loader; resume the same way")
        self.best_state = payload["model_state"] if self.history.val_dice else None
        return payload["data_config"]


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Replace the running mean and variance of every BatchNorm layer of ``model`` by their average over
    ``batches`` ((B, C, H, W) training images), computed with the model's current weights, in float32 as
    evaluation runs.

    Why: evaluation normalises with the running statistics, an exponential average over the last ~10 batches
    of *earlier* weights. While the weights move fast (the peak of a one-cycle schedule, lr 3e-3), those statistics
    lag behind them and the model scores far below what its weights can do. Measured on the demo's 128 px windows
    (2-core CPU; README, "Measured results"): validation Dice 0.08 at epoch 3 and 0.41 at epoch 4 with the running
    statistics, 0.28 and 0.73 with statistics re-estimated from 20 training batches; at the end of the run
    both agree (0.89). The cost is ``len(batches)`` forward passes per epoch, no gradients.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    batches = list(batches)
    if not norms or not batches:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    try:
        for images in batches:
            model(images)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def _channels(model: nn.Module) -> tuple[int | None, int]:
    """(input channels or None when the model does not say, output classes) from the model's ``config``."""
    config = getattr(model, "config", {})
    return config.get("in_channels"), config.get("out_channels", 1)


def _make_schedule(name: str | None, optimizer: torch.optim.Optimizer, lr: float, epochs: int,
                   steps_per_epoch: int | None) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-batch learning-rate schedule ``name`` over ``epochs``, or None for a constant rate."""
    if name is None:
        return None
    if not steps_per_epoch:
        raise ValueError(f"scheduler={name!r} needs a train_loader with a length (len(train_loader))")
    steps = epochs * steps_per_epoch
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def _check_resumable(path: Path, state: dict[str, Any], scheduler: str | None, epochs: int) -> None:
    """ValueError unless the checkpoint's schedule and epoch count allow ``fit(epochs=epochs, scheduler=...)``."""
    if state["scheduler"] != scheduler:
        raise ValueError(f"cannot resume from {path}: it was trained with scheduler={state['scheduler']!r}; "
                         f"got scheduler={scheduler!r}")
    if scheduler is not None and state["epochs"] != epochs:
        raise ValueError(f"cannot resume from {path}: its {scheduler!r} schedule was planned for "
                         f"{state['epochs']} epochs; resume with epochs={state['epochs']}")
    if state["epoch"] > epochs:
        raise ValueError(f"cannot resume from {path}: it has already trained {state['epoch']} epochs; "
                         f"got epochs={epochs}")


def _run_settings(lr: float, seed: int, loader: Iterable, steps_per_epoch: int | None) -> dict[str, Any]:
    """The plain settings of a run that a resume must share: lr, seed, and what the loader tells of itself."""
    dataset = getattr(loader, "dataset", None)
    batch_size = getattr(loader, "batch_size", None)
    batch_size = batch_size * distributed.world_size() if is_int(batch_size) else None  # the total of one step
    return {"lr": float(lr), "seed": int(seed), "batch_size": batch_size,
            "n_train": len(dataset) if hasattr(dataset, "__len__") else None, "steps_per_epoch": steps_per_epoch}


def _check_same_run(path: Path, stored: dict[str, Any], settings: dict[str, Any], stored_data: dict | None,
                    data_config: dict | None) -> None:
    """ValueError at the first setting (see :func:`_run_settings`) or data_config key that differs from what the
    checkpoint recorded; settings either side does not know (None, or a version 1 file) are not compared."""
    for name, value in settings.items():
        if stored.get(name) is not None and value is not None and stored[name] != value:
            raise ValueError(f"cannot resume from {path}: it was trained with {name}={stored[name]!r}; got "
                             f"{name}={value!r}. Resume with the settings it was trained with, or start over")
    if data_config is not None and stored_data is not None and data_config != stored_data:
        keys = sorted(k for k in set(data_config) | set(stored_data) if data_config.get(k) != stored_data.get(k))
        shown = keys[0]
        raise ValueError(f"cannot resume from {path}: its data_config differs in {keys}: "
                         f"{stored_data.get(shown)!r} there, {data_config.get(shown)!r} here. Resume on the data it "
                         f"was trained on, or start over")


def _check_arguments(*, epochs, lr, scheduler, seed, resume, checkpoint, data_config) -> None:
    """One clear ValueError for a bad argument of :func:`fit`, before anything is moved or trained."""
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1; got {epochs!r}")
    if not is_real(lr) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}; got {scheduler!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from")
    if data_config is not None:
        check_plain(data_config, "data_config")


def _check_loader(loader: Iterable, name: str, in_channels: int | None, n_classes: int = 1) -> int | None:
    """Check that ``loader`` is re-iterable and not empty and that its first batch has the right shapes and values
    (see :mod:`unetlab.batches`); return len or None."""
    if isinstance(loader, Iterator):  # taking its first batch here would lose it, and a second epoch gets none
        raise ValueError(f"{name} is a one-shot iterator ({type(loader).__name__}): fit passes over its loaders "
                         f"once per epoch; pass a re-iterable such as a DataLoader or a list of batches")
    try:
        length = len(loader)
    except TypeError:
        length = None
    with torch.random.fork_rng(devices=[]):  # a shuffling loader draws its order from the global RNG
        first = next(iter(loader), None) if length != 0 else None
    if first is None:
        raise ValueError(f"{name} is empty: it yields no batches")
    try:
        images, masks, labels = split_batch(first, in_channels)
        if n_classes > 1 and labels is None:
            raise ValueError(f"a model with {n_classes} output classes needs batches (images, masks, labels) with "
                             f"per-pixel class ids; got (images, masks). Use return_labels=True.")
        check_values(images, masks, labels, n_classes)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    return length


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for epoch ``epoch`` of run ``seed`` in process ``rank``; different (seed, epoch, rank) give
    independent streams, and rank 0 the one a single process uses."""
    return int(np.random.SeedSequence([seed, epoch, rank] if rank else [seed, epoch]).generate_state(1)[0])
