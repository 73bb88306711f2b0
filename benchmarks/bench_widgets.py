"""Slider playground speed: milliseconds per preview update (one knob moved, one redraw), headless.

    python benchmarks/bench_widgets.py [--updates 20] [--size 256]

Moves the seed slider and one range slider, each ``--updates`` times, and prints a markdown table of the
median and slowest update. The budget is 150 ms an update, so the preview follows a dragged slider.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from unetlab.synth import DefectConfig
from unetlab.widgets import defect_playground


def update_ms(control, values) -> list[float]:
    """Milliseconds of each update that sets ``control`` to the next of ``values``."""
    times = []
    for value in values:
        start = time.perf_counter()
        control.value = value
        times.append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20, help="updates per control")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    args = parser.parse_args()

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    pg = defect_playground(DefectConfig(size=args.size))
    lo, hi = pg.controls["brightness"].min, pg.controls["brightness"].max
    levels = np.linspace(lo, hi - 10, args.updates)
    rows = {"seed": update_ms(pg.controls["seed"], range(1, args.updates + 1)),
            "brightness (range slider)": update_ms(pg.controls["brightness"], [(v, v + 10) for v in levels])}
    print("\n| control moved | median ms | slowest ms | updates |\n|---|---:|---:|---:|")
    for name, times in rows.items():
        print(f"| {name} | {statistics.median(times):.1f} | {max(times):.1f} | {len(times)} |")


if __name__ == "__main__":
    main()
