"""The tutorial's run sizes: one full default and a quick mode for CI.

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
    """

    n_train: int
    n_val: int
    n_test: int
    epochs: int
    batch_size: int
    image_size: int = 256


FULL = RunSizes(n_train=800, n_val=64, n_test=200, epochs=10, batch_size=8)
QUICK = RunSizes(n_train=16, n_val=8, n_test=8, epochs=1, batch_size=4)


def is_quick() -> bool:
    """True when ``UNETLAB_QUICK`` is set to something other than ``""``, ``0``, ``false`` or ``no``."""
    return os.environ.get(QUICK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def run_sizes() -> RunSizes:
    """The sizes for this run: :data:`QUICK` when ``UNETLAB_QUICK=1``, else :data:`FULL`."""
    return QUICK if is_quick() else FULL


# How the tutorial trains. The product card says Adam at a constant learning rate of 1e-4; at that rate a CPU
# budget of ~10 minutes ends far from convergence (measured: README, "Learning rate"). The demo and chapter 04
# use a one-cycle schedule (warm up to DEMO_LR, then anneal to ~0); the card's setting stays one argument away.
CARD_LR = 1e-4
DEMO_LR = 3e-3
DEMO_SCHEDULE = "onecycle"
