"""Generator speed: image/label pairs per second at the default config, one process.

    python benchmarks/bench_synth.py [--n 2000] [--size 256]

Prints a markdown table (pairs/s overall and per surface kind) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import cv2
import numpy as np

from unetlab.synth import SURFACE_CHOICES, DefectConfig, make_sample, sample_rng


def pairs_per_second(cfg: DefectConfig, n: int) -> float:
    for i in range(20):  # warm-up: noise bank, OpenCV kernels
        make_sample(cfg, sample_rng(1, i))
    start = time.perf_counter()
    for i in range(n):
        make_sample(cfg, sample_rng(0, i))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per measurement")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    args = parser.parse_args()

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads)")
    print(f"\n| surface | pairs/s at {args.size}x{args.size} |\n|---|---:|")
    for surface in SURFACE_CHOICES:
        cfg = DefectConfig(size=args.size, surface=surface)
        label = f"{surface} (default)" if surface == DefectConfig().surface else surface
        print(f"| {label} | {pairs_per_second(cfg, args.n):,.0f} |")


if __name__ == "__main__":
    main()
