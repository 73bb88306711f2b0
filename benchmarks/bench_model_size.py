"""How deep and how wide a UNet real defects need: receptive field against the size of real defect regions, and
the cost of a training step, for ``UNet(depth, base)``.

Two tables. The first (only with real images: ``--data`` or ``$UNETLAB_REAL_DATA``) gives, per class, the size of
the connected defect regions of the masks: the longer side of each region's bounding box, in px (median, 90th
percentile, largest). The second gives, per architecture, the parameters, the receptive field
(``unetlab.receptive_field``: the widest window of input pixels one output pixel sees) and the time of one
training step of the fine-tuning recipe (``--batch`` windows of ``--crop`` px, BCE + Dice, Adam; channels-last,
with bf16 autocast where ``unetlab.device.autocast_dtype`` picks it, as ``fit`` does), timed as ``bench_train.py``
times: the fastest of ``--repeats`` blocks of ``--steps`` steps after a warm-up. A region wider than the receptive field is seen
by no output pixel whole: the model must judge it from a part.

    .venv/bin/python benchmarks/bench_model_size.py [--data FOLDER] [--crop 128] [--batch 8] [--threads N]

Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform

import cv2
import numpy as np
import torch

from unetlab import (BCEDiceLoss, RealSet, UNet, count_parameters, keep_freed_memory_for_reuse, real_data_root,
                     receptive_field)
from unetlab.device import autocast_dtype

from bench_train import images_per_second  # the sibling script: the same timing for both benchmarks


def region_sizes(real: RealSet) -> dict[str, np.ndarray]:
    """Class name -> the longer bounding-box side (px) of every 8-connected defect region of its masks."""
    sizes: dict[str, list[int]] = {}
    for mask, name in zip(real.masks, real.classes):
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        sizes.setdefault(name, []).extend(int(max(w, h)) for w, h in stats[1:n, 2:4])
    return {name: np.asarray(s) for name, s in sorted(sizes.items()) if s}


def step_seconds(depth: int, base: int, dtype: torch.dtype | None, args: argparse.Namespace) -> float:
    """Seconds of one training step of ``UNet(depth, base)`` under autocast to ``dtype`` (None: fp32)."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, 1, args.crop, args.crop)
    x = torch.rand(shape, generator=generator).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(shape, generator=generator) > 0.95).float()
    model = UNet(depth=depth, base=base).to(memory_format=torch.channels_last).train()
    loss_fn, optimizer = BCEDiceLoss(), torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype is not None else contextlib.nullcontext

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    return 1 / images_per_second(step, 1, args, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="real images folder (default: $UNETLAB_REAL_DATA)")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--bases", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--crop", type=int, default=128, help="training window side, px (a multiple of 2**depth)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory_for_reuse()  # as the command line does on a CPU
    dtype = autocast_dtype("auto", torch.device("cpu"))
    print(f"{platform.platform()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | "
          f"torch {torch.__version__} | {torch.get_num_threads()} threads | autocast: "
          f"{dtype or 'off (fp32)'}\n")

    root = real_data_root(args.data)
    if root is not None:
        sizes = region_sizes(RealSet.load(root, progress=False))
        print("| class | regions | longer side, px: median | 90th percentile | largest |")
        print("|---|---:|---:|---:|---:|")
        for name, s in sizes.items():
            print(f"| {name} | {len(s)} | {np.median(s):.0f} | {np.percentile(s, 90):.0f} | {s.max()} |")
        print()
    else:
        print("(no real images: set UNETLAB_REAL_DATA for the table of defect sizes)\n")

    print(f"| depth | base | parameters | receptive field, px | train step ({args.batch} x {args.crop} px), ms |")
    print("|---:|---:|---:|---:|---:|")
    for depth in args.depths:
        for base in args.bases:
            if args.crop % 2**depth:
                continue
            ms = 1000 * step_seconds(depth, base, dtype, args)
            print(f"| {depth} | {base} | {count_parameters(UNet(depth=depth, base=base)):,} | "
                  f"{receptive_field(depth)} | {ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()
