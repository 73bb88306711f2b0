"""Sim-to-real: the k-shot experiment of chapter 06.

The question: how much does synthetic pretraining help when only ``k`` real labelled images exist? A split
(:func:`unetlab.real.real_splits`) makes a fine-tune pool and a test set that nothing is trained or tuned on.
For each ``k`` the first ``k`` pool images (class-balanced) are the labels we "pay for", and three things learn
from them:

- ``"synthetic"`` (or any name of ``starts``): a pretrained checkpoint fine-tuned by :func:`unetlab.finetune`;
  with ``k = 0`` it is scored as it is (zero-shot, with the decision stored in its checkpoint);
- ``"fresh"``: the same recipe from fresh weights (``UNet(depth=4, base=16)`` by default);
- ``"baseline"``: the classical baseline, its knobs tuned on the same ``k`` images (:func:`unetlab.tune_baseline`).

``k = None`` means the whole pool. Every row is scored on the test set by :func:`unetlab.score_masks` (class
Dice first: every defect class counts the same). Fine-tuned models and rows are cached, so an interrupted run
resumes and a re-run costs nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .baseline import tune_baseline
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import predict_masks, score_masks
from .finetune import FinetuneConfig, finetune
from .io import atomic_write
from .pretrain import PretrainConfig, pretrain
from .real import RealSet, real_splits
from .synth import Backgrounds

FRESH, BASELINE = "fresh", "baseline"
# Part of the cache keys beside the recipe's settings: raise one when the code changes what the same settings
# produce, so that no cached result of older code is reused. PRETRAIN_REVISION keys the pretrained starts (2: fit
# re-estimates BatchNorm statistics every epoch; 3: models choose a seed threshold too; 4: pretrain chooses its
# decision with the unpainted backgrounds too; 5: its decision's predictions run in bfloat16 where native; 6: the
# training order from (seed, epoch), whatever the number of workers);
# FINETUNE_REVISION the rows (it was PRETRAIN_REVISION up to 4; 5: finetune's decision counts the false alarms on
# held-out defect-free images; 6: held-out and test predictions run in bfloat16 where native; 7: defect-free
# images count for the number of steps only up to as many as the images with a defect; 8: a refit on every image,
# with its own decision, after a half-length validated run, by default where both fit in max_steps; 9: instead,
# the last half of the steps on every image, by default unless the steps for every image reach max_steps; 10:
# the refit at every size, and max_steps 1,400 instead of 2,000), so a
# change to fine-tuning alone keeps the starts.
PRETRAIN_REVISION = 6
FINETUNE_REVISION = 10


def pretrained_for_split(real: RealSet, split: int, folder: str | os.PathLike,
                         config: PretrainConfig = PretrainConfig(), *, backgrounds: bool = True,
                         device: str | torch.device | None = None, progress: bool = True,
                         log: Callable[[str], None] = print, compute: bool = True) -> Path | None:
    """The synthetic start of split ``split``: :func:`unetlab.pretrain` painted on the good parts of the split's
    pool (:meth:`RealSet.good_parts`; zero labels: only "this part is good"), or on procedural surfaces when
    ``backgrounds=False``, saved as ``folder/pretrained.pt``.

    An existing file made by the same recipe and split is reused (its ``data_config`` records both), so a second
    call costs nothing; another recipe trains again (or, with ``compute=False``, returns None: nothing is trained).
    Returns the checkpoint path.
    """
    path = Path(folder) / "pretrained.pt"
    recipe = json.loads(json.dumps({**dataclasses.asdict(config), "split": split, "backgrounds": backgrounds,
                                    "revision": PRETRAIN_REVISION}))
    if path.is_file() and (load_checkpoint(path)[1]["data_config"] or {}).get("recipe") == recipe:
        log(f"split {split}: reusing the pretrained start {path}")
        return path
    if not compute:
        log(f"split {split}: no pretrained start by this recipe in {path.parent}")
        return None
    pool, _ = real_splits(real.classes, seed=split)
    bank = Backgrounds([real.images[i] for i in real.good_parts(pool)]) if backgrounds else None
    log(f"split {split}: pretraining on synthetic defects painted on "
        + (f"the pool's {len(bank)} defect-free images" if bank is not None else "procedural surfaces"))
    result = pretrain(config, bank, seed=split, device=device, progress=progress, log=log)
    save_checkpoint(path, result.model, threshold=result.threshold, seed_threshold=result.seed_threshold,
                    history=result.history,
                    data_config={"recipe": recipe, "backgrounds": len(bank) if bank is not None else 0,
                                 "seconds": round(result.seconds, 1)})
    return path


@dataclass(frozen=True)
class Experiment:
    """One point of the k-shot curve.

    Attributes:
        start: a key of the ``starts`` given to :func:`run_experiments` (a pretrained checkpoint), ``"fresh"``
            (fresh weights) or ``"baseline"`` (the classical baseline).
        k: labelled real images (the first k of the pool); ``None`` for the whole pool; 0 (zero-shot) only for a
            pretrained start.
    """

    start: str
    k: int | None

    @property
    def key(self) -> str:
        return f"{self.start}|k={'all' if self.k is None else self.k}"


def run_experiments(plan: Sequence[Experiment], real: RealSet, starts: dict[str, str | os.PathLike], *,
                    split: int = 0, config: FinetuneConfig = FinetuneConfig(), test: Sequence[int] | None = None,
                    cache: str | os.PathLike | None = None, compute: bool = True,
                    device: str | torch.device | None = None, progress: bool = True,
                    log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every experiment of ``plan`` on split ``split`` of ``real``; one row of scores each, same order.

    Args:
        plan: the experiments (see :class:`Experiment`).
        real: all real images, with their classes.
        starts: start name -> checkpoint path of a pretrained binary model.
        split: the seed of :func:`unetlab.real.real_splits` (half of every class is the test set).
        config: the fine-tuning recipe; its seed is the split's, so a split is one reproducible experiment.
        test: score on these images only (indices into ``real``, all in the split's test set), e.g. a quick check;
            None: the whole test set.
        cache: a folder for the fine-tuned models (``<start>_k<k>.pt``) and ``rows.json``, written as soon as each
            row is done. Rows made with the same recipe, split and starting weights are reused.
        compute: False returns only the rows the cache already holds (in plan order) and names the missing
            experiments in the log, instead of training them (e.g. to show a benchmark's results without its hours).

    Returns:
        rows of ``start``, ``k``, ``split``, the :func:`unetlab.score_masks` summary (without
        ``per_image_dice``), ``threshold`` and ``seed_threshold``, ``val_class_dice`` (the held-out pool images'
        score that chose them; None for k = 0 and the baseline), ``best_step``, ``steps``, ``refitted``,
        ``refit_steps``, ``train_seconds``, ``stems`` (the k images) and ``checkpoint``.
    """
    pool, held_out = real_splits(real.classes, seed=split)
    if test is None:
        test = held_out
    elif not set(test) <= set(held_out):
        raise ValueError(f"run_experiments: test must be a subset of split {split}'s test set (never pool images)")
    test = list(test)
    for e in plan:
        if e.start not in (FRESH, BASELINE) and e.start not in starts:
            raise ValueError(f"experiment {e.key}: no checkpoint for start {e.start!r}; starts has {sorted(starts)}")
        learned = e.start != BASELINE  # fine-tuning holds one image out, so it needs two
        if e.k is not None and not (0 <= e.k <= len(pool)) or e.k == 1 and learned or (
                e.k == 0 and e.start in (FRESH, BASELINE)):
            lowest = "2" if e.start == FRESH else "1" if e.start == BASELINE else "0 (zero-shot) or 2"
            raise ValueError(f"experiment {e.key}: k must be None (the whole pool) or from {lowest} to {len(pool)}")
    settings = json.loads(json.dumps({"config": dataclasses.asdict(config), "split": split, "pool": pool,
                                      "test": test, "revision": FINETUNE_REVISION}))
    fingerprints = {name: _fingerprint(path) for name, path in starts.items()}
    done = _read_cache(cache, settings, fingerprints)
    reused = [e.key for e in plan if e.key in done]
    if reused:
        log(f"{len(reused)} of {len(plan)} experiments reused from {cache} (same recipe, split and starting weights; "
            f"delete the folder to measure them again)")
    if not compute:
        missing = [e.key for e in plan if e.key not in done]
        if missing:
            log(f"split {split}: {len(missing)} experiment(s) not in {cache}, not run: {', '.join(missing)}")
        return [done[e.key] for e in plan if e.key in done]
    test_set = real.subset(test)
    rows = []
    for e in plan:
        if e.key not in done:
            train = real.subset(pool if e.k is None else pool[:e.k])
            log(f"split {split}, {e.key}: {len(train)} labelled image(s)")
            saved = Path(cache).resolve() / f"{e.start}_k{'all' if e.k is None else e.k}.pt" if cache else None
            row = _run_one(e, train, test_set, starts, config, split, device, progress, log, saved)
            row["start_fingerprint"] = fingerprints.get(e.start)
            done[e.key] = row
            if cache is not None:
                _write_cache(cache, settings, done)
        rows.append(done[e.key])
    return rows


def _run_one(e: Experiment, train: RealSet, test_set: RealSet, starts: dict, config: FinetuneConfig, split: int,
             device, progress: bool, log, saved: Path | None) -> dict[str, Any]:
    """Train (or tune) what ``e`` says on ``train``, score it on ``test_set``; the experiment's row."""
    begin = time.perf_counter()
    row: dict[str, Any] = {"start": e.start, "k": e.k, "split": split, "val_class_dice": None, "best_step": None,
                           "steps": None, "checkpoint": None}
    if e.start == BASELINE:
        baseline, _ = tune_baseline(train.images, train.masks, classes=train.classes, progress=progress)
        preds = [baseline.predict(image) for image in test_set.images]
        row.update(threshold=None, seed_threshold=None)
        row["baseline"] = baseline.to_dict()
    else:
        model, info = (None, {}) if e.start == FRESH else load_checkpoint(starts[e.start], device=device or "cpu")
        if e.k == 0:
            threshold, seed_threshold = info.get("threshold") or 0.5, info.get("seed_threshold")
            row["checkpoint"] = str(Path(starts[e.start]).resolve())
        else:
            result = finetune(model, train, config, seed=split, device=device, progress=progress, log=log,
                              start_decision=(info["threshold"], info["seed_threshold"]) if info else None)
            model, threshold, seed_threshold = result.model, result.threshold, result.seed_threshold
            row.update(val_class_dice=result.val_score, best_step=result.best_step, steps=result.steps,
                       refitted=result.refitted, refit_steps=result.refit_steps)
            if saved is not None:
                save_checkpoint(saved, model, threshold=threshold, seed_threshold=seed_threshold,
                                history=result.history,
                                data_config={"finetuned_on": result.trained_on, "validated_on": result.val_stems,
                                             "start": e.start, "split": split})
                row["checkpoint"] = str(saved)
        preds = predict_masks(model, test_set, threshold, seed_threshold, device=device, progress=progress)
        row.update(threshold=threshold, seed_threshold=seed_threshold)
    scores = score_masks(preds, test_set)
    scores.pop("per_image_dice")
    row.update(scores, train_seconds=round(time.perf_counter() - begin, 1), stems=train.stems)
    return row


def _fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint file: a cached row is reused only if its starting weights are the very same."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"starting checkpoint not found: {path}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_cache(cache, settings, fingerprints) -> dict[str, dict]:
    """The cached rows made with these settings from these starting weights, whose checkpoints still exist."""
    path = Path(cache) / "rows.json" if cache is not None else None
    if path is None or not path.is_file():
        return {}
    stored = json.loads(path.read_text())
    if stored.get("settings") != settings:
        return {}
    return {key: row for key, row in stored.get("rows", {}).items()
            if row.get("start_fingerprint") == fingerprints.get(row["start"])
            and (row["checkpoint"] is None or Path(row["checkpoint"]).is_file())}


def _write_cache(cache, settings, rows) -> None:
    """Save ``rows`` merged with the rows another process (a second benchmark lane on this split) saved meanwhile."""
    path = Path(cache) / "rows.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if stored.get("settings") == settings:
        rows = {**stored.get("rows", {}), **rows}
    text = json.dumps({"settings": settings, "rows": rows}, indent=1)
    atomic_write(Path(cache) / "rows.json", lambda f: f.write(text.encode()))
