"""The tutorial's run sizes (binary and multi-class, each with a quick mode for CI) and learning rates.

Every notebook and the CLI read their sizes from :func:`run_sizes`, so CI can execute the whole tutorial in
minutes by setting one environment variable (``UNETLAB_QUICK=1``) instead of editing any notebook.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

QUICK_ENV = "UNETLAB_QUICK"


@dataclass(frozen=True)
class RunSizes:
    """How much data and training one run of the tutorial uses.

    Attributes:
        n_train: synthetic training images per epoch.
        n_val: validation images (checked after every epoch, picks the best checkpoint).
        n_test: held-out test images, drawn from seeds never used for training.
        epochs: passes over the training set.
        batch_size: images per optimiser step.
        image_size: side of the square images, in pixels.
        crop: train on random ``crop`` x ``crop`` windows of the training images, most of them over a defect
            (see :class:`unetlab.SyntheticDefects`), or on whole images when ``None``.
    """

    n_train: int
    n_val: int
    n_test: int
    epochs: int
    batch_size: int
    image_size: int = 256
    crop: int | None = None


# The binary tutorial trains on 128 px windows of freshly drawn images (two thirds of them over a defect): a window
# costs a quarter of a whole image, so 1,300 of them per epoch take 199-211 s of training on a 2-core CPU (two runs)
# against 481 s for 800 whole images, for the same held-out Dice (0.925 both; README, "Measured results").
FULL = RunSizes(n_train=1300, n_val=64, n_test=200, epochs=10, batch_size=8, crop=128)
QUICK = RunSizes(n_train=16, n_val=8, n_test=8, epochs=1, batch_size=4, crop=128)


def is_quick() -> bool:
    """True when ``UNETLAB_QUICK`` is set to something other than ``""``, ``0``, ``false`` or ``no``."""
    return os.environ.get(QUICK_ENV, "").strip().lower() not in ("", "0", "false", "no")


# Multi-class training (chapter 07, ``unetlab train --task multiclass``). Naming a defect takes more training than
# finding it: a crack and a dark scratch differ only in their path. 128 px windows, two thirds of them over a
# defect, cost a quarter of a whole image per sample, so 6,400 images for 10 epochs take about twice the time of
# 800 whole images. Measured in full (not quick) runs on a 2-core CPU (README, "Multi-class"): 21-24 against 12
# minutes of training, and crack Dice 0.85-0.90 in four runs against 0.62.
MULTICLASS = RunSizes(n_train=6400, n_val=64, n_test=200, epochs=10, batch_size=8, crop=128)
QUICK_MULTICLASS = QUICK
TASKS = ("binary", "multiclass")


def run_sizes(task: str = "binary", quick: bool | None = None) -> RunSizes:
    """The sizes for this run of ``task`` ("binary" or "multiclass"): :data:`FULL` or :data:`MULTICLASS`, and
    :data:`QUICK` or :data:`QUICK_MULTICLASS` in quick mode: when ``quick`` is True, or when it is None (the
    default) and ``UNETLAB_QUICK=1`` (see :func:`is_quick`)."""
    if task not in TASKS:
        raise ValueError(f"run_sizes: task must be one of {TASKS}; got {task!r}")
    quick = is_quick() if quick is None else quick
    if task == "multiclass":
        return QUICK_MULTICLASS if quick else MULTICLASS
    return QUICK if quick else FULL


# How the tutorial trains. The product card says Adam at a constant learning rate of 1e-4; at that rate a CPU
# budget of ~10 minutes ends far from convergence (measured in full runs: README, "Measured results"). The demo
# and chapter 04 use a one-cycle schedule (warm up to DEMO_LR, then anneal to ~0); the card's setting stays one
# argument away.
CARD_LR = 1e-4
DEMO_LR = 3e-3
DEMO_SCHEDULE = "onecycle"
# The multi-class model peaks lower: at 3e-3 the validation Dice swings and cracks can collapse into scratches
# (measured in full runs: crack Dice 0.12 at 3e-3 against 0.78 at 1e-3, same windows, same seed; README,
# "Multi-class").
MULTICLASS_LR = 1e-3
