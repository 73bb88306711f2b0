"""The multi-class table in the README: per-class Dice on the held-out synthetic test set for several training
budgets, depths, training windows, peak learning rates and the two data presets.

Each row is one ``unetlab train --task multiclass ...`` command (printed, so a row can be rerun on its own); its
``results.json`` is read back. Every run draws its own 200 test images from its preset. On a 2-core CPU a
3,200-image run on whole images takes about 50 minutes, on 128 px windows about 12; pick rows there::

    python benchmarks/bench_multiclass.py                       # every row
    python benchmarks/bench_multiclass.py --rows multiclass-d3-3200-w128 --seed 1

Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

# name -> (data preset, UNet depth, training images, epochs, training window px (0 = whole images), peak lr).
# The whole-image rows at 3e-3 are the settings before windows; the last rows are today's default and its variants.
ROWS: dict[str, tuple[str, int, int, int, int, float]] = {
    "default-d3-800": ("default", 3, 800, 10, 0, 3e-3),
    "default-d4-800": ("default", 4, 800, 10, 0, 3e-3),
    "default-d3-800-e40": ("default", 3, 800, 40, 0, 3e-3),
    "default-d4-800-e40": ("default", 4, 800, 40, 0, 3e-3),
    "default-d3-3200": ("default", 3, 3200, 10, 0, 3e-3),
    "multiclass-d3-800": ("multiclass", 3, 800, 10, 0, 3e-3),
    "multiclass-d4-800-e40": ("multiclass", 4, 800, 40, 0, 3e-3),
    "multiclass-d3-3200": ("multiclass", 3, 3200, 10, 0, 3e-3),
    "multiclass-d3-3200-w128-lr3e-3": ("multiclass", 3, 3200, 10, 128, 3e-3),
    "multiclass-d3-3200-w128": ("multiclass", 3, 3200, 10, 128, 1e-3),
    "multiclass-d3-6400-w128": ("multiclass", 3, 6400, 10, 128, 1e-3),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=list(ROWS), help="rows to run")
    parser.add_argument("--out", default="runs/bench_multiclass", help="one sub-folder per row")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the fastest available)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the run: its data (test images included), initial weights and shuffling")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, the numbers mean nothing")
    args = parser.parse_args()

    gpu = f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}{gpu}, "
          f"seed {args.seed}\n")
    table = ["| row | preset | depth | train images | epochs | window | peak lr | scratch | crack | stain | wall s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in args.rows:
        preset, depth, n_train, epochs, crop, lr = ROWS[name]
        out = Path(args.out) / name
        command = [sys.executable, "-m", "unetlab", "train", "--task", "multiclass", "--preset", preset,
                   "--depth", str(depth), "--crop", str(crop), "--lr", f"{lr:g}", "--seed", str(args.seed),
                   "--workers", str(args.workers), "--out", str(out), "--figures", str(out), "--overwrite"]
        command += ["--quick"] if args.quick else ["--n-train", str(n_train), "--epochs", str(epochs)]
        if args.device:
            command += ["--device", args.device]
        print("$ python", shlex.join(command[1:]), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        results = json.loads((out / "results.json").read_text())
        dice, trained = results["test"]["dice"], results["training"]
        table.append(f"| {name} | {trained['preset']} | {trained['depth']} | {trained['n_train']} | "
                     f"{trained['epochs']} | {trained['crop'] or 'whole'} | {trained['lr']:g} | "
                     f"{dice['scratch']:.3f} | {dice['crack']:.3f} | {dice['stain']:.3f} | {wall:.0f} |")
    print("\n" + "\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
