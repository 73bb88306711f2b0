"""The checkpoint format: one file, written atomically, loaded with ``torch.load(weights_only=True)``.

``torch.save`` writes to a temporary file in the same folder, then ``os.replace`` puts it in place, so an
interrupted run never leaves a half-written checkpoint. The file holds only tensors, dicts, lists, strings and
numbers (``weights_only=True`` cannot run code hidden in a file)::

    format            "unetlab.checkpoint"
    format_version    2
    unetlab_version   the library version that wrote it
    model_config      dict: ``UNet(**model_config)`` rebuilds the architecture
    model_state       state_dict of the weights to use: the best epoch by validation Dice
                      (the last epoch when there is no validation)
    epoch             the epoch those weights come from (1-based), or None
    history           History.to_dict() up to the last finished epoch, or None
    data_config       plain dict describing the data (e.g. the DefectConfig as a dict), or None
    train_state       what ``fit(..., resume=True)`` needs, or None (see :func:`train_state`)
    sha256            :func:`weights_digest` of model_config, model_state and train_state
    threshold         the decision threshold chosen on validation data (a pixel is a defect when its
                      probability is above it), or None: then users of the model take 0.5 (optional key:
                      files written before it existed have none)
    seed_threshold    None, or the probability a region of defect pixels must reach somewhere to be kept
                      (:func:`unetlab.decision.defect_mask`; optional key, like threshold)

Epochs are counted from 1: ``epoch=3`` means "after three passes over the training data".

What loading checks, before the weights are used: every field above is present; no tensor claims more bytes
than the whole file (a view can describe gigabytes with a few bytes on disk); the sha256 matches, so one
flipped bit in the weights, the config or the training state is an error, not a slightly different model; the
model_config builds a bounded :class:`UNet` (see :data:`unetlab.model.MAX_PARAMETERS`) whose weights fit; and no
weight is NaN or infinite (writing refuses those too). The digest covers what decides the model's output and
how a resumed run continues; the other fields (history, data_config, epoch, and plain fields a later version
adds) are outside it, so adding one does not invalidate older files. Version 1 files (unetlab before the
digest) have no sha256: they are read with every other check, and there is nothing to verify their weights
against.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._version import __version__
from .checks import is_real
from .decision import check_decision
from .device import resolve_device
from .history import History
from .io import atomic_write
from .model import UNet

CHECKPOINT_FORMAT = "unetlab.checkpoint"
CHECKPOINT_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_FIELDS = ("model_config", "model_state", "epoch", "history", "data_config", "train_state")
_DIGESTED = ("model_config", "model_state", "train_state")


def train_state(model_state: dict[str, Tensor], optimizer: torch.optim.Optimizer, *, epoch: int,
                epochs: int | None = None, scheduler: str | None = None, schedule: Any = None,
                scaler: torch.amp.GradScaler | None = None, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``train_state`` entry, the one place its layout is written: the LAST finished epoch's weights and
    optimiser state, the scheduler's name and state, the gradient scaler's state, that ``epoch``, the planned
    number of ``epochs`` (None when no schedule depends on it) and ``run``, the plain settings a resumed run must
    share (``fit`` records its lr, seed, batch size, number of training images and steps per epoch)."""
    return {
        "run": run or {},
        "epoch": epoch,
        "epochs": epochs,
        "model_state": model_state,
        "optimizer_state": optimizer.state_dict(),
        "scheduler": scheduler,
        "scheduler_state": schedule.state_dict() if schedule is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None else {},
    }


def write_checkpoint(path: str | os.PathLike, model: nn.Module, model_state: dict[str, Tensor], *,
                     epoch: int | None, history: History | None, data_config: dict | None,
                     train_state: dict[str, Any] | None, threshold: float | None = None,
                     seed_threshold: float | None = None) -> Path:
    """Write the checkpoint dict of the module docstring to ``path`` atomically; return the path."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(f"only models with a config dict (like unetlab.UNet) can be checkpointed; "
                         f"{type(model).__name__} has none")
    if data_config is not None:
        check_plain(data_config, "data_config")
    for where, state in (("", model_state), ("train_state ", (train_state or {}).get("model_state") or {})):
        bad = non_finite(state)
        if bad:
            raise ValueError(f"refusing to write checkpoint {path}: the {where}weights hold NaN or infinite values "
                             f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); training diverged")
    _check_stored_decision(threshold, seed_threshold)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "unetlab_version": __version__,
        "model_config": dict(config),
        "model_state": model_state,
        "epoch": epoch,
        "history": history.to_dict() if history is not None else None,
        "data_config": data_config,
        "train_state": train_state,
        "threshold": None if threshold is None else float(threshold),
        "seed_threshold": None if seed_threshold is None else float(seed_threshold),
    }
    payload["sha256"] = weights_digest(payload)
    return atomic_write(path, lambda f: torch.save(payload, f))


def store_decision(path: str | os.PathLike, threshold: float, seed_threshold: float | None = None) -> Path:
    """Record in the checkpoint at ``path`` the decision chosen after training (e.g. a threshold swept on
    validation images), so that ``predict`` and ``evaluate`` use it by default; the rest of the file stays as it
    was (the decision is outside the sha256). Written atomically; returns the path."""
    if threshold is None:
        raise ValueError("store_decision needs a threshold; got None")
    _check_stored_decision(threshold, seed_threshold)
    path = Path(path)
    payload = read_checkpoint(path)
    payload["threshold"] = float(threshold)
    payload["seed_threshold"] = None if seed_threshold is None else float(seed_threshold)
    return atomic_write(path, lambda f: torch.save(payload, f))


def _check_stored_decision(threshold: float | None, seed_threshold: float | None) -> None:
    if threshold is not None and not (is_real(threshold) and 0 <= threshold < 1):
        raise ValueError(f"a checkpoint's threshold must be a number in [0, 1) or None; got {threshold!r}")
    if seed_threshold is not None:
        if threshold is None:
            raise ValueError("a checkpoint's seed_threshold needs a threshold below it; got threshold=None")
        check_decision(threshold, seed_threshold, "a checkpoint")


def weights_digest(payload: dict[str, Any]) -> str:
    """sha256 hex digest of a checkpoint dict's model_config, model_state and train_state.

    Independent of the device and memory format the tensors are in: each is hashed as its dtype, shape and
    bytes in row-major order; dict keys in sorted order; lists and tuples alike; plain values by type and repr.
    """
    digest = hashlib.sha256()
    _feed(digest, {name: payload.get(name) for name in _DIGESTED})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"tensor {t.dtype} {tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}\n".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}\n".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"list {len(value)}\n".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__} {value!r}\n".encode())


def non_finite(state: dict[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold a NaN or an infinity."""
    return [name for name, t in state.items()
            if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    history: History | None = None,
    data_config: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int | None = None,
    threshold: float | None = None,
    seed_threshold: float | None = None,
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
        threshold: the decision threshold chosen on validation data, in [0, 1), stored for ``predict`` and
            ``evaluate`` to use by default.
        seed_threshold: chosen with it, in (threshold, 1), or None (see :mod:`unetlab.decision`).
    """
    epoch = epoch if epoch is not None else (history.epochs if history is not None else None)
    state = model.state_dict()
    resumable = train_state(state, optimizer, epoch=epoch or 0) if optimizer is not None else None
    return write_checkpoint(path, model, state, epoch=epoch, history=history, data_config=data_config,
                            train_state=resumable, threshold=threshold, seed_threshold=seed_threshold)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, dict[str, Any]]:
    """Rebuild the UNet saved in ``path`` on ``device``, in eval mode, with its best weights (checked as the
    module docstring says).

    Returns:
        ``(model, info)`` where info has ``model_config``, ``data_config``, ``history`` (a :class:`History` or
        None), ``epoch`` (of the weights), ``unetlab_version`` and ``threshold`` (the decision threshold chosen
        on validation data; None when the checkpoint has none: use 0.5) and ``seed_threshold`` (None when it has
        none).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated, corrupt (its sha256 does not match), not a unetlab checkpoint, lacks a
            field, describes a model too large to build, or holds weights that do not fit the architecture it
            describes or are NaN or infinite. The message names the path and the problem.
    """
    path = Path(path)
    payload = read_checkpoint(path)
    try:
        model = UNet(**payload["model_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path} has an invalid model_config {payload['model_config']!r}: {err}") from err
    load_weights(model, payload["model_state"], path)
    model.to(resolve_device(device)).eval()
    info = {
        "model_config": payload["model_config"],
        "data_config": payload["data_config"],
        "history": History.from_dict(payload["history"]) if payload["history"] is not None else None,
        "epoch": payload["epoch"],
        "unetlab_version": payload["unetlab_version"],
        "threshold": payload.get("threshold"),
        "seed_threshold": payload.get("seed_threshold"),
    }
    return model, info


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load the checkpoint dict at ``path`` onto the CPU and check its fields, tensor sizes and digest (see the
    module docstring); one clear error if anything is wrong. The weights themselves are checked by
    :func:`load_weights`."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports damage as RuntimeError, EOFError, KeyError, UnpicklingError, ...
        raise ValueError(f"cannot read checkpoint {path}: it is truncated, corrupt, or not a weights-only torch file "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no details'})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = sorted(map(str, payload))[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a unetlab checkpoint (expected a dict with format={CHECKPOINT_FORMAT!r}; "
                         f"found {found})")
    version = payload.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"checkpoint {path} has format version {version!r}; this unetlab {__version__} reads "
                         f"versions {' and '.join(map(str, READABLE_VERSIONS))}")
    missing = [name for name in _FIELDS + (("sha256",) if version >= 2 else ()) if name not in payload]
    if missing:
        raise ValueError(f"checkpoint {path} lacks the field(s) {missing}: it is damaged or was not written by "
                         f"unetlab")
    if not isinstance(payload["model_config"], dict) or not isinstance(payload["model_state"], dict):
        raise ValueError(f"checkpoint {path} is damaged: model_config and model_state must be dicts; got "
                         f"{type(payload['model_config']).__name__} and {type(payload['model_state']).__name__}")
    _check_tensor_sizes(payload, path, path.stat().st_size)
    if version >= 2 and weights_digest(payload) != payload["sha256"]:
        raise ValueError(f"checkpoint {path}: its weights do not match the sha256 stored with them: the file is "
                         f"damaged (a changed bit, a bad copy or disk) or was edited; it cannot be trusted")
    return payload


def _check_tensor_sizes(value: Any, path: Path, file_bytes: int, where: str = "checkpoint") -> None:
    """ValueError if a tensor anywhere in ``value`` claims more bytes than the whole file holds (only a view with
    made-up strides can), before anything reads it whole."""
    if isinstance(value, Tensor):
        claimed = value.numel() * value.element_size()
        if claimed > file_bytes:
            raise ValueError(f"{path}: {where} claims {claimed:,} bytes but the file has only {file_bytes:,}: "
                             f"the file is damaged or hostile")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_tensor_sizes(item, path, file_bytes, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_tensor_sizes(item, path, file_bytes, f"{where}[{i}]")


def load_weights(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """``model.load_state_dict(state)``, with a ValueError naming the checkpoint when the weights do not fit the
    model or are NaN or infinite (shapes are compared first, so nothing is computed on misfitting tensors)."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the weights in checkpoint {path} do not fit the model {model.config}: "
                         f"{str(err).splitlines()[0]} ...") from err
    bad = non_finite(state)
    if bad:
        raise ValueError(f"checkpoint {path} holds NaN or infinite weights ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}): the run that wrote it diverged; it cannot be used")


def check_plain(value: Any, where: str) -> None:
    """Raise ValueError unless ``value`` is built from dict, list, tuple, str, int, float, bool and None only.

    Only such values load back with ``torch.load(weights_only=True)`` (a numpy float, for instance, does not).
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} keys must be strings; got {key!r}")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    elif type(value) not in (str, int, float, bool, type(None)):
        raise ValueError(f"{where} is a {type(value).__module__}.{type(value).__name__}; store plain Python values "
                         "(int, float, str, bool, None, lists, tuples, dicts), e.g. with float(x) or .item()")
