"""The real-data recipe: fine-tune a binary UNet on labelled real images, choosing the step and the threshold on
images it holds out.

An engineer has a folder of real images with defect masks (a few, or a few hundred) and perhaps a model
pretrained on synthetic data. :func:`finetune` does what works on such data (measured on the magnetic-tile
images; README, "Sim to real"):

- **hold out** a stratified slice of the images (``val_fraction`` of each class, at least one image of every
  class that has two): they choose the best step and the decision threshold, and are never trained on;
- train on random ``crop`` x ``crop`` **windows**, each of an image picked uniformly and, with probability 1/2,
  over one of its defect pixels (real defects are small: uniform windows would mostly say "nothing here"; in a
  folder of mostly good parts few windows hold a defect, README), flipped (lossless; quarter turns and
  photometric changes cost Dice, measured), with Adam on a one-cycle schedule and BCE + per-image Dice
  (:class:`unetlab.BCEDiceLoss`, which weighs a tiny blowhole's window as much as a large patch's);
- optionally (``synthetic_share``, off by default) replace a share of the windows by **synthetic defects painted
  on defect-free images** (the ``backgrounds`` given, else the training images of a defect-free class). Measured on
  three magnetic-tile splits at k = 20 from the synthetic start, a quarter of them painted on the pool's good parts
  moved class Dice from 0.463 / 0.321 / 0.419 to 0.429 / 0.398 / 0.412: the weakest split gained, the others lost a
  little, the mean rose by 0.012, within what one fine-tune seed can tell (README, "Sim to real"); so it stays a
  knob to try, not the default;
- a **number of steps that follows the data**: ``steps_per_image`` per training image, between ``min_steps``
  and ``max_steps``, validated ``evals`` times along the way; defect-free images count only up to as many as
  the images with a defect (:meth:`FinetuneConfig.steps_for`: a folder of hundreds of good parts and a few
  dozen defects, as MVTec AD ships, would otherwise train the most steps mostly on windows of good parts);
- score each validation pass by the **class Dice** (:func:`unetlab.metrics.class_dice`: every defect class
  counts the same) at the best of a sweep of thresholds (a pretrained start is validated before the first step
  too); keep the **last weights unless the held-out images clearly prefer another step**: the best-scoring step
  replaces them only when it beats them in ``keep_confidence`` of the bootstrap resamples of the held-out images
  (:func:`win_rate`), and only when there are enough of them to be that sure (:func:`images_to_be_sure`). With
  fewer, a pretrained start is kept untouched and not trained at all (on 4 training images fine-tuning hurt it
  on 2 of 3 splits).
  A handful of held-out images cannot tell two steps apart: in a k = 20 magnetic-tile fine-tune the 6 held-out
  images preferred the pretrained start, while on the test images the last step was far better (README, "Sim to
  real"). A few dozen can, and then an overfitted end loses to an earlier step. The kept weights' threshold is
  then chosen again for predictions averaged over the four flips (:func:`unetlab.predict` with ``flips=True``),
  which is how the real-use paths predict, together with a **seed threshold** (:mod:`unetlab.decision`: keep
  only the regions of defect pixels with a confident core) when the held-out images score better with one. In
  this last choice the **false alarms on held-out defect-free images count** against a decision (class Dice
  alone ignores them: a class with no defect pixel takes no part); on the magnetic tiles it changed 5 of 24
  fine-tunes' decisions, each for a higher test class Dice, and none for a lower one (README, "Sim to real").
- **learn from the held-out images too once they have chosen** (``refit``): at k = 20 a fifth held out leaves 14
  images to learn from. The run then validates only in its first part (``choosing_share`` of the steps, on the
  training images alone), where the held-out images choose whether to train at all (or keep the untrained
  start); its last part trains on windows of every image, held-out ones included, within the same one-cycle
  schedule, and those last weights choose their decision as above on the held-out images, which they trained
  on too (a decision chosen on less trained weights was too low for them: on a synthetic MVTec-sized folder
  0.474 against 0.574). It is the default (``refit=True``) at every size. On three magnetic-tile splits and
  two fine-tune seeds at k = 20 it raised mean test class Dice from 0.426 to 0.479 (5 of 6 pairs up) in the
  same 1,000 steps; training the start again on every image after a shorter validated run (0.497) took 1,500
  steps, 281-315 s on a 2-core CPU, at the 5-minute limit. On the whole pool (149 images) it raised it from
  0.640 to 0.705 over three splits (2 of 3 up), with ``max_steps`` lowered from 2,000 to 1,400 at the same
  time so that the run fits 5 minutes there (about 275 s instead of 330-405 s; the fewer steps without the
  refit: 0.635); from fresh weights the same change lowered it from 0.369 to 0.326 (README, "Sim to real").

A fresh model (``model=None``) is ``UNet(depth=4, base=16)``: 204 px of context, enough for the large faint
defects of real parts, and its head starts at a 1% defect prior (:class:`unetlab.UNet`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from . import distributed
from .augment import AugmentConfig
from .checks import is_fraction, is_int, is_real
from .data import SyntheticDefects
from .decision import THRESHOLDS, best_decision, check_decision, within_pixel_budget
from .evaluate import predict, predict_masks, score_masks
from .history import History
from .metrics import confusion_counts
from .model import UNet
from .real import RandomCrops, RealSet, holdout_split
from .synth import PRESETS, Backgrounds, DefectConfig
from .train import fit

# Flips only. The photometric steps of DEFAULT_AUGMENT (brightness, contrast, gamma, blur, noise) erased the faint
# defects in our measurements (fray and uneven fell to 0.12 and 0.00 class Dice). Quarter turns cost too: a camera
# on a line sees a part in one orientation, and its texture, lighting and edges have directions that a turn swaps
# (fresh weights on the whole magnetic-tile pool, split 0: class Dice 0.318 with flips, 0.182 with flips and turns).
FINETUNE_AUGMENT = AugmentConfig.none().replace(flips=True)


@dataclass(frozen=True)
class FinetuneConfig:
    """The recipe's settings; the defaults are what the README measured. Invalid values raise ValueError.

    Attributes:
        crop: side of the training windows, px (a multiple of the model's ``2**depth``).
        batch_size: windows per optimiser step.
        lr: peak learning rate of the one-cycle schedule (Adam).
        defect_share: probability that a window is placed over a defect pixel of its image (uniformly picked;
            an image without one gets a uniform window), in [0, 1] (:class:`unetlab.real.RandomCrops`).
        steps_per_image: optimiser steps per training image (defect-free ones count up to as many as the images
            with a defect: :meth:`steps_for`); the total is clipped to [min_steps, max_steps].
        min_steps, max_steps: bounds of the number of steps.
        evals: validation passes, evenly spread over the run (each one is an "epoch" of :func:`unetlab.fit`).
        refit: once the held-out images have chosen whether to train, train the rest of the run on every image
            (held-out ones too), and choose the last weights' decision on the held-out images (:meth:`plan`):
            True (the default) or False.
        choosing_share: with a refit, the share of the steps that train on the training images alone and are
            validated (the validations as often per step as without one), in (0, 1]; 1 leaves no steps for
            every image.
        val_fraction: share of each class held out for validation, in (0, 1).
        keep_confidence: how sure the held-out images must be that the best-scoring step beats the last one
            before its weights replace the last ones: the share of bootstrap resamples it must win
            (:func:`win_rate`), among at least :func:`images_to_be_sure` held-out images with a defect, in
            [0, 1); 0 keeps the best-scoring step (plain early stopping).
        augment: augmentation of each window, or None for plain windows.
        synthetic_share: share of the windows replaced by synthetic defects painted on defect-free images
            (:class:`unetlab.synth.Backgrounds`: the ``backgrounds`` given to :func:`finetune`, else the training
            images of a defect-free class), in [0, 1]; 0 (the default) trains on the real windows only.
        synthetic_preset: the :data:`unetlab.synth.PRESETS` name those defects are drawn from (at ``crop`` px).
        amp: mixed precision for :func:`unetlab.fit` and for the held-out predictions (:func:`unetlab.predict`):
            "auto", "off", "bf16", "fp16".
        depth, base: the architecture of a fresh model (``model=None``).
    """

    crop: int = 128
    batch_size: int = 8
    lr: float = 1e-3
    defect_share: float = 0.5
    steps_per_image: int = 15
    min_steps: int = 1000
    max_steps: int = 1400
    evals: int = 10
    refit: bool = True
    choosing_share: float = 0.5
    val_fraction: float = 0.2
    keep_confidence: float = 0.9
    augment: AugmentConfig | None = FINETUNE_AUGMENT
    synthetic_share: float = 0.0
    synthetic_preset: str = "transfer"
    amp: str = "auto"
    depth: int = 4
    base: int = 16

    def __post_init__(self) -> None:
        for name in ("crop", "batch_size", "steps_per_image", "min_steps", "max_steps", "evals", "depth", "base"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"FinetuneConfig.{name} must be an int >= 1; got {getattr(self, name)!r}")
        if not isinstance(self.refit, bool):
            raise ValueError(f"FinetuneConfig.refit must be True or False; got {self.refit!r}")
        if not (is_real(self.choosing_share) and 0 < self.choosing_share <= 1):
            raise ValueError(f"FinetuneConfig.choosing_share must be in (0, 1]; got {self.choosing_share!r}")
        if self.min_steps > self.max_steps:
            raise ValueError(f"FinetuneConfig needs min_steps <= max_steps; got {self.min_steps} > {self.max_steps}")
        if not (is_real(self.lr) and 0 < self.lr < 1):
            raise ValueError(f"FinetuneConfig.lr must be a number in (0, 1); got {self.lr!r}")
        if not is_fraction(self.defect_share):
            raise ValueError(f"FinetuneConfig.defect_share must be in [0, 1]; got {self.defect_share!r}")
        if not (is_real(self.val_fraction) and 0 < self.val_fraction < 1):
            raise ValueError(f"FinetuneConfig.val_fraction must be in (0, 1); got {self.val_fraction!r}")
        if not (is_real(self.keep_confidence) and 0 <= self.keep_confidence < 1):
            raise ValueError(f"FinetuneConfig.keep_confidence must be in [0, 1); got {self.keep_confidence!r}")
        if not is_fraction(self.synthetic_share):
            raise ValueError(f"FinetuneConfig.synthetic_share must be in [0, 1]; got {self.synthetic_share!r}")
        if self.synthetic_preset not in PRESETS:
            raise ValueError(f"FinetuneConfig.synthetic_preset must be one of {sorted(PRESETS)}; got "
                             f"{self.synthetic_preset!r}")
        if self.augment is not None and not isinstance(self.augment, AugmentConfig):
            raise ValueError(f"FinetuneConfig.augment must be an AugmentConfig or None; got {self.augment!r}")

    def replace(self, **changes) -> FinetuneConfig:
        """A copy with some settings changed (validated)."""
        return dataclasses.replace(self, **changes)

    def steps_for(self, n_train: int, n_good: int = 0) -> int:
        """The number of optimiser steps for ``n_train`` training images, ``n_good`` of them defect-free, a multiple
        of ``evals``. The defect-free images count only up to as many as the images with a defect: in a folder of
        mostly good parts, most windows already show a good part, and more of them teach little more."""
        if not (is_int(n_train) and is_int(n_good) and 0 <= n_good <= n_train):
            raise ValueError(f"steps_for needs 0 <= n_good <= n_train (ints); got n_train={n_train!r}, "
                             f"n_good={n_good!r}")
        counted = n_train - n_good + min(n_good, n_train - n_good)
        steps = min(self.max_steps, max(self.min_steps, self.steps_per_image * counted))
        return max(self.evals, steps // self.evals * self.evals)

    def plan(self, train: RealSet, data: RealSet) -> tuple[int, int, int]:
        """The run's steps, its validations, and how many of its last steps train on every image of ``data``
        (0: none; the others train on ``train`` alone).

        Without a refit the run trains :meth:`steps_for` ``train``'s images, validated ``evals`` times. With one
        it trains :meth:`steps_for` all of ``data``, validated only over its first ``choosing_share`` (a whole
        number of the ``evals`` parts); the rest trains on every image: at k = 20 (14 + 6 images) 1,000 steps,
        500 of them on all 20; on a pool of 149 (119 + 30) 1,400, 700 of them on all 149."""
        if not self.refit:
            return self.steps_for(len(train), len(train.good_parts())), self.evals, 0
        every = self.steps_for(len(data), len(data.good_parts()))
        validations = max(1, round(self.evals * self.choosing_share))
        return every, validations, every - validations * (every // self.evals)


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        model: the binary UNet with the best weights, in eval mode.
        threshold: the decision threshold chosen with them on the held-out images (flip-averaged predictions; when
            ``refitted``, by weights that trained on those images too), or the ``start_decision``'s when the start
            is returned untrained.
        seed_threshold: chosen with it (:func:`unetlab.decision.best_decision`): None, or the probability a
            region of defect pixels must reach somewhere to be kept (:func:`unetlab.decision.defect_mask`).
        val_score: the held-out class Dice at that threshold; when ``refitted``, that of the last validated step
            instead (its own best threshold, without flips): the later steps trained on the held-out images, so
            their score there would say nothing.
        best_step: the optimiser step that the held-out images kept (``steps``: the last one; 0: the pretrained
            start, which they clearly preferred, or were too few to judge); ``steps`` the run's planned total (0
            when too few held-out images made training pointless: a pretrained start is then returned untrained).
        refit_steps: how many of the last steps trained on every image, held-out ones too
            (:meth:`FinetuneConfig.plan`; 0 without: not planned, or the held-out images kept the untrained
            start); ``refitted`` says whether they did.
        evals: one ``{"step", "val_class_dice", "threshold"}`` per validation pass.
        history: the :class:`unetlab.History` of the run of :func:`unetlab.fit` (``val_dice`` holds the class
            Dice; NaN for the epochs that trained on the held-out images too, which are not validated).
        train_stems, val_stems: which images trained and which validated.
        seconds: wall-clock time of the whole fine-tune.
    """

    model: nn.Module
    threshold: float
    val_score: float
    best_step: int
    steps: int
    evals: list[dict] = field(default_factory=list)
    history: History | None = None
    train_stems: list[str] = field(default_factory=list)
    val_stems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seed_threshold: float | None = None
    refit_steps: int = 0

    @property
    def refitted(self) -> bool:
        """Whether the returned weights trained on every image, the held-out ones too."""
        return self.refit_steps > 0

    @property
    def trained_on(self) -> list[str]:
        """The stems of the images the returned weights trained on: the held-out ones too when refitted."""
        return self.train_stems + (self.val_stems if self.refitted else [])


def best_threshold(probs: Sequence[np.ndarray], real: RealSet,
                   thresholds: Sequence[float] = THRESHOLDS) -> tuple[float, float]:
    """The threshold with the highest class Dice of ``probs`` against ``real``'s masks, and that class Dice.

    Args:
        probs: one (H, W) float probability map per image of ``real``, in its order.
        thresholds: candidates in [0, 1); a pixel is a defect when its probability is above the threshold.

    Returns:
        ``(threshold, class_dice)``; the lowest threshold on ties. Class Dice is
        :func:`unetlab.metrics.class_dice` over ``real.classes`` (NaN when no image has a defect pixel: then the
        first threshold is returned). :func:`unetlab.decision.best_decision` also chooses a seed threshold.
    """
    if len(probs) != len(real):
        raise ValueError(f"best_threshold got {len(probs)} probability maps for {len(real)} images")
    threshold, _, score = best_decision(probs, real.masks, real.classes, thresholds, seed_thresholds=())
    return threshold, score


def image_counts(probs: Sequence[np.ndarray], real: RealSet, threshold: float) -> np.ndarray:
    """Per-image pixel counts of ``probs > threshold`` against ``real``'s masks: an (N, 3) int64 array of tp, fp
    and fn, one row per image (probability maps as for :func:`best_threshold`)."""
    if len(probs) != len(real):
        raise ValueError(f"image_counts got {len(probs)} probability maps for {len(real)} images")
    counts = [torch.stack(confusion_counts(np.asarray(prob, np.float32)[None] > threshold,
                                           np.asarray(mask, bool)[None])[:3], 1)
              for prob, mask in zip(probs, real.masks)]  # each (1, 3): tp, fp, fn
    return torch.cat(counts).numpy() if counts else np.zeros((0, 3), np.int64)


def win_rate(a: np.ndarray, b: np.ndarray, classes: Sequence[str], *, resamples: int = 1000,
             seed: int = 0) -> float:
    """How often predictions ``a`` have a higher class Dice than ``b`` on the same images resampled: a paired
    bootstrap over the images (drawn with replacement, ``resamples`` times, from ``seed``).

    Args:
        a, b: (N, 3) tp, fp, fn per image (:func:`image_counts`) of two models on the same N images.
        classes: the N images' classes; class Dice is :func:`unetlab.metrics.class_dice` over them.

    Returns:
        The share of resamples in which ``a`` scores strictly higher than ``b``, in [0, 1] (ties and resamples
        without a defect pixel count as not higher). Near 1: the images clearly prefer ``a``; near 0.5 or below:
        they cannot tell, or prefer ``b``.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.shape != (len(classes), 3):
        raise ValueError(f"win_rate expects two (N, 3) count arrays for N = {len(classes)} images; "
                         f"got {a.shape} and {b.shape}")
    names = sorted(set(classes))
    onehot = np.eye(len(names))[[names.index(c) for c in classes]]  # (N, C)
    n = len(classes)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples)  # (B, N)

    def class_dices(counts: np.ndarray) -> np.ndarray:  # (B,) class Dice per resample, 0 without truth pixels
        # class_dice's formula, for all B resamples at once: per-class sums of the resampled images' counts
        tp, fp, fn = (weights @ (onehot * counts[:, j:j + 1]) for j in range(3))  # each (B, C)
        truth = tp + fn > 0
        dice = np.where(truth, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        return dice.sum(1) / np.maximum(truth.sum(1), 1)

    return float(np.mean(class_dices(a) > class_dices(b)))


def images_to_be_sure(confidence: float) -> int:
    """The fewest images with a defect that can make a choice ``confidence`` sure: n images that all prefer one
    model happen by chance (no real difference, each image a coin toss) with probability 0.5**n, so n must reach
    log(1 - confidence) / log(0.5): 4 images at 0.9. Fewer cannot tell, however they vote (a bootstrap of one
    image resamples only that image, and would call any difference certain)."""
    return max(0, math.ceil(math.log(1 - confidence) / math.log(0.5) - 1e-9))


def finetune(model: nn.Module | None, data: RealSet, config: FinetuneConfig = FinetuneConfig(), *, seed: int = 0,
             backgrounds: Backgrounds | None = None, start_decision: tuple[float, float | None] | None = None,
             device: str | torch.device | None = None, progress: bool = True,
             log: Callable[[str], None] = print) -> FinetuneResult:
    """Fine-tune ``model`` (or a fresh UNet) on ``data`` by the recipe of the module docstring.

    Args:
        model: a binary UNet to start from (trained in place), or None for fresh weights drawn from ``seed``.
        data: the labelled real images (at least 2, so one can be held out); any sizes.
        config: the recipe's settings.
        seed: seeds the held-out slice, the fresh weights, the windows and their augmentation: the same seed and
            data give the same model on the same machine.
        backgrounds: defect-free images for the synthetic windows (``config.synthetic_share``); None: the
            training images of a defect-free class, if there are any (else every window is real).
        start_decision: the ``(threshold, seed_threshold)`` stored with a pretrained ``model`` (e.g. by
            :func:`unetlab.pretrain`), or None. When too few held-out images can judge anything and the start is
            returned untrained, its own decision is kept too: images too few to choose a step are too few to
            choose a threshold. Without it (or once training ran) the held-out images choose the decision.
        log: where the plan and the time estimate are written (``print`` by default).

    Under torchrun the processes train one model (see :mod:`unetlab.distributed`; ``config.batch_size`` is the
    total over them), rank 0 validates, and every process returns the same result.

    Returns:
        A :class:`FinetuneResult`: the best model, its threshold and the validation record.
    """
    if not isinstance(data, RealSet):
        raise ValueError(f"finetune expects the labelled images as a unetlab.RealSet; got {type(data).__name__}")
    if len(data) < 2:
        raise ValueError(f"finetune needs at least 2 labelled images (one is held out to validate); got {len(data)}")
    if not isinstance(config, FinetuneConfig):
        raise ValueError(f"finetune expects a FinetuneConfig; got {type(config).__name__}")
    pretrained = model is not None
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = UNet(depth=config.depth, base=config.base)
    if getattr(model, "config", {}).get("out_channels", 1) != 1:
        raise ValueError("finetune trains a binary model (out_channels=1); got a multi-class one")
    multiple = 2 ** getattr(model, "config", {}).get("depth", 0)
    if config.crop % multiple:
        raise ValueError(f"FinetuneConfig.crop must be a multiple of {multiple} for this model; got {config.crop}")
    train_ids, val_ids = holdout_split(data.classes, config.val_fraction, seed=seed)
    train, val = data.subset(train_ids), data.subset(val_ids)
    needed, with_defect = images_to_be_sure(config.keep_confidence), int(sum(m.any() for m in val.masks))
    if pretrained and with_defect < needed:  # no choice could be sure, and the start would be kept: skip training
        log(f"only {with_defect} held-out image(s) with a defect ({needed} needed to be sure of any choice): keeping "
            f"the pretrained start untouched, without training (on so few labels training hurt it more often than "
            f"it helped)" + (", and its own decision" if start_decision else "") + "; label more images to fine-tune")
        return _kept_start(model, train, val, start_decision, device, config.amp)
    steps, validations, refit_steps = config.plan(train, data)
    per_eval = steps // config.evals
    on_every = refit_steps // per_eval  # the last epochs, on windows of every image
    parts = [(train, config.evals - on_every)] + ([(data, on_every)] if on_every else [])
    loader, painted = _windows(parts, steps, config, backgrounds, seed)
    log(f"fine-tuning on {len(train)} images ({len(val)} held out to choose "
        + ("whether to train and the threshold" if refit_steps else "the step and threshold")
        + f"): {steps} steps of {config.batch_size} windows of {config.crop} px, {validations} validations"
        + (f"; the last {refit_steps} steps on all {len(data)} images (refit)" if refit_steps else "")
        + f"; {painted}")

    begin = start = time.perf_counter()
    record, best, last = [], {}, {}
    # The steps are scored by class Dice, which a class without any defect pixel among the held-out images (the
    # good parts) takes no part in: its images are not predicted at each validation (in a folder of many good
    # parts they are most of the held-out images, and large ones cost seconds each) and count as all zeros.
    good = set(val.good_parts())
    scored = [i for i in range(len(val)) if i not in good] or list(range(len(val)))
    scored_val = val.subset(scored)

    def keep_if_best(net: nn.Module, step: int) -> float:
        """Validate ``net`` after ``step`` steps; keep its weights when it is the best so far."""
        probs = [predict(net, image, device=device, amp=config.amp) for image in scored_val.images]
        threshold, value = best_threshold(probs, scored_val)
        record.append({"step": step, "val_class_dice": value, "threshold": threshold})
        counts = np.zeros((len(val), 3), np.int64)  # win_rate resamples all held-out images, as before
        counts[scored] = image_counts(probs, scored_val, threshold)
        last.update(score=value, step=step, counts=counts)
        if not best or value > best["score"]:
            best.update(last, state={k: v.detach().clone() for k, v in net.state_dict().items()})
        return value if not np.isnan(value) else 0.0

    def kept_weights() -> dict:
        """The validation (and weights, under "state") to keep: the last ones unless the held-out images are sure
        of another. With a refit only the untrained start can replace them: training goes on from the last
        validated weights, on every image."""
        if with_defect < needed:  # nothing can be sure (a pretrained start did not train at all)
            log(f"only {with_defect} held-out image(s) with a defect ({needed} needed to be sure of a choice): "
                "keeping the last weights")
            return last
        if best["step"] == last["step"] or (refit_steps and best["step"] > 0):
            return last
        wins = win_rate(best["counts"], last["counts"], val.classes, seed=seed)
        sure = wins >= config.keep_confidence
        kept = "the untrained start" if best["step"] == 0 else f"step {best['step']}"
        log(f"step {best['step']} scored best on the {len(val)} held-out images ({best['score']:.3f} against "
            f"{last['score']:.3f} for step {last['step']}) and wins {wins:.0%} of their bootstrap resamples: "
            + (f"keeping {kept}" if sure else "not sure enough, keeping the last weights"))
        return best if sure else last  # last has no "state": the model holds the last weights already

    if pretrained:  # step 0 is a candidate too: on few labels, training can make a good start worse
        distributed.on_main(lambda: keep_if_best(model, 0))
        start = time.perf_counter()
    epochs_done = iter(range(1, config.evals + 1))

    def validate(net: nn.Module) -> float | None:  # fit calls it after every per_eval steps
        step = next(epochs_done) * per_eval
        if step > validations * per_eval:  # these steps trained on the held-out images too: not scored
            return None
        trained = time.perf_counter()
        value = keep_if_best(net, step)
        if step == per_eval:  # the later parts train about as fast
            train_s, val_s = trained - start, time.perf_counter() - trained
            # The decision predicts the scored images and at most as many good-part pixels, with 4 flips each.
            scored_pixels = sum(image.size for image in scored_val.images)
            good_pixels = sum(val.images[i].size for i in good)
            decision_s = 4 * val_s * (1 + min(1.0, good_pixels / max(1, scored_pixels)))
            to_go = train_s * (config.evals - 1) + val_s * (validations - 1) + decision_s
            log(f"first {per_eval} steps took {train_s:.0f} s and a validation {val_s:.0f} s: about "
                f"{to_go / 60:.1f} min to go")
        return value

    history = fit(model, loader, None, epochs=config.evals, lr=config.lr, scheduler="onecycle", device=device,
                  progress=progress, amp=config.amp, seed=seed, validate=validate)
    if distributed.is_main():  # under torchrun only rank 0 validated
        best = kept_weights()
    if "state" in best:  # under torchrun only rank 0 validated: it shares the weights and the record it kept
        model.load_state_dict(best.pop("state"))
    distributed.share_weights(model)
    record, best = distributed.on_main(lambda: (record, best))
    refitted = refit_steps > 0 and best["step"] > 0  # not when the held-out images kept the untrained start
    threshold, seed_threshold, score = _flip_decision(model, val, device, config.amp)
    if refitted:  # the decision is chosen by weights that trained on the held-out images: their score says nothing
        score = best["score"]
    return FinetuneResult(model=model, threshold=threshold, val_score=score,
                          best_step=steps if refitted else best["step"], steps=steps, evals=record, history=history,
                          train_stems=train.stems, val_stems=val.stems, seconds=time.perf_counter() - begin,
                          seed_threshold=seed_threshold, refit_steps=refit_steps if refitted else 0)


class _PartsByEpoch(Sampler):
    """Indices into the concatenation of datasets of ``lengths`` items: each of ``epochs[j]`` successive epochs
    (counted from 1, set by :func:`unetlab.fit` through ``set_epoch``) draws ``per_epoch`` items of part ``j``,
    uniformly with replacement, from one generator seeded by ``seed`` (so every process of a torchrun draws the
    same; with one part, exactly what ``RandomSampler(replacement=True, generator=...)`` draws)."""

    def __init__(self, lengths: Sequence[int], epochs: Sequence[int], per_epoch: int, seed: int) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        self.lengths, self.ends = list(lengths), np.cumsum(epochs).tolist()
        self.per_epoch, self.epoch = int(per_epoch), 1
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self):
        part = min(int(np.searchsorted(self.ends, self.epoch)), len(self.lengths) - 1)
        drawn = torch.randint(self.lengths[part], (self.per_epoch,), generator=self.generator)
        return iter((drawn + self.offsets[part]).tolist())


def _windows(parts: Sequence[tuple[RealSet, int]], steps: int, config: FinetuneConfig,
             backgrounds: Backgrounds | None, seed: int) -> tuple[DataLoader, str]:
    """The training loader of a run of ``steps`` steps in ``config.evals`` epochs: ``parts`` is ``(images,
    epochs)`` in order, each epoch drawing its ``steps // evals`` batches of windows of those images (under
    torchrun every process draws the same windows and takes its share of each batch); and the phrase of
    :func:`_with_synthetic`. A part's windows depend on (its images, ``seed``, the window's index) only."""
    windows = []
    for images, _ in parts:
        crops = RandomCrops(images.images, images.masks, n=steps * config.batch_size, size=config.crop, seed=seed,
                            augment=config.augment, defect_share=config.defect_share)
        part, painted = _with_synthetic(crops, images, backgrounds, config, seed)
        windows.append(part)
    per_epoch = steps // config.evals * config.batch_size
    sampler = _PartsByEpoch([len(w) for w in windows], [epochs for _, epochs in parts], per_epoch, seed)
    return distributed.sharded_loader(ConcatDataset(windows), config.batch_size, sampler), painted


class MixedWindows(Dataset):
    """Real training windows, a share of them replaced by synthetic ones: item ``i`` is ``synthetic[i]`` when a
    stream keyed by ``(seed, i)`` draws below ``share``, else ``real[i]`` (so it depends on (seed, i) only).
    Both datasets give ``(image (1, S, S), mask (1, S, S))`` items and have the same length."""

    def __init__(self, real: Dataset, synthetic: Dataset, share: float, seed: int) -> None:
        if len(real) != len(synthetic):
            raise ValueError(f"MixedWindows needs datasets of one length; got {len(real)} and {len(synthetic)}")
        self.real, self.synthetic, self.share, self.seed = real, synthetic, float(share), int(seed)

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The trailing 1 keeps this stream apart from other per-item streams keyed by (seed, i).
        painted = np.random.default_rng([self.seed, int(i), 1]).random() < self.share
        return (self.synthetic if painted else self.real)[i]


def _with_synthetic(crops: RandomCrops, train: RealSet, backgrounds: Backgrounds | None, config: FinetuneConfig,
                    seed: int) -> tuple[Dataset, str]:
    """The training windows with ``config.synthetic_share`` of them synthetic, and a phrase that says so."""
    if config.synthetic_share == 0:
        return crops, "real windows only"
    if backgrounds is None:
        good = train.good_parts()
        if not good:
            return crops, "real windows only (no defect-free training image to paint synthetic defects on)"
        backgrounds = Backgrounds([train.images[i] for i in good])
    elif not isinstance(backgrounds, Backgrounds):
        raise ValueError(f"finetune expects backgrounds as a unetlab.Backgrounds (or None); got "
                         f"{type(backgrounds).__name__}")
    cfg = DefectConfig.preset(config.synthetic_preset, size=config.crop)
    painted = SyntheticDefects(len(crops), cfg, seed, backgrounds=backgrounds)
    return (MixedWindows(crops, painted, config.synthetic_share, seed),
            f"{config.synthetic_share:.0%} of them synthetic defects ({config.synthetic_preset!r} preset) painted "
            f"on {len(backgrounds)} defect-free image(s)")


def _flip_decision(model: nn.Module, val: RealSet, device, amp: str) -> tuple[float, float | None, float]:
    """The threshold and seed threshold of ``model`` chosen on ``val`` and its class Dice there
    (:func:`unetlab.decision.best_decision`), the false positives on ``val``'s defect-free images counted against
    it (``count_good_parts``): as many of them, whole and in ``val``'s order, as have at most the pixels of the
    other images together (:func:`unetlab.decision.within_pixel_budget`; a folder of hundreds of large good parts,
    as MVTec AD ships, would otherwise cost minutes). The model predicts with flips, as predict_masks and
    `unetlab predict` do, so its decision is chosen the same way. (The steps were scored by the threshold alone, on
    the defect classes: this last choice leaves the training run as it was.)"""
    good = val.good_parts()
    others = sorted(set(range(len(val))) - set(good))
    budget = sum(val.images[i].size for i in others)
    chosen = val.subset(others + [good[j] for j in within_pixel_budget([val.images[i].size for i in good], budget)])
    model.eval()
    return distributed.on_main(lambda: best_decision(
        [predict(model, image, device=device, flips=True, amp=amp) for image in chosen.images], chosen.masks,
        chosen.classes, count_good_parts=True))


def _kept_start(model: nn.Module, train: RealSet, val: RealSet, decision: tuple[float, float | None] | None,
                device, amp: str) -> FinetuneResult:
    """The untrained pretrained start as a :class:`FinetuneResult` with its own ``decision`` (scored on ``val``),
    or, without one, the decision ``val`` chooses."""
    begin = time.perf_counter()
    if decision is None or decision[0] is None:
        threshold, seed_threshold, score = _flip_decision(model, val, device, amp)
    else:
        threshold, seed_threshold = decision
        check_decision(threshold, seed_threshold, "finetune's start_decision")
        model.eval()
        score = distributed.on_main(lambda: score_masks(predict_masks(
            model, val, threshold, seed_threshold, device=device, progress=False, amp=amp), val)["class_dice"])
    return FinetuneResult(model=model, threshold=threshold, val_score=score, best_step=0, steps=0,
                          evals=[{"step": 0, "val_class_dice": score, "threshold": threshold}], history=History(),
                          train_stems=train.stems, val_stems=val.stems, seconds=time.perf_counter() - begin,
                          seed_threshold=seed_threshold)
