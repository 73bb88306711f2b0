"""The table behind chapter 06's curve: real-test Dice of the classical baseline, zero-shot, and fine-tuning on
k real images from the synthetic model, from the domain-randomised one and from scratch.

Needs the real images (``UNETLAB_REAL_DATA`` or ``--data``) and the two pretrained models: chapter 04's
(``notebooks/runs/04_unet.pt``) and chapter 06's domain-randomised one (``notebooks/runs/06_randomized.pt``);
a missing one is trained here with chapter 04's budget (about 9 minutes each on a laptop CPU). Fine-tuned
models and scores are cached in ``--cache`` (chapter 06's folder by default), so after the chapter has run this
prints its numbers at once; point ``--cache`` at an empty folder to measure everything again (about 25 minutes
on a 2-core CPU).

    python benchmarks/bench_sim2real.py [--data FOLDER] [--cache DIR] [--figure figures/06_sim2real_curve.png]
    python benchmarks/bench_sim2real.py --seed 2 --ks 0 20 --curves-only --cache runs/sim2real_seed2
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

import unetlab
from unetlab import (FULL, REAL_DATA_HINT, DefectConfig, Experiment, RealSet, UNet, fit, keep_freed_memory_for_reuse,
                     make_loaders, plot_kshot, real_data_root, real_splits, run_experiments, save_figure, score_masks,
                     tune_baseline, DEMO_LR, DEMO_SCHEDULE)

KS = (0, 5, 10, 20, 50)


def pretrained(path: Path, preset: str, seed: int) -> Path:
    """``path`` if it exists, else a model trained there on the preset with chapter 04's budget."""
    if not path.exists():
        print(f"{path} is missing: training it on the {preset!r} preset ({FULL.n_train} images x {FULL.epochs} "
              f"epochs)")
        cfg = DefectConfig.preset(preset, size=FULL.image_size)
        loaders = make_loaders(cfg, sizes=FULL, seed=seed)
        torch.manual_seed(seed)
        fit(UNet(), loaders["train"], loaders["val"], epochs=FULL.epochs, lr=DEMO_LR, scheduler=DEMO_SCHEDULE,
            checkpoint=path, data_config=cfg.to_dict(), seed=seed)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="real images folder (default: $UNETLAB_REAL_DATA)")
    parser.add_argument("--synthetic", default="notebooks/runs/04_unet.pt", help="chapter 04's checkpoint")
    parser.add_argument("--randomized", default="notebooks/runs/06_randomized.pt",
                        help="the domain-randomised checkpoint")
    parser.add_argument("--cache", default="notebooks/runs/06_sim2real", help="folder of fine-tuned models/scores")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps of 8 crops (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default=None, help="also save the curve here (PNG)")
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS), help="numbers of real training images")
    parser.add_argument("--curves-only", action="store_true",
                        help="only the synthetic and from-scratch curves: no augmentation ablation and no "
                             "domain-randomised start (quicker, e.g. to repeat a point over several seeds)")
    args = parser.parse_args()

    root = real_data_root(args.data)
    if root is None:
        print(REAL_DATA_HINT, file=sys.stderr)
        return 2
    keep_freed_memory_for_reuse()  # as unetlab demo/train do: process-wide, faster CPU training (README, "Speed")
    start = time.perf_counter()
    real = RealSet.load(root)
    pool, test = real_splits(real.classes, test_fraction=0.5, seed=args.seed)
    test_set = real.subset(test)
    tune_on = real.subset(pool)
    baseline, _ = tune_baseline(tune_on.images, tune_on.masks, classes=tune_on.classes)
    base = score_masks([baseline.predict(image) for image in test_set.images], test_set)

    starts = {"synthetic": pretrained(Path(args.synthetic), "default", args.seed)}
    plan = [Experiment("synthetic", k) for k in args.ks] + [Experiment("scratch", k) for k in args.ks if k]
    if not args.curves_only:
        starts["randomized"] = pretrained(Path(args.randomized), "randomized", args.seed)
        plan += [Experiment("synthetic", 20, augment=False), Experiment("randomized", 0),
                 Experiment("randomized", 10)]
    rows = run_experiments(plan, real, pool, test, starts, steps=args.steps, seed=args.seed, cache=args.cache)

    classes = list(rows[0]["per_class"])
    print(f"\nreal test set: {len(test)} images from {root} ({', '.join(classes)} + defect-free); pool "
          f"{len(pool)}; fine-tuning {args.steps} steps x 8 crops of 256 px, augmented unless noted")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"unetlab {unetlab.__version__}\n")
    header = f"| {'model':38} | k | class Dice | all-pixel Dice | false alarms | " + " | ".join(classes) + " | train s |"
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    table = [("classical baseline (tuned on the pool)", "-", base, "-")] + [
        (f"{r['start']}" + ("" if r["augment"] else ", no augmentation"), r["k"], r, r["train_seconds"])
        for r in rows]
    for name, k, r, seconds in table:
        print(f"| {name:38} | {k} | {r['class_dice']:.3f} | {r['dice']:.3f} | {r['fp_rate_defect_free']:.0%} | "
              + " | ".join(f"{r['per_class'].get(c, float('nan')):.3f}" for c in classes) + f" | {seconds} |")
    if args.figure:
        save_figure(plot_kshot(rows, baseline=base["class_dice"]), args.figure)
        print(f"\ncurve: {args.figure}")
    print(f"\n{time.perf_counter() - start:.0f} s in all (cached runs cost nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
