"""Training and inference speed of the tutorial's UNet, in images per second.

Training step = forward + BCEDiceLoss + backward + Adam step; inference = eval mode under no_grad. Random
inputs from a fixed torch.Generator, a few warm-up steps (oneDNN builds its kernels on the first calls), then
``--repeats`` timed blocks of ``--steps`` steps; the fastest block is reported (like ``timeit``: other processes
on the machine only ever slow a block down). Prints the machine and a markdown table::

    .venv/bin/python benchmarks/bench_train.py --steps 5 --repeats 3
    .venv/bin/python benchmarks/bench_train.py --default-malloc   # without fit()'s glibc allocator setting

Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time

import torch

from unetlab.losses import BCEDiceLoss
from unetlab.model import UNet
from unetlab.device import keep_freed_memory_for_reuse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per configuration; the best is kept")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--base", type=int, default=16, help="UNet base width")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's allocator as it is (by default this benchmark keeps freed memory for reuse, as "
        "unetlab demo/train do on a CPU: unetlab.keep_freed_memory_for_reuse)",
    )
    args = parser.parse_args()
    for name in ("steps", "repeats", "batch", "size", "base"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.size % 4:
        parser.error(f"--size must be divisible by 4 (two 2x downsamplings); got {args.size}")
    return args


def machine() -> str:
    return (
        f"{platform.platform()} | processor: {platform.processor() or platform.machine()} | "
        f"{os.cpu_count()} CPUs | torch {torch.__version__} | torch threads: {torch.get_num_threads()}"
        + (f" | GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(step, n_images: int, args: argparse.Namespace, device: torch.device) -> float:
    """Best throughput over ``args.repeats`` blocks of ``args.steps`` calls of ``step``, after the warm-up."""
    for _ in range(args.warmup):
        step()
    best = 0.0
    for _ in range(args.repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        best = max(best, n_images * args.steps / (time.perf_counter() - start))
    return best


def measure(args, device: torch.device, memory_format: torch.memory_format, amp_dtype: torch.dtype | None):
    """(train images/s, inference images/s) for one configuration."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, 1, args.size, args.size)
    x = torch.rand(shape, generator=generator).to(device).contiguous(memory_format=memory_format)
    y = (torch.rand(shape, generator=generator) > 0.95).float().to(device)
    model = UNet(base=args.base).to(device=device, memory_format=memory_format)
    loss_fn = BCEDiceLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and amp_dtype == torch.float16)

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def infer_step():
        with torch.no_grad(), autocast():
            model(x)

    model.train()
    train = images_per_second(train_step, args.batch, args, device)
    model.eval()
    infer = images_per_second(infer_step, args.batch, args, device)
    return train, infer


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = not args.default_malloc and keep_freed_memory_for_reuse()
    configs = [
        (torch.device("cpu"), "fp32", torch.contiguous_format, None),
        (torch.device("cpu"), "fp32", torch.channels_last, None),
        (torch.device("cpu"), "bf16 autocast", torch.channels_last, torch.bfloat16),
    ]
    if torch.cuda.is_available():
        configs += [
            (torch.device("cuda"), "fp32", torch.channels_last, None),
            (torch.device("cuda"), "fp16 AMP", torch.channels_last, torch.float16),
        ]
    print(machine())
    print(
        f"UNet(base={args.base}, depth=2), batch {args.batch}, {args.size}x{args.size}, BCEDiceLoss + Adam, "
        f"{args.warmup} warm-up steps, best of {args.repeats} x {args.steps} timed steps"
        + (", glibc malloc keeps freed memory (as in fit)" if tuned else ", default malloc")
        + "\n"
    )
    print("| device | precision | memory format | train img/s | inference img/s |")
    print("|---|---|---|---:|---:|")
    for device, precision, memory_format, amp_dtype in configs:
        train, infer = measure(args, device, memory_format, amp_dtype)
        layout = "channels_last" if memory_format == torch.channels_last else "default (NCHW)"
        print(f"| {device.type} | {precision} | {layout} | {train:.1f} | {infer:.1f} |", flush=True)


if __name__ == "__main__":
    main()
