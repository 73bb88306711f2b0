"""The k-shot experiment of chapter 06 over several splits: real-test class Dice of the classical baseline, of
fine-tuning from fresh weights and of fine-tuning from synthetic pretraining, for k labelled real images.

For every split seed: the split's fine-tune pool and test set (``real_splits``: half of every class is test);
``pretrain`` on the ``transfer`` preset painted on the pool's defect-free images (zero labels; cached); then for
each k the first k pool images fine-tune the pretrained model and a fresh one by the same recipe
(``unetlab.finetune``: it holds out a slice of the k images to choose the step and the threshold), and tune the
classical baseline. Zero-shot (k = 0) is the pretrained model with the decision (threshold and seed threshold) it
chose on synthetic samples and the pool's unpainted defect-free images.
Everything is cached under ``--cache`` (delete it to measure again), so a second run prints at once.

    python benchmarks/bench_sim2real.py [--data FOLDER] [--splits 0 1 2] [--ks 0 5 10 20 50 all]
                                        [--cache notebooks/runs/06_sim2real] [--figure figures/06_sim2real_curve.png]
                                        [--cached-only]

Hours on a 2-core CPU: a pretraining and 11 fine-tunes per split, each followed by scoring the 151 test images
with flips (measured 2026-12-07/08 on an AMD EPYC with AVX-512 BF16, alone with two threads, at 0.16-0.23 s a
step: pretraining 454-522 s, 3-4.5 min a row for k = 5 to 50 (1,000 steps) and 5-5.7 min for the whole pool (1,400
steps); about 45 minutes a split with its pretraining cached, 55 without; the 5 synthetic rows of the 3 splits,
everything else cached, 3,269 s). ``--cached-only`` prints what the
cache holds and trains nothing.
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
from unetlab import (REAL_DATA_HINT, Experiment, RealSet, keep_freed_memory_for_reuse, plot_kshot,
                     pretrained_for_split, real_data_root, real_splits, run_experiments, save_figure)


def summary(rows: list[dict], classes: list[str], pool_size: int) -> None:
    """Markdown table: one line per (start, k), mean and spread over the splits, per split, per class."""
    keys = list(dict.fromkeys((r["start"], r["k"]) for r in rows))
    splits = sorted({r["split"] for r in rows})
    print(f"| model | k | class Dice, mean ± sd | per split ({', '.join(map(str, splits))}) | "
          + " | ".join(classes) + " | false alarms | s |")
    print("|---|---:|---:|---|" + "---:|" * (len(classes) + 2))
    for start, k in keys:
        group = [r for r in rows if r["start"] == start and r["k"] == k]
        dice = [r["class_dice"] for r in group]
        by_split = {r["split"]: f"{r['class_dice']:.3f}" for r in group}  # "-" where a split lacks the row
        per_class = [np.mean([r["per_class"].get(c, np.nan) for r in group]) for c in classes]
        alarms = np.nanmean([r["fp_rate_defect_free"] if r["fp_rate_defect_free"] is not None else np.nan
                             for r in group])
        print(f"| {start} | {k if k is not None else f'all ({pool_size})'} | {np.mean(dice):.3f} ± {np.std(dice):.3f} "
              f"| {' / '.join(by_split.get(s, '-') for s in splits)} | " + " | ".join(f"{d:.3f}" for d in per_class)
              + f" | {alarms:.0%} | {np.mean([r['train_seconds'] for r in group]):.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="real images folder (default: $UNETLAB_REAL_DATA)")
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2], help="split seeds (default 0 1 2)")
    parser.add_argument("--ks", nargs="+", default=["0", "5", "10", "20", "50", "all"],
                        help="labelled images per fine-tune; 'all' is the whole pool")
    parser.add_argument("--cache", default="notebooks/runs/06_sim2real", help="folder of models and scores (per split)")
    parser.add_argument("--figure", default=None, help="also save the curve here (PNG)")
    parser.add_argument("--cached-only", action="store_true",
                        help="print what the cache holds, train nothing (missing rows are named)")
    args = parser.parse_args()

    root = real_data_root(args.data)
    if root is None:
        print(REAL_DATA_HINT, file=sys.stderr)
        return 2
    keep_freed_memory_for_reuse()  # as the CLI does: process-wide, faster CPU training (README, "Speed")
    begin = time.perf_counter()
    real = RealSet.load(root, progress=False)
    ks = [None if k == "all" else int(k) for k in args.ks]
    plan = ([Experiment("synthetic", k) for k in ks] + [Experiment("fresh", k) for k in ks if k != 0]
            + [Experiment("baseline", k) for k in ks if k != 0])
    rows = []
    for split in args.splits:
        folder = Path(args.cache) / f"split{split}"
        start = pretrained_for_split(real, split, folder, compute=not args.cached_only)
        if start is None:
            print(f"split {split}: skipped (--cached-only)")
            continue
        rows += run_experiments(plan, real, {"synthetic": start}, split=split, cache=folder,
                                compute=not args.cached_only)
    if not rows:
        print(f"nothing cached under {args.cache}", file=sys.stderr)
        return 1
    pool_size = len(real_splits(real.classes, seed=args.splits[0])[0])
    classes = list(rows[0]["per_class"])
    print(f"\nreal test sets: half of {len(real)} images from {root} per split; pool {pool_size}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, unetlab {unetlab.__version__}\n")
    summary(rows, classes, pool_size)
    if args.figure:
        save_figure(plot_kshot(rows, pool_size=pool_size), args.figure)
        print(f"\ncurve: {args.figure}")
    print(f"\n{time.perf_counter() - begin:.0f} s in all (cached runs cost nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
