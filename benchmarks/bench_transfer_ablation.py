"""Which synthetic ingredients help transfer: zero-shot class Dice on real test images of a model pretrained on
the ``transfer`` preset painted on the pool's defect-free images, and on variants that leave one thing out.

Each variant is one ``unetlab.pretrain`` (8-10 minutes on a 2-core CPU with two variants running side by side,
1 thread each; measured 2026-12-02) and a zero-shot score on the split's test set with the decision the model
chose on synthetic samples and the unpainted backgrounds (threshold and seed threshold); no real label is used
anywhere.
Models and scores are cached under ``--cache`` per variant (the ``transfer`` variant is the very start of
``bench_sim2real.py``'s split, so the two benchmarks share it), and a second run prints at once.

    python benchmarks/bench_transfer_ablation.py [--data FOLDER] [--split 0] [--variants NAME ...]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import unetlab
from unetlab import (REAL_DATA_HINT, Experiment, PretrainConfig, RealSet, keep_freed_memory_for_reuse,
                     pretrained_for_split, real_data_root, run_experiments)

VARIANTS: dict[str, dict] = {
    "transfer": {},
    "procedural-surfaces": {"backgrounds": False},
    "no-new-kinds": {"knobs": {"pits": (0, 0), "chips": (0, 0), "patches": (0, 0)}},
    "no-pits": {"knobs": {"pits": (0, 0)}},
    "no-chips": {"knobs": {"chips": (0, 0)}},
    "no-patches": {"knobs": {"patches": (0, 0)}},
    "no-distractors": {"knobs": {"distractors": (0, 0)}},
    "no-lighting": {"knobs": {"illumination": (0.0, 0.0), "edge_shading": (0.0, 0.0)}},
    "default-preset": {"preset": "default"},
}
DESCRIPTION = {
    "transfer": "transfer preset on the pool's defect-free images (the default)",
    "procedural-surfaces": "same, on procedural surfaces instead",
    "no-new-kinds": "without pits, chips and patches",
    "no-pits": "without pits", "no-chips": "without chips", "no-patches": "without patches",
    "no-distractors": "without unlabelled streaks",
    "no-lighting": "without extra lighting and edge shading",
    "default-preset": "the tutorial's default preset (not randomised, no new kinds)",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="real images folder (default: $UNETLAB_REAL_DATA)")
    parser.add_argument("--split", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--cache", default="notebooks/runs/06_sim2real",
                        help="folder of models and scores; the 'transfer' variant is bench_sim2real.py's own start")
    args = parser.parse_args()
    root = real_data_root(args.data)
    if root is None:
        print(REAL_DATA_HINT, file=sys.stderr)
        return 2
    keep_freed_memory_for_reuse()
    begin = time.perf_counter()
    real = RealSet.load(root, progress=False)
    rows = {}
    for name in args.variants:
        variant = dict(VARIANTS[name])
        backgrounds = variant.pop("backgrounds", True)
        folder = Path(args.cache) / f"split{args.split}" / ("" if name == "transfer" else f"ablation/{name}")
        start = pretrained_for_split(real, args.split, folder, PretrainConfig(**variant), backgrounds=backgrounds)
        rows[name] = run_experiments([Experiment("synthetic", 0)], real, {"synthetic": start}, split=args.split,
                                     cache=folder)[0]
    classes = list(next(iter(rows.values()))["per_class"])
    print(f"\nzero-shot on split {args.split}'s real test set ({root}); {platform.machine()}, torch "
          f"{torch.__version__}, unetlab {unetlab.__version__}\n")
    print("| pretraining data | zero-shot class Dice | " + " | ".join(classes) + " | threshold | seed threshold |")
    print("|---|---:|" + "---:|" * (len(classes) + 2))
    for name, row in rows.items():
        print(f"| {DESCRIPTION[name]} | {row['class_dice']:.3f} | "
              + " | ".join(f"{row['per_class'].get(c, np.nan):.3f}" for c in classes)
              + f" | {row['threshold']:g} | {row['seed_threshold'] or '-'} |")
    print(f"\n{time.perf_counter() - begin:.0f} s in all (cached runs cost nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
