"""What a training run records: one :class:`History` per run, one entry per epoch (saved in every checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np


@dataclass
class History:
    """Per-epoch training record; element ``i`` of each list belongs to epoch ``i + 1``.

    Attributes:
        train_loss: mean training loss of the epoch (weighted by batch size).
        val_loss: mean validation loss after the epoch; empty when training ran without validation.
        val_dice: validation Dice after the epoch (see :func:`unetlab.fit`: pooled at threshold 0.5 for a binary
            model, the class Dice of the argmax for a multi-class one); empty without validation.
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
        """1-based epoch with the highest validation Dice (the first one on ties; a NaN Dice, from a validation
        set without any defect class, never wins).

        Without validation, the last epoch; None before the first epoch has finished.
        """
        if self.val_dice:
            return int(np.argmax(np.nan_to_num(self.val_dice, nan=-np.inf))) + 1
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
