"""Sim-to-real: score a model on real images, fine-tune it on a few of them, and run the k-shot experiment.

The question of chapter 06: how much does synthetic pretraining help when only ``k`` real labelled images exist?
For each ``k`` a model is fine-tuned on the first ``k`` images of the fine-tune pool (``real.real_splits``) and
scored on the real test set, which is never trained on. The same ``k`` images also train a model from scratch,
so the difference is what the synthetic data is worth. The real images themselves (:class:`unetlab.real.RealSet`,
the splits, the crops) live in :mod:`unetlab.real`.

Scores on real images (:func:`score_masks`) follow :mod:`unetlab.metrics` (0 / 0 = 1):

- pooled Dice per defect class (the classes come from the folder, e.g. Blowhole ... Uneven), over the images of
  that class, and ``class_dice``, their mean (the library's one class Dice, :func:`unetlab.metrics.class_dice`):
  every kind of defect counts the same. This is the headline number,
  because real defect classes differ in size by two orders of magnitude (a blowhole covers 0.2% of its image, an
  uneven patch 24%): the pooled Dice over all pixels is, in effect, the Dice of the largest class;
- pooled Dice and IoU over the whole test set (every defect pixel counts once);
- ``fp_rate_defect_free``: the share of test images without any defect (empty masks) where the model flags at
  least one pixel.

Real images have any size: predictions run on the whole image, reflect-padded to a multiple of ``2**depth``
(:func:`unetlab.predict`), never resized. Fine-tuning trains on random ``crop x crop`` windows
(:class:`unetlab.real.RandomCrops`), augmented (:mod:`unetlab.augment`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .augment import DEFAULT_AUGMENT, AugmentConfig
from .checkpoint import load_checkpoint, save_checkpoint
from .checks import is_int
from .evaluate import predict
from .history import History
from .io import atomic_write
from .metrics import class_dice, confusion_counts, pooled_from_counts, scores_by_class, scores_from_counts
from .model import UNet
from .real import RandomCrops, RealSet
from .train import fit

REAL_THRESHOLD = 0.5  # a learned model flags a pixel when its probability is above this (not tuned on test data)


def predict_masks(model: nn.Module, real: RealSet, threshold: float = REAL_THRESHOLD, *,
                  device: str | torch.device | None = None, progress: bool = True) -> list[np.ndarray]:
    """(H, W) bool defect masks of a binary model for every image of ``real``, each at its own full size."""
    return [predict(model, image, device=device) > threshold
            for image in tqdm(real.images, desc="predict", unit="image", disable=not progress, leave=False)]


def score_masks(preds: Sequence[np.ndarray], real: RealSet) -> dict[str, Any]:
    """Scores of predicted masks against ``real``'s masks (see the module docstring).

    Returns:
        ``class_dice`` (mean of ``per_class``, NaN when no image has a defect pixel); ``per_class``: {class:
        pooled Dice} for every class that has defect pixels; ``dice``, ``iou``, ``precision``, ``recall`` (pooled
        over all images); ``fp_rate_defect_free`` (NaN when no image is defect-free); ``per_image_dice``: list,
        in ``real``'s order; ``n_images``, ``n_defect_free``.
    """
    if len(preds) != len(real):
        raise ValueError(f"score_masks got {len(preds)} predictions for {len(real)} images")
    counts = []
    for i, (pred, truth) in enumerate(zip(preds, real.masks)):
        pred = np.asarray(pred)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction {i} has shape {pred.shape} but its mask ({real.stems[i]}) is {truth.shape}")
        tp, fp, fn, _ = confusion_counts(torch.from_numpy(pred.astype(bool))[None],
                                         torch.from_numpy(truth)[None])
        counts.append((tp.item(), fp.item(), fn.item()))
    tp, fp, fn = torch.tensor(counts, dtype=torch.int64).reshape(-1, 3).T  # (N,) each, one entry per image
    names = sorted(set(real.classes))
    of_class = torch.tensor([[c == name for c in real.classes] for name in names]).reshape(len(names), -1)
    by_class = [(of_class.long() @ count) for count in (tp, fp, fn)]  # (classes,) sums over each class's images
    per_class = {name: d for name, d in zip(names, scores_by_class(*by_class)["dice"]) if not np.isnan(d)}
    empty = [i for i, m in enumerate(real.masks) if not m.any()]
    flagged = sum(1 for i in empty if counts[i][1] > 0)
    return {
        "class_dice": class_dice(*by_class),
        "per_class": per_class,
        **pooled_from_counts(tp, fp, fn),
        "fp_rate_defect_free": flagged / len(empty) if empty else float("nan"),
        "per_image_dice": scores_from_counts(tp, fp, fn)["dice"].tolist(),
        "n_images": len(real),
        "n_defect_free": len(empty),
    }


def finetune(model: nn.Module, train: RealSet, *, steps: int = 200, batch_size: int = 8, lr: float = 1e-3,
             augment: AugmentConfig | None = DEFAULT_AUGMENT, crop: int = 256, defect_share: float = 0.5,
             seed: int = 0, device: str | torch.device | None = None, progress: bool = True) -> History:
    """Train ``model`` in place for ``steps`` optimiser steps on random crops of ``train``'s images.

    The number of steps is fixed whatever ``len(train)``: with k = 5 or k = 50 images the model gets the same
    amount of training, only the variety differs. Adam with a one-cycle schedule peaking at ``lr``, BCE + Dice
    (:func:`unetlab.fit`, no validation: the real test set must not choose anything).

    Args:
        model: a binary UNet (pretrained or fresh).
        train: the k real images to learn from (at least 1).
        steps: optimiser steps of ``batch_size`` crops each.
        augment: how each crop is augmented; None trains on plain crops.
        crop: side of the training windows, px (smaller images are reflect-padded).
        defect_share: share of the crops placed over a defect (see :class:`unetlab.real.RandomCrops`); without
            it most crops of small real defects hold none, and the model learns to predict nothing.
        seed: seeds the crops, their augmentation and the shuffling.
    """
    if len(train) < 1:
        raise ValueError("finetune needs at least one real image to train on; got an empty set")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not is_int(value) or value < 1:
            raise ValueError(f"finetune expects {name} as an int >= 1; got {value!r}")
    crops = RandomCrops(train.images, train.masks, n=steps * batch_size, size=crop, seed=seed, augment=augment,
                        defect_share=defect_share)
    loader = DataLoader(crops, batch_size=int(batch_size))  # each item is already a random crop: no shuffling needed
    return fit(model, loader, None, epochs=1, lr=lr, scheduler="onecycle", device=device, progress=progress,
               seed=seed)


@dataclass(frozen=True)
class Experiment:
    """One point of the k-shot curve.

    Attributes:
        start: name of the starting weights: a key of the ``starts`` given to :func:`run_experiments`
            (e.g. "synthetic", "randomized"), or "scratch" for a freshly initialised UNet.
        k: real images to fine-tune on (the first k of the pool); 0 scores the starting model as it is.
        augment: fine-tune with :data:`unetlab.augment.DEFAULT_AUGMENT` (True) or on plain crops (False).
    """

    start: str
    k: int
    augment: bool = True

    @property
    def key(self) -> str:
        return f"{self.start}|k={self.k}|augment={self.augment}"


def run_experiments(
    plan: Sequence[Experiment],
    real: RealSet,
    pool: Sequence[int],
    test: Sequence[int],
    starts: dict[str, str | os.PathLike],
    *,
    steps: int = 200,
    lr: float = 1e-3,
    crop: int = 256,
    seed: int = 0,
    cache: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every experiment of ``plan`` and return one row of scores each (same order).

    Args:
        plan: the experiments; ``k`` may not exceed ``len(pool)``.
        real: all real images; ``pool`` and ``test`` index into it (from :func:`unetlab.real.real_splits`).
        starts: start name -> checkpoint path of a binary model (e.g. chapter 04's), for every start but "scratch".
            A "scratch" model has the architecture of the first start (a fair comparison), with fresh weights
            drawn from ``seed``.
        steps, lr, crop, seed: fine-tuning settings (see :func:`finetune`).
        cache: a folder. Each fine-tuned model is saved there (``<start>_k<k>[_plain].pt``) and every row is
            written to ``rows.json`` as soon as it is done (atomically). Rows already there for the same settings
            are reused instead of trained again, so an interrupted run resumes and a re-run costs nothing.

    Returns:
        rows of ``start``, ``k``, ``augment``, the :func:`score_masks` summary (without ``per_image_dice``),
        ``train_seconds``, ``stems`` (the k training images) and ``checkpoint`` (the fine-tuned weights in
        ``cache``, or the start's checkpoint for k = 0; None for a fine-tuned model without a cache).
    """
    pool, test = list(pool), list(test)
    if set(pool) & set(test):
        raise ValueError("run_experiments: the pool and the test set overlap; the test set must never be trained on")
    for e in plan:
        if e.start != "scratch" and e.start not in starts:
            raise ValueError(f"experiment {e.key}: no checkpoint for start {e.start!r}; starts has {sorted(starts)}")
        if not 0 <= e.k <= len(pool) or (e.start == "scratch" and e.k == 0):
            raise ValueError(f"experiment {e.key}: k must be in [1 if scratch else 0, {len(pool)}]")
    settings = {"steps": steps, "lr": lr, "crop": crop, "seed": seed, "pool": pool, "test": test}
    recipe = _Recipe(steps=steps, lr=lr, crop=crop, seed=seed, device=device, progress=progress)
    fingerprints = {name: _fingerprint(path) for name, path in starts.items()}
    done = _read_cache(cache, settings, fingerprints)
    test_set = real.subset(test)
    rows = []
    cached = [e.key for e in plan if e.key in done]
    if cached:
        log(f"{len(cached)} of {len(plan)} experiments reused from {cache} (same settings and starting weights; "
            f"delete the folder to measure them again)")
    for e in plan:
        if e.key not in done:
            log(f"{e.key}: " + ("scoring" if e.k == 0 else f"fine-tuning {steps} steps on {e.k} real image(s)"))
            saved = Path(cache).resolve() / f"{e.start}_k{e.k}{'' if e.augment else '_plain'}.pt" if cache else None
            model = _starting_model(e.start, starts, recipe)
            row = _run_one(e, model, real.subset(pool[:e.k]), test_set, recipe, saved)
            row["checkpoint"] = (str(Path(starts[e.start]).resolve()) if e.k == 0
                                 else str(saved) if saved is not None else None)
            row["start_fingerprint"] = fingerprints.get(e.start)
            done[e.key] = row
            if cache is not None:
                _write_cache(cache, settings, done)
        rows.append(done[e.key])
    return rows


@dataclass(frozen=True)
class _Recipe:
    """How every experiment of one :func:`run_experiments` call is fine-tuned and scored (see :func:`finetune`)."""

    steps: int
    lr: float
    crop: int
    seed: int
    device: str | torch.device | None
    progress: bool


def _starting_model(start: str, starts: dict[str, str | os.PathLike], recipe: _Recipe) -> nn.Module:
    """The model an experiment starts from: a start's checkpoint, or for "scratch" a fresh UNet of the first
    start's architecture with weights drawn from the recipe's seed."""
    if start != "scratch":
        return load_checkpoint(starts[start], device=recipe.device or "cpu")[0]
    config = load_checkpoint(next(iter(starts.values())))[0].config if starts else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return UNet(**config)


def _run_one(e: Experiment, model: nn.Module, train: RealSet, test_set: RealSet, recipe: _Recipe,
             saved: Path | None) -> dict[str, Any]:
    """Fine-tune ``model`` on ``train`` (unless k = 0), save it to ``saved`` (when given) and score it on
    ``test_set``; returns the experiment's row without its checkpoint path."""
    start = time.perf_counter()
    if e.k:
        finetune(model, train, steps=recipe.steps, lr=recipe.lr, augment=DEFAULT_AUGMENT if e.augment else None,
                 crop=recipe.crop, seed=recipe.seed, device=recipe.device, progress=recipe.progress)
    seconds = time.perf_counter() - start
    if e.k and saved is not None:
        save_checkpoint(saved, model, data_config={"finetuned_on": train.stems, "steps": recipe.steps,
                                                   "lr": recipe.lr, "augment": e.augment, "start": e.start})
    scores = score_masks(predict_masks(model, test_set, device=recipe.device, progress=recipe.progress), test_set)
    scores.pop("per_image_dice")
    return {"start": e.start, "k": e.k, "augment": e.augment, **scores, "train_seconds": round(seconds, 1),
            "stems": train.stems}


def _fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint file: a cached row is reused only if its starting weights are the very same."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"starting checkpoint not found: {path}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_cache(cache, settings, fingerprints) -> dict[str, dict]:
    """The cached rows that were made with these settings, from these starting weights, whose files still exist."""
    path = Path(cache) / "rows.json" if cache is not None else None
    if path is None or not path.is_file():
        return {}
    stored = json.loads(path.read_text())
    if stored.get("settings") != settings:
        return {}
    return {key: row for key, row in stored.get("rows", {}).items()
            if row.get("start_fingerprint") == fingerprints.get(row["start"])
            and row["checkpoint"] is not None and Path(row["checkpoint"]).is_file()}


def _write_cache(cache, settings, rows) -> None:
    text = json.dumps({"settings": settings, "rows": rows}, indent=1)
    atomic_write(Path(cache) / "rows.json", lambda f: f.write(text.encode()))
