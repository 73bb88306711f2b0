"""Training: ``fit`` a model, keep its :class:`History`, save and load checkpoints safely.

The loop is the textbook one (Adam, BCE + Dice loss, one validation pass per epoch) with the few things a real
run needs: mixed precision on CUDA, a progress bar, the best epoch saved to disk, and resuming after a crash.

Checkpoint layout: one file, written atomically (``torch.save`` to a temporary file in the same folder, then
``os.replace``), so an interrupted run never leaves a half-written checkpoint. It holds only tensors, dicts,
lists, strings and numbers, and is loaded with ``torch.load(weights_only=True)``::

    format            "unetlab.checkpoint"
    format_version    1
    unetlab_version   the library version that wrote it
    model_config      dict: ``UNet(**model_config)`` rebuilds the architecture
    model_state       state_dict of the weights to use: the best epoch by validation Dice
                      (the last epoch when there is no validation)
    epoch             the epoch those weights come from (1-based), or None
    history           History.to_dict() up to the last finished epoch, or None
    data_config       plain dict describing the data (e.g. the DefectConfig as a dict), or None
    train_state       what ``fit(..., resume=True)`` needs, or None: the LAST finished epoch's
                      model_state, optimizer_state, scheduler name and state, scaler_state, epoch,
                      and the planned number of epochs

Epochs are counted from 1: ``epoch=3`` means "after three passes over the training data".
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import __version__
from .io import atomic_write
from .losses import BCEDiceLoss, CEDiceLoss
from .metrics import confusion_counts, confusion_matrix, scores_from_confusion, scores_from_counts
from .model import UNet

CHECKPOINT_FORMAT = "unetlab.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
AMP_MODES = ("auto", "off", "fp16", "bf16")
SCHEDULERS = (None, "onecycle", "cosine")


def keep_freed_memory_for_reuse() -> bool:
    """Ask glibc (Linux) to serve large tensors from its heap and keep freed memory for the next step.

    By default glibc returns every block above 32 MB to the kernel as soon as it is freed, and the kernel must
    zero fresh pages for the next one. One activation of a 256x256 batch of 8 at 16 channels is 33.5 MB, so every
    training step paid that price again: measured on a 2-core CPU, 12 -> 17 training images/s. The setting is
    process-wide, costs nothing where it does not apply (returns False: not glibc) and is made once by
    :func:`fit` on the CPU. The process keeps its peak memory instead of handing it back between steps.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = False
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL(None)
            m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
            _MALLOC_TUNED = bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**30))
    return _MALLOC_TUNED


_MALLOC_TUNED: bool | None = None


def default_device() -> torch.device:
    """The fastest device here: ``cuda`` if available, else ``mps`` (Apple GPU), else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class History:
    """Per-epoch training record; element ``i`` of each list belongs to epoch ``i + 1``.

    Attributes:
        train_loss: mean training loss of the epoch (weighted by batch size).
        val_loss: mean validation loss after the epoch; empty when training ran without validation.
        val_dice: pooled validation Dice at threshold 0.5 (see ``unetlab.metrics``); empty without validation.
        lr: learning rate of the epoch's last optimiser step.
        seconds: wall-clock seconds of the epoch, training plus validation.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_dice: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Number of finished epochs."""
        return len(self.train_loss)

    @property
    def best_epoch(self) -> int | None:
        """1-based epoch with the highest validation Dice (the first one on ties).

        Without validation, the last epoch; None before the first epoch has finished.
        """
        if self.val_dice:
            return int(np.argmax(self.val_dice)) + 1
        return self.epochs or None

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists of floats, ready for ``json.dump`` and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`; missing lists are empty, unknown keys raise ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"History.from_dict got unknown keys {sorted(unknown)}; expected some of {sorted(names)}")
        return cls(**{name: [float(v) for v in data.get(name, [])] for name in names})


def split_batch(batch: Any, in_channels: int | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check one loader batch and return ``(images, masks, labels or None)``.

    Accepts ``(images, masks)`` or ``(images, masks, labels)`` with images (B, C, H, W) float, masks (B, 1, H, W)
    and labels (B, H, W) integer class ids. ``in_channels``, when given, is the C the model expects.
    Raises one ValueError saying what was expected and what came.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        kind = type(batch).__name__ + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise ValueError(f"expected batches (images, masks) or (images, masks, labels); got a {kind}")
    images, masks, labels = (*batch, None)[:3]
    if not isinstance(images, Tensor) or not isinstance(masks, Tensor):
        raise ValueError(
            f"expected torch tensors for images and masks; got {type(images).__name__} and {type(masks).__name__}"
        )
    channels = "C" if in_channels is None else in_channels
    if images.dim() != 4 or (in_channels is not None and images.shape[1] != in_channels):
        hint = ""
        if images.dim() == 4 and images.shape[1] in (3, 4):
            hint = f"; got {images.shape[1]} channels: convert colour images to grayscale first"
        raise ValueError(f"expected images of shape (B, {channels}, H, W); got {tuple(images.shape)}{hint}")
    b, _, h, w = images.shape
    if tuple(masks.shape) != (b, 1, h, w):
        raise ValueError(f"expected masks of shape {(b, 1, h, w)} to match images {tuple(images.shape)}; "
                         f"got {tuple(masks.shape)}")
    if labels is not None and (not isinstance(labels, Tensor) or tuple(labels.shape) != (b, h, w)):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"expected labels of shape {(b, h, w)} to match images {tuple(images.shape)}; got {got}")
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1]; got {images.dtype}")
    return images, masks, labels


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    epochs: int = 10,
    lr: float = 1e-4,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    amp: str = "auto",
    channels_last: bool | str = "auto",
    scheduler: str | None = None,
    data_config: dict | None = None,
    seed: int = 0,
) -> History:
    """Train ``model`` with Adam and return its :class:`History`.

    Args:
        model: maps (B, C, H, W) float images to (B, K, H, W) logits, e.g. :class:`unetlab.UNet`. With K = 1
            (``out_channels=1``) it learns the binary defect mask; with K > 1 it learns the K classes of the
            labels (multi-class: class 0 background, 1 scratch, 2 crack, 3 stain). It is moved to ``device``
            and trained in place; afterwards it holds the LAST epoch's weights (the best ones are in the
            checkpoint).
        train_loader: re-iterable batches ``(images, masks)`` or ``(images, masks, labels)``; images
            (B, C, H, W) float in [0, 1], masks (B, 1, H, W) in {0, 1}, labels (B, H, W) int64 class ids
            (required for a multi-class model, ignored by a binary one).
        val_loader: same kind of batches, evaluated after every epoch: the loss and the pooled Dice (binary:
            at threshold 0.5; multi-class: of the argmax, averaged over the defect classes 1..K-1);
            None skips validation.
        epochs: total number of epochs, counting those already in the checkpoint when resuming.
        lr: Adam learning rate (constant unless ``scheduler`` is set; with ``"onecycle"`` it is the peak).
        device: where to train; None picks :func:`default_device`.
        progress: show a tqdm progress bar over the batches with the running loss and the last val Dice.
        checkpoint: path of the checkpoint file (see the module docstring). After every epoch it is rewritten
            atomically with the best weights so far and the state to resume from.
        resume: continue from ``checkpoint``'s training state instead of starting over.
        loss_fn: ``loss_fn(logits, target) -> scalar`` where target is the masks (binary) or the labels
            (multi-class); defaults to ``BCEDiceLoss()`` or ``CEDiceLoss()``.
        amp: mixed precision. ``"auto"``: bfloat16 (or float16 with gradient scaling where bfloat16 is not
            supported) on CUDA, full float32 elsewhere; ``"bf16"``: bfloat16 autocast, also on CPU (opt-in);
            ``"fp16"``: float16 with gradient scaling, CUDA or MPS only; ``"off"``: float32.
        channels_last: keep the weights in the channels-last memory format. ``"auto"``: on for CPU and CUDA
            (about 2x faster convolutions on CPU), off on MPS.
        scheduler: None for a constant learning rate, ``"onecycle"`` (warm-up to ``lr`` then anneal, reaches good
            quality in fewer epochs) or ``"cosine"`` (cosine decay from ``lr`` to 0); both step once per batch.
        data_config: plain dict stored in the checkpoint to record what data the model saw (when resuming,
            None keeps the checkpoint's).
        seed: seeds the CPU random stream for each epoch (from ``(seed, epoch)``), so the shuffling order of a
            DataLoader without its own generator is reproducible, also across a resume. The caller's global
            random state is restored when ``fit`` returns.

    Returns:
        History of all epochs (including those loaded when resuming).

    Raises:
        ValueError: bad arguments, an empty loader or batches of the wrong shape (checked on the first batch of
            each loader before training starts), or a checkpoint that cannot be resumed.
        KeyboardInterrupt: re-raised unchanged when you stop a run; the checkpoint on disk still holds the last
            finished epoch (resume with ``resume=True``).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1; got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}; got {scheduler!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from")
    if data_config is not None:
        _check_plain(data_config, "data_config")
    device = torch.device(device) if device is not None else default_device()
    amp_dtype = _amp_dtype(amp, device)
    memory_format = torch.channels_last if _use_channels_last(channels_last, device) else torch.contiguous_format
    in_channels = getattr(model, "config", {}).get("in_channels")
    n_classes = getattr(model, "config", {}).get("out_channels", 1)
    steps_per_epoch = _check_loader(train_loader, "train_loader", in_channels, n_classes)
    if val_loader is not None:
        _check_loader(val_loader, "val_loader", in_channels, n_classes)

    if loss_fn is None:
        loss_fn = CEDiceLoss() if n_classes > 1 else BCEDiceLoss()
    if device.type == "cpu":
        keep_freed_memory_for_reuse()
    model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = _make_scheduler(scheduler, optimizer, lr, epochs, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=True) if amp_dtype else nullcontext()

    history, best_state = History(), None
    if resume:
        history, best_state, stored_config = _restore(
            Path(checkpoint), model, optimizer, scheduler, schedule, scaler, epochs, device
        )
        data_config = data_config if data_config is not None else stored_config
        if bool(history.val_dice) != (val_loader is not None):
            raise ValueError(f"cannot resume from {checkpoint}: it was trained "
                             f"{'with' if history.val_dice else 'without'} a val_loader; resume the same way")
    done = history.epochs

    total = steps_per_epoch * epochs if steps_per_epoch else None
    bar = tqdm(total=total, initial=steps_per_epoch * done if steps_per_epoch else 0, disable=not progress,
               unit="batch", dynamic_ncols=True)
    status: dict[str, str] = {}  # the bar's postfix: running loss, last validation Dice
    with bar, torch.random.fork_rng(devices=[]):
        for epoch in range(done + 1, epochs + 1):
            torch.default_generator.manual_seed(_epoch_seed(seed, epoch))
            bar.set_description(f"epoch {epoch}/{epochs}")
            start = time.perf_counter()
            train_loss, last_lr = _train_epoch(model, train_loader, loss_fn, optimizer, schedule, scaler,
                                               autocast, device, in_channels, n_classes, bar, status)
            history.train_loss.append(train_loss)
            history.lr.append(last_lr)
            if val_loader is not None:
                val_loss, val_dice = _validate(model, val_loader, loss_fn, autocast, device, in_channels, n_classes)
                history.val_loss.append(val_loss)
                history.val_dice.append(val_dice)
                status["val_dice"] = f"{val_dice:.3f}"
                bar.set_postfix(status)
                if history.best_epoch == epoch:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            history.seconds.append(time.perf_counter() - start)
            if checkpoint is not None:
                last_state = model.state_dict()
                train_state = {
                    "epoch": epoch,
                    "epochs": epochs,
                    "model_state": last_state,
                    "optimizer_state": optimizer.state_dict(),
                    "scheduler": scheduler,
                    "scheduler_state": schedule.state_dict() if schedule is not None else None,
                    "scaler_state": scaler.state_dict(),
                }
                payload = _payload(model, best_state if best_state is not None else last_state,
                                   epoch=history.best_epoch, history=history, data_config=data_config,
                                   train_state=train_state)
                atomic_write(checkpoint, lambda f: torch.save(payload, f))
    return history


def _target(batch: Any, in_channels: int | None, n_classes: int) -> tuple[Tensor, Tensor]:
    """(images, target) of one batch: the masks for a binary model, the class labels for a multi-class one."""
    images, masks, labels = split_batch(batch, in_channels)
    return images, (labels if n_classes > 1 else masks)


def _train_epoch(model, loader, loss_fn, optimizer, schedule, scaler, autocast, device, in_channels, n_classes,
                 bar, status) -> tuple[float, float]:
    """One pass over ``loader``; returns the mean loss per image and the learning rate of the last step.

    Shows the running loss in ``bar``.
    """
    model.train()
    loss_sum, n = 0.0, 0
    for batch in loader:
        images, target = _target(batch, in_channels, n_classes)
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = model(images)
        loss = loss_fn(logits.float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        if schedule is not None:
            schedule.step()
        loss_sum += loss.item() * len(images)
        n += len(images)
        bar.update()
        status["loss"] = f"{loss_sum / n:.4f}"
        bar.set_postfix(status, refresh=False)
    if n == 0:
        raise ValueError("train_loader yielded no batches in this epoch")
    return loss_sum / n, lr


@torch.no_grad()
def _validate(model, loader, loss_fn, autocast, device, in_channels, n_classes) -> tuple[float, float]:
    """Mean validation loss per image and pooled Dice: at threshold 0.5 for a binary model, of the argmax
    averaged over the defect classes for a multi-class one."""
    model.eval()
    loss_sum, n = 0.0, 0
    totals = torch.zeros(3, dtype=torch.int64, device=device)  # pooled tp, fp, fn (binary)
    matrix = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)  # (multi-class)
    for batch in loader:
        images, target = _target(batch, in_channels, n_classes)
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        with autocast:
            logits = model(images).float()
        loss_sum += loss_fn(logits, target).item() * len(images)
        n += len(images)
        if n_classes > 1:
            matrix += confusion_matrix(logits.argmax(1), target, n_classes)
        else:
            tp, fp, fn, _ = confusion_counts(torch.sigmoid(logits) > 0.5, target > 0.5)
            totals += torch.stack([tp.sum(), fp.sum(), fn.sum()])
    model.train()
    if n == 0:
        raise ValueError("val_loader yielded no batches")
    if n_classes > 1:
        return loss_sum / n, float(np.mean(scores_from_confusion(matrix)["dice"][1:]))
    return loss_sum / n, scores_from_counts(*totals)["dice"].item()


def _check_loader(loader: Iterable, name: str, in_channels: int | None, n_classes: int = 1) -> int | None:
    """Check that ``loader`` is not empty and that its first batch has the right shapes (and labels in
    [0, n_classes) for a multi-class model); return len or None."""
    try:
        length = len(loader)
    except TypeError:
        length = None
    with torch.random.fork_rng(devices=[]):  # a shuffling loader draws its order from the global RNG
        first = next(iter(loader), None) if length != 0 else None
    if first is None:
        raise ValueError(f"{name} is empty: it yields no batches")
    try:
        _, _, labels = split_batch(first, in_channels)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    if n_classes > 1:
        if labels is None:
            raise ValueError(f"{name}: a model with {n_classes} output classes needs batches (images, masks, "
                             f"labels) with per-pixel class ids; got (images, masks). Use return_labels=True.")
        if labels.is_floating_point() or labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"{name}: labels must be integer class ids in [0, {n_classes}); got {labels.dtype} "
                             f"values {labels.min().item()}..{labels.max().item()}")
    return length


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for full float32."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}; got {amp!r}")
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type not in ("cuda", "mps"):
        raise ValueError(f"amp='fp16' needs a CUDA or MPS device; on {device.type} use amp='bf16' or 'off'")
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]


def _use_channels_last(channels_last: bool | str, device: torch.device) -> bool:
    if channels_last == "auto":
        return device.type != "mps"
    if not isinstance(channels_last, bool):
        raise ValueError(f"channels_last must be True, False or 'auto'; got {channels_last!r}")
    return channels_last


def _make_scheduler(name, optimizer, lr, epochs, steps_per_epoch):
    """The per-batch learning-rate schedule, or None for a constant rate."""
    if name is None:
        return None
    if not steps_per_epoch:
        raise ValueError(f"scheduler={name!r} needs a train_loader with a length (len(train_loader))")
    steps = epochs * steps_per_epoch
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch`` of run ``seed``; different (seed, epoch) pairs give independent streams."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _restore(path, model, optimizer, scheduler, schedule, scaler, epochs, device):
    """Load the training state of ``path`` into the model, optimiser, scheduler and scaler.

    Returns (history, best_state or None, data_config).
    """
    payload = _read_checkpoint(path, device)
    config = getattr(model, "config", None)
    if payload["model_config"] != config:
        raise ValueError(f"cannot resume from {path}: it holds UNet({payload['model_config']}) "
                         f"but the model is {config}")
    state = payload["train_state"]
    if state is None:
        raise ValueError(f"cannot resume from {path}: it has no training state (it was saved without an optimizer)")
    if state["scheduler"] != scheduler:
        raise ValueError(f"cannot resume from {path}: it was trained with scheduler={state['scheduler']!r}; "
                         f"got scheduler={scheduler!r}")
    if scheduler is not None and state["epochs"] != epochs:
        raise ValueError(f"cannot resume from {path}: its {scheduler!r} schedule was planned for "
                         f"{state['epochs']} epochs; resume with epochs={state['epochs']}")
    if state["epoch"] > epochs:
        raise ValueError(f"cannot resume from {path}: it has already trained {state['epoch']} epochs; "
                         f"got epochs={epochs}")
    _load_weights(model, state["model_state"], path)
    optimizer.load_state_dict(state["optimizer_state"])
    if schedule is not None:
        schedule.load_state_dict(state["scheduler_state"])
    if scaler.is_enabled() and state["scaler_state"]:
        scaler.load_state_dict(state["scaler_state"])
    history = History.from_dict(payload["history"] or {})
    if history.epochs != state["epoch"]:
        raise ValueError(f"cannot resume from {path}: its history has {history.epochs} epochs "
                         f"but its training state is at epoch {state['epoch']}")
    best_state = payload["model_state"] if history.val_dice else None
    return history, best_state, payload["data_config"]


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    history: History | None = None,
    data_config: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int | None = None,
) -> Path:
    """Write ``model`` (with its ``config``) to ``path`` atomically; return the path.

    Args:
        path: file to write; missing parent folders are created.
        model: a model with a ``config`` dict such that ``UNet(**config)`` rebuilds it.
        history: training history to keep beside the weights.
        data_config: plain dict (int, float, str, bool, None, lists, tuples, dicts) describing the data.
        optimizer: when given, its state is stored too, so ``fit(..., resume=True)`` can continue from here
            (resuming also needs the ``history`` of the epochs done).
        epoch: the epoch these weights come from (defaults to the history's length).
    """
    if data_config is not None:
        _check_plain(data_config, "data_config")
    epoch = epoch if epoch is not None else (history.epochs if history is not None else None)
    state = model.state_dict()
    train_state = None
    if optimizer is not None:
        train_state = {"epoch": epoch or 0, "epochs": None, "model_state": state,
                       "optimizer_state": optimizer.state_dict(), "scheduler": None, "scheduler_state": None,
                       "scaler_state": {}}
    payload = _payload(model, state, epoch=epoch, history=history, data_config=data_config, train_state=train_state)
    atomic_write(path, lambda f: torch.save(payload, f))
    return Path(path)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, dict[str, Any]]:
    """Rebuild the UNet saved in ``path`` on ``device``, in eval mode, with its best weights.

    Returns:
        ``(model, info)`` where info has ``model_config``, ``data_config``, ``history`` (a :class:`History` or
        None), ``epoch`` (of the weights) and ``unetlab_version``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated, corrupt, not a unetlab checkpoint, or its weights do not fit the
            architecture it describes. The message names the path and the problem.
    """
    path = Path(path)
    payload = _read_checkpoint(path, device)
    try:
        model = UNet(**payload["model_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path} has an invalid model_config {payload['model_config']!r}: {err}") from err
    _load_weights(model, payload["model_state"], path)
    model.to(device).eval()
    info = {
        "model_config": payload["model_config"],
        "data_config": payload["data_config"],
        "history": History.from_dict(payload["history"]) if payload["history"] is not None else None,
        "epoch": payload["epoch"],
        "unetlab_version": payload["unetlab_version"],
    }
    return model, info


def _payload(model, model_state, *, epoch, history, data_config, train_state) -> dict[str, Any]:
    """The checkpoint dict described in the module docstring."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(f"only models with a config dict (like unetlab.UNet) can be checkpointed; "
                         f"{type(model).__name__} has none")
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "unetlab_version": __version__,
        "model_config": dict(config),
        "model_state": model_state,
        "epoch": epoch,
        "history": history.to_dict() if history is not None else None,
        "data_config": data_config,
        "train_state": train_state,
    }


def _read_checkpoint(path: Path, device: str | torch.device) -> dict[str, Any]:
    """Load and check the checkpoint dict at ``path``; one clear error if anything is wrong."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch reports damage as RuntimeError, EOFError, KeyError, UnpicklingError, ...
        raise ValueError(f"cannot read checkpoint {path}: it is truncated, corrupt, or not a weights-only torch file "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no details'})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = sorted(map(str, payload))[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a unetlab checkpoint (expected a dict with format={CHECKPOINT_FORMAT!r}; "
                         f"found {found})")
    if payload.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {payload.get('format_version')!r}; this unetlab "
                         f"{__version__} reads version {CHECKPOINT_FORMAT_VERSION}")
    return payload


def _load_weights(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the weights in checkpoint {path} do not fit the model {model.config}: "
                         f"{str(err).splitlines()[0]} ...") from err


def _check_plain(value: Any, where: str) -> None:
    """Raise ValueError unless ``value`` is built from dict, list, tuple, str, int, float, bool and None only.

    Only such values load back with ``torch.load(weights_only=True)`` (a numpy float, for instance, does not).
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} keys must be strings; got {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif type(value) not in (str, int, float, bool, type(None)):
        raise ValueError(f"{where} is a {type(value).__module__}.{type(value).__name__}; store plain Python values "
                         "(int, float, str, bool, None, lists, tuples, dicts), e.g. with float(x) or .item()")
