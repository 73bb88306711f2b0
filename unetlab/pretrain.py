"""Synthetic-only pretraining for real use: a binary UNet that has seen many defects and no real label.

:func:`pretrain` trains on samples of :func:`unetlab.make_sample` drawn from a preset (by default
``"transfer"``: the domain-randomised surfaces and camera of chapter 06 plus the defect kinds real inspection
sees, fainter than the tutorial's), on procedural surfaces or, better, on windows of your own defect-free images
(:class:`unetlab.synth.Backgrounds`): then the model learns what a defect does to *your* surface. The best epoch
is chosen on held-out synthetic samples; the decision (:mod:`unetlab.decision`: the threshold and, when it scores
better, a seed threshold) on those samples together with the background images themselves, unpainted: a picture of
a good part is the one real truth the user has given (no defect anywhere), so the false alarms the model raises on
real surface count against a decision as much as missed synthetic defects do. No real label is needed anywhere.
Both numbers are stored with the model; :func:`unetlab.finetune` continues from it when a few labelled images exist.

Samples are ``size`` x ``size`` (128 px by default): real defects are local, and a quarter of the pixels of a
256 px sample is four times the samples for the same time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from . import distributed
from .checks import is_int, is_real
from .data import SPLIT_START, EpochShuffle, SyntheticDefects
from .decision import best_decision, within_pixel_budget
from .device import resolve_device
from .evaluate import predict, threshold_sweep
from .history import History
from .model import UNet
from .synth import PRESETS, Backgrounds, DefectConfig
from .train import fit


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining recipe; invalid values raise ValueError.

    Attributes:
        preset: the :data:`unetlab.synth.PRESETS` name the samples are drawn from.
        knobs: DefectConfig fields changed on top of the preset, e.g. ``{"pits": (0, 0)}`` (an ablation).
        size: sample side in px (a multiple of ``2**depth``).
        n_train: training samples per epoch (each epoch sees the same samples: they are indexed by seed).
        epochs: passes over them; the best epoch by validation Dice is kept.
        n_val: held-out synthetic samples that choose the best epoch and the threshold.
        batch_size, lr: Adam on a one-cycle schedule peaking at ``lr``.
        amp: mixed precision for :func:`unetlab.fit` and for the predictions that choose the decision.
        depth, base: the UNet's architecture (the same as :func:`unetlab.finetune` builds fresh).
        workers: DataLoader processes drawing the samples (the weights do not depend on it). ``"auto"``: none on a
            CPU, where a worker process takes cores from the training threads (on 2 cores drawing the samples in
            the training process was 7% faster: the README's "Sim to real"), one on a GPU, which it keeps fed.
    """

    preset: str = "transfer"
    knobs: dict = field(default_factory=dict)
    size: int = 128
    n_train: int = 4800
    epochs: int = 4
    n_val: int = 200
    batch_size: int = 8
    lr: float = 2e-3
    amp: str = "auto"
    depth: int = 4
    base: int = 16
    workers: int | str = "auto"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"PretrainConfig.preset must be one of {sorted(PRESETS)}; got {self.preset!r}")
        if not isinstance(self.knobs, dict):
            raise ValueError(f"PretrainConfig.knobs must be a dict of DefectConfig fields; got {self.knobs!r}")
        self.defect_config()  # the knobs are validated by DefectConfig
        for name in ("size", "n_train", "epochs", "n_val", "batch_size", "depth", "base"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name} must be an int >= 1; got {getattr(self, name)!r}")
        if self.workers != "auto" and not (is_int(self.workers) and self.workers >= 0):
            raise ValueError(f"PretrainConfig.workers must be an int >= 0 or 'auto'; got {self.workers!r}")
        if self.size % 2**self.depth:
            raise ValueError(f"PretrainConfig.size must be a multiple of {2**self.depth} for depth {self.depth}; "
                             f"got {self.size}")
        if not (is_real(self.lr) and 0 < self.lr < 1):
            raise ValueError(f"PretrainConfig.lr must be a number in (0, 1); got {self.lr!r}")

    def replace(self, **changes) -> PretrainConfig:
        """A copy with some settings changed (validated)."""
        return dataclasses.replace(self, **changes)

    def defect_config(self) -> DefectConfig:
        """The generator's knobs: the preset at this sample size."""
        return DefectConfig.preset(self.preset, **{**self.knobs, "size": self.size})


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: ``model`` (best epoch, eval mode), ``threshold``, ``seed_threshold`` (None
    or a number above it) and ``val_dice`` (pooled Dice with them of the synthetic validation samples and the
    unpainted background images that chose them), ``history``, ``seconds``."""

    model: nn.Module
    threshold: float
    val_dice: float
    history: History
    seconds: float
    seed_threshold: float | None = None


def pretrain(config: PretrainConfig = PretrainConfig(), backgrounds: Backgrounds | None = None, *, seed: int = 0,
             device: str | torch.device | None = None, progress: bool = True,
             log: Callable[[str], None] = print) -> PretrainResult:
    """Train a fresh binary UNet on synthetic samples only (see the module docstring).

    Args:
        config: the recipe.
        backgrounds: defect-free images to paint on, or None for procedural surfaces.
        seed: seeds the samples and the weights.

    Under torchrun the processes train one model (see :mod:`unetlab.distributed`; ``config.batch_size`` is the
    total over them), rank 0 validates, and every process returns the same result.
    """
    if not isinstance(config, PretrainConfig):
        raise ValueError(f"pretrain expects a PretrainConfig; got {type(config).__name__}")
    cfg = config.defect_config()
    train = SyntheticDefects(config.n_train, cfg, seed, SPLIT_START["train"], backgrounds=backgrounds)
    val = SyntheticDefects(config.n_val, cfg, seed, SPLIT_START["val"], backgrounds=backgrounds)
    n_workers = config.workers if config.workers != "auto" else int(resolve_device(device).type != "cpu")
    workers = dict(num_workers=n_workers, persistent_workers=n_workers > 0)
    # The order of each epoch comes from (seed, epoch) alone: the same in every process (see sharded_loader) and
    # whatever the number of workers.
    loaders = [distributed.sharded_loader(train, config.batch_size, EpochShuffle(len(train), seed), **workers),
               DataLoader(val, batch_size=config.batch_size, **workers)]
    surfaces = f"{len(backgrounds)} background image(s)" if backgrounds is not None else "procedural surfaces"
    log(f"pretraining on {config.n_train} synthetic {config.size} px samples ({config.preset!r} preset, "
        f"{surfaces}) x {config.epochs} epochs")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(depth=config.depth, base=config.base)
    model_best = {}

    def keep_best(net: nn.Module) -> float:
        sweep = threshold_sweep(net, loaders[1], device=device, progress=False)
        if not model_best or sweep["best_dice"] > model_best["dice"]:
            model_best.update(dice=sweep["best_dice"],
                              state={k: v.detach().clone() for k, v in net.state_dict().items()})
        return sweep["best_dice"]

    history = fit(model, loaders[0], None, epochs=config.epochs, lr=config.lr, scheduler="onecycle", device=device,
                  progress=progress, amp=config.amp, seed=seed, validate=keep_best)
    if "state" in model_best:  # under torchrun only rank 0 validated: it shares the weights and scores it kept
        model.load_state_dict(model_best.pop("state"))
    distributed.share_weights(model)
    model.eval()
    threshold, seed_threshold, dice = distributed.on_main(
        lambda: _decision(model, val, backgrounds, seed, device, config.amp))
    return PretrainResult(model=model, threshold=threshold, val_dice=dice, history=history,
                          seconds=time.perf_counter() - start, seed_threshold=seed_threshold)


def _decision(model: nn.Module, val: SyntheticDefects, backgrounds: Backgrounds | None, seed: int,
              device, amp: str) -> tuple[float, float | None, float]:
    """The kept model's threshold and seed threshold (or None) chosen by :func:`unetlab.decision.best_decision`
    (one class: the pooled Dice) on the synthetic validation samples plus up to as many pixels of unpainted
    background images (whole images in a seeded order, at least one, flip-averaged as real images are predicted;
    their truth is "no defect"), and that Dice. The epoch was chosen before, on the samples alone, so this last choice
    leaves the training run as it was."""
    items = [val[i] for i in range(len(val))]  # (1, size, size) image and mask tensors
    images = torch.stack([image for image, _ in items])  # (N, 1, size, size)
    probs = list(predict(model, images, device=device, amp=amp).cpu().numpy()[:, 0])  # N x (size, size)
    masks = [mask[0].numpy() > 0.5 for _, mask in items]
    order = np.random.default_rng(seed).permutation(len(backgrounds)) if backgrounds is not None else []
    goods = [backgrounds.images[k] for k in order]  # (H, W) float32 in [0, 1] each
    for i in within_pixel_budget([good.size for good in goods], images[:, 0].numel()):  # as many as synthetic
        probs.append(predict(model, goods[i], device=device, flips=True, amp=amp))
        masks.append(np.zeros(goods[i].shape, bool))
    return best_decision(probs, masks, ["one class"] * len(probs))
