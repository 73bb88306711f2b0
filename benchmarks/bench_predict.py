"""Seconds per image of ``unetlab.predict`` on real-use sizes: the network in float32 (``amp="off"``) against the
precision ``amp="auto"`` picks here (bfloat16 on a CPU with AMX or AVX-512 BF16, float32 on other CPUs), with and
without the four flips. The model is the one ``pretrain`` and ``finetune`` build, ``UNet(depth=4, base=16)``
(the time does not depend on its weights). Prints a markdown table; never fails.

    python benchmarks/bench_predict.py [--sizes 1024x1024 400x300] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch

from unetlab import UNet, predict
from unetlab.device import autocast_dtype, resolve_device


def seconds(model: torch.nn.Module, image: np.ndarray, repeats: int, **kwargs) -> float:
    """The fastest of ``repeats`` timed calls, after one untimed warm-up call."""
    predict(model, image, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(model, image, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1024x1024", "400x300"], help="image sizes, HxW")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell; the fastest counts")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the fastest available)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = UNet(depth=4, base=16).eval()
    auto = autocast_dtype("auto", device)
    print(f"{platform.processor() or platform.machine()}, device {device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; amp='auto' runs {auto or torch.float32}\n")
    print("| image | flips | float32 s | auto s | speed-up |")
    print("|---|---|---:|---:|---:|")
    for size in args.sizes:
        h, w = (int(v) for v in size.lower().split("x"))
        image = np.random.default_rng(0).random((h, w), dtype=np.float32)
        for flips in (False, True):
            fp32, fast = (seconds(model, image, args.repeats, device=device, flips=flips, amp=amp)
                          for amp in ("off", "auto"))
            print(f"| {h} x {w} | {'four' if flips else 'none'} | {fp32:.2f} | {fast:.2f} | {fp32 / fast:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
