"""Command line: ``unetlab demo | generate | train | evaluate`` for the tutorial, and ``pretrain | finetune |
predict`` for real use (:mod:`unetlab.cli_real`); also ``python -m unetlab ...``.

``unetlab demo`` is the whole tutorial in one command with the embedded defaults: draw samples, train a UNet on
synthetic data, evaluate it on a held-out synthetic test set, write the figures and ``results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from . import cli_real, distributed
from ._version import __version__
from .checkpoint import load_checkpoint, store_decision
from .config import (CARD_LR, DEMO_LR, DEMO_SCHEDULE, FULL, MULTICLASS, MULTICLASS_LR, TASKS, RunSizes, is_quick,
                     run_sizes)
from .data import SPLIT_START, EpochShuffle, SyntheticDefects, make_loaders, stack_items
from .device import keep_freed_memory_for_reuse, resolve_device
from .evaluate import evaluate, evaluate_multiclass, predict, predict_labels, threshold_sweep
from .folders import DefectFolder, write_dataset
from .io import check_writable, json_text, write_json
from .model import UNet, count_parameters
from .synth import PRESETS, SURFACES, DefectConfig
from .train import SCHEDULERS, fit
from .viz import (plot_confusion, plot_history, plot_threshold_sweep, save_figure, show_gallery,
                  show_label_predictions, show_predictions)


# --------------------------------------------------------------------------------------------------------------
# Helpers shared by the commands


def _sizes(args: argparse.Namespace) -> tuple[RunSizes, str]:
    """The run sizes (:func:`unetlab.run_sizes` of the task, quick with ``--quick`` or ``UNETLAB_QUICK=1``, then
    the command line's overrides) and how to name them in the log, e.g. ``"quick sizes, --epochs 2"``."""
    quick = args.quick or is_quick()
    base = run_sizes(getattr(args, "task", "binary"), quick=quick)
    changes = {k: getattr(args, k) for k in ("n_train", "n_val", "n_test", "epochs", "batch_size", "crop")
               if getattr(args, k, None) is not None}
    for name, value in changes.items():
        least = 0 if name == "crop" else 1
        if value < least:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= {least}; got {value}")
    label = ("quick" if quick else "full") + " sizes"
    label += "".join(f", --{name.replace('_', '-')} {value}" for name, value in changes.items())
    if changes.get("crop") == 0:
        changes["crop"] = None  # --crop 0: whole images
    return dataclasses.replace(base, **changes), label


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


# --------------------------------------------------------------------------------------------------------------
# Commands


def cmd_generate(args: argparse.Namespace) -> int:
    cfg = DefectConfig(size=args.size, surface=args.surface)
    out = write_dataset(args.out, args.n, cfg, args.seed, overwrite=args.overwrite)
    print(f"wrote {args.n} images, masks and labels to {out}/ (config in {out / 'dataset.json'})")
    return 0


def _train(args: argparse.Namespace, sizes: RunSizes, cfg: DefectConfig, checkpoint: Path):
    """Build loaders and a UNet and run fit; returns (model, history, loaders, training settings)."""
    multiclass = getattr(args, "task", "binary") == "multiclass"
    if multiclass and getattr(args, "data", None):
        raise SystemExit("error: --task multiclass trains on synthetic data only (a folder has no class labels)")
    if getattr(args, "crop", None) and getattr(args, "data", None):  # the default windows do not apply to a folder
        raise SystemExit("error: --crop windows synthetic images only; a --data folder trains on whole images")
    loaders = make_loaders(cfg, sizes, args.seed, num_workers=args.workers)
    if getattr(args, "data", None):
        folder = DefectFolder(args.data)
        if len(folder) < 2:
            raise SystemExit(f"error: {args.data} holds {len(folder)} image(s); training needs at least 2")
        n_val = max(1, len(folder) // 10)
        loaders["train"] = distributed.sharded_loader(Subset(folder, range(len(folder) - n_val)), sizes.batch_size,
                                                      EpochShuffle(len(folder) - n_val, args.seed))
        loaders["val"] = DataLoader(Subset(folder, range(len(folder) - n_val, len(folder))),
                                    batch_size=sizes.batch_size)
    torch.manual_seed(args.seed)  # the initial weights: the same run twice gives the same model
    # Naming a defect needs more context than finding it (a crack vs a dark scratch): depth 3 sees 100 px.
    depth = args.depth if args.depth is not None else (3 if multiclass else 2)
    if sizes.crop is not None and sizes.crop % 2**depth:
        raise SystemExit(f"error: --crop must be a multiple of {2**depth} for a depth-{depth} UNet; got {sizes.crop}")
    model = UNet(out_channels=cfg.n_classes if multiclass else 1, base=args.base, depth=depth)
    if args.card:
        lr = CARD_LR
    elif args.lr is not None:
        lr = args.lr
    else:
        lr = MULTICLASS_LR if multiclass else DEMO_LR
    schedule = None if args.card else (None if args.schedule == "constant" else args.schedule)
    _tune_allocator(args)
    history = fit(model, loaders["train"], loaders["val"], epochs=sizes.epochs, lr=lr, device=args.device,
                  checkpoint=checkpoint, resume=getattr(args, "resume", False), amp=args.amp,
                  scheduler=schedule, data_config=cfg.to_dict(), seed=args.seed)
    return model, history, loaders, {"lr": lr, "schedule": schedule or "constant", "optimizer": "Adam",
                                     "loss": "cross-entropy + Dice" if multiclass else "BCE + Dice",
                                     "epochs": sizes.epochs, "batch_size": sizes.batch_size,
                                     "n_train": len(loaders["train"].dataset), "crop": sizes.crop, "base": args.base,
                                     "depth": depth, "amp": args.amp, "processes": distributed.world_size()}


def _tune_allocator(args: argparse.Namespace) -> None:
    """On a CPU, turn on :func:`unetlab.keep_freed_memory_for_reuse` (unless ``--no-keep-freed-memory``) and say so:
    it is a process-wide change, which the library itself never makes."""
    if resolve_device(args.device).type == "cpu" and args.keep_freed_memory and keep_freed_memory_for_reuse():
        print("allocator: glibc keeps freed memory for reuse in this process (faster CPU training; "
              "--no-keep-freed-memory to leave its default)")


def cmd_train(args: argparse.Namespace) -> int:
    sizes, _ = _sizes(args)
    out = Path(args.out)
    checkpoint = out / "model.pt"
    if checkpoint.exists() and not (args.resume or args.overwrite):
        raise SystemExit(f"error: {checkpoint} exists; pass --resume to continue it or --overwrite to start over")
    check_writable(out)
    if args.task == "multiclass":
        check_writable(Path(args.figures))
    preset = args.preset or ("multiclass" if args.task == "multiclass" else "default")
    cfg = DefectConfig.preset(preset, size=sizes.image_size)
    model, history, loaders, settings = _train(args, sizes, cfg, checkpoint)
    if not distributed.is_main():  # under torchrun, rank 0 reports and writes
        return 0
    settings["preset"] = preset
    best = history.best_epoch
    print(f"best epoch {best}: val Dice {history.val_dice[best - 1]:.3f}" if best else "trained without validation")
    print(f"checkpoint: {checkpoint}")
    if args.task == "multiclass":
        model, _ = load_checkpoint(checkpoint, device=args.device)  # the best epoch
        scores, paths = _score_and_draw(model, loaders["test"], Path(args.figures))
        _write_results(out / "results.json", "multiclass", scores, checkpoint=checkpoint, training=settings)
        print(f"results: {out / 'results.json'}")
        print("figures: " + ", ".join(str(p) for p in paths))
    return 0


def _score_and_draw(model, loader: DataLoader, figures: Path, threshold: float = 0.5) -> tuple[dict, list[Path]]:
    """Score ``model`` on the test ``loader`` and draw its figures, for either task; returns (scores, figures).

    Binary: :func:`unetlab.evaluate` at ``threshold``, the first four and the four worst test images. Multi-class:
    :func:`unetlab.evaluate_multiclass` (printed as a table), the confusion matrix and four images with defects.
    """
    if model.config["out_channels"] == 1:
        return _evaluate_and_draw(model, loader, figures, threshold)
    scores = evaluate_multiclass(model, loader)
    print(f"held-out synthetic test set ({scores['n_images']} images), pooled per class:")
    _print_table([(name, f"Dice {scores['dice'][name]:.3f}  IoU {scores['iou'][name]:.3f}")
                  for name in scores["class_names"][1:]])
    ds = loader.dataset
    shown = list(itertools.islice((i for i in range(len(ds)) if ds.sample(i)[1].any()), 4))
    images, _, truths = stack_items(ds, shown)
    return scores, [save_figure(plot_confusion(scores["matrix"]), figures / "multiclass_confusion.png"),
                    save_figure(show_label_predictions(images, truths, predict_labels(model, images[:, None]),
                                                       titles=[f"test #{i}" for i in shown]),
                                figures / "multiclass_predictions.png")]


def _evaluate_and_draw(model, loader: DataLoader, figures: Path, threshold: float) -> tuple[dict, list[Path]]:
    """Evaluate a binary model at ``threshold``, draw fixed and worst samples; returns (summary, figure paths)."""
    result = evaluate(model, loader, threshold=threshold)
    ds = loader.dataset
    paths = []
    for name, indices in (("predictions", list(range(min(4, len(ds))))),
                          ("worst", result.worst(4, with_defects=True))):
        if not indices:
            continue
        images, truths = stack_items(ds, indices)[:2]
        paths.append(save_figure(show_predictions(images, truths, predict(model, images[:, None]), threshold,
                                                  titles=[f"test #{i}" for i in indices]), figures / f"{name}.png"))
    return result.summary, paths


def _write_results(path: Path, task: str, scores: dict, **more) -> None:
    """Write a results JSON file: ``task``, ``unetlab_version``, what ``more`` adds, and the test ``scores``
    (under ``"summary"`` for a binary model, ``"test"`` for a multi-class one)."""
    write_json(path, {"task": task, **{k: str(v) if isinstance(v, Path) else v for k, v in more.items()},
                       "summary" if task == "binary" else "test": scores, "unetlab_version": __version__})


def _test_loader(args: argparse.Namespace, sizes: RunSizes, cfg: DefectConfig) -> DataLoader:
    """The held-out synthetic test set (a --data folder is scored by cli_real.evaluate_folder instead)."""
    ds = SyntheticDefects(sizes.n_test, cfg, args.seed, SPLIT_START["test"], return_labels=True)
    return DataLoader(ds, batch_size=sizes.batch_size)


def _choose_threshold(model, val_loader: DataLoader, figures: Path) -> dict:
    """Sweep thresholds on the validation set (never on the test set) and draw the curve."""
    sweep = threshold_sweep(model, val_loader)
    save_figure(plot_threshold_sweep(sweep), figures / "threshold_sweep.png")
    return sweep


def cmd_evaluate(args: argparse.Namespace) -> int:
    check_writable(Path(args.figures))
    if args.out:
        check_writable(Path(args.out).parent)
    model, info = load_checkpoint(args.checkpoint, device=args.device)
    if args.data and model.config["out_channels"] == 1:  # real images: class Dice and the rest
        return cli_real.evaluate_folder(model, info, args)
    if args.threshold is None:
        args.threshold = info.get("threshold") or 0.5
    sizes, _ = _sizes(args)
    cfg = DefectConfig.from_dict(info["data_config"]) if info.get("data_config") else DefectConfig()
    task = "binary" if model.config["out_channels"] == 1 else "multiclass"
    if task == "multiclass" and args.data:
        raise SystemExit("error: a multi-class model is evaluated on synthetic data only (folders have no "
                         "class labels)")
    scores, paths = _score_and_draw(model, _test_loader(args, sizes, cfg), Path(args.figures), args.threshold)
    if task == "binary":
        print(json_text(scores))
    if args.out:  # training wrote results.json beside the checkpoint; evaluating writes only where --out says
        _write_results(Path(args.out), task, scores, checkpoint=args.checkpoint)
        print(f"results: {args.out}")
    print("figures: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    sizes, sizes_label = _sizes(args)
    cfg = DefectConfig(size=sizes.image_size)
    out, figures = check_writable(Path(args.out)), check_writable(Path(args.figures))
    device = args.device
    print(f"unetlab {__version__} demo on {device} ({sizes_label}: {sizes.n_train} train / {sizes.n_val} val / "
          f"{sizes.n_test} test images, {sizes.epochs} epochs)")
    seconds = {}

    t = time.perf_counter()
    save_figure(show_gallery(), figures / "samples.png")
    seconds["samples"] = time.perf_counter() - t

    t = time.perf_counter()
    checkpoint = out / "model.pt"
    model, history, loaders, settings = _train(args, sizes, cfg, checkpoint)
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    save_figure(plot_history(history), figures / "training_curves.png")
    model, _ = load_checkpoint(checkpoint, device=device)  # the best epoch, not the last
    sweep = _choose_threshold(model, loaders["val"], figures)
    threshold = sweep["best_threshold"] if args.threshold is None else args.threshold
    store_decision(checkpoint, threshold)  # predict and evaluate use it by default, not 0.5
    summary, _ = _evaluate_and_draw(model, loaders["test"], figures, threshold)
    at_half = summary if threshold == 0.5 else evaluate(model, loaders["test"], threshold=0.5, progress=False).summary
    seconds["evaluate"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start

    results = {
        "held_out": {k: summary[k] for k in ("dice", "iou", "precision", "recall", "mean_dice",
                                            "instance_recall", "fp_rate_defect_free") if k in summary},
        "class_recall": summary.get("class_recall"),
        "threshold": threshold,
        "threshold_chosen_on": "validation set" if args.threshold is None else "command line",
        "dice_at_threshold_0.5": at_half["dice"],
        "val_threshold_sweep": {k: sweep[k] for k in ("thresholds", "dice", "iou")},
        "history": history.to_dict(),
        "defect_config": cfg.to_dict(),
        "run_sizes": dataclasses.asdict(sizes),
        "training": settings,
        "model": {**model.config, "parameters": count_parameters(model)},
        "seconds": seconds,
        "device": str(device),
        "versions": {"unetlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    _write_results(out / "results.json", "binary", summary, checkpoint=checkpoint, **results)

    print("\nHeld-out synthetic test set "
          f"({summary['n_images']} images never seen in training, threshold {threshold:g} chosen on the "
          f"{results['threshold_chosen_on']}):")
    rows = [(name, f"{results['held_out'][name]:.3f}") for name in results["held_out"]]
    rows += [(f"recall: {name}", f"{value:.3f}") for name, value in (results["class_recall"] or {}).items()]
    rows += [("training", f"{settings['epochs']} epochs, lr {settings['lr']:g} ({settings['schedule']}), "
                          f"batch {settings['batch_size']}, {settings['n_train']} images"),
             ("time", f"{seconds['total']:.0f} s in all ({seconds['train']:.0f} s training) on {device}"),
             ("results", str(out / "results.json")), ("figures", f"{figures}/")]
    _print_table(rows)
    return 0


def _run_distributed(args: argparse.Namespace) -> int:
    """Run a training command as one of torchrun's processes (see :mod:`unetlab.distributed`): on this process's
    device, in the process group; rank 0 says how many processes train, the others keep quiet on stdout (they
    would repeat every line; their errors still reach stderr)."""
    with distributed.process_group(args.device) as args.device:
        if not distributed.is_main():
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                return args.func(args)
        print(distributed.describe())
        return args.func(args)


# --------------------------------------------------------------------------------------------------------------
# Argument parsing


def _add_run_options(p: argparse.ArgumentParser, *, training: bool = True) -> None:
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test (same as UNETLAB_QUICK=1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the shuffling (default 0)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--n-test", type=int, default=None, help=f"held-out test images (default {FULL.n_test})")
    if not training:
        p.add_argument("--threshold", type=cli_real.threshold_arg, default=None,
                       help="probability above which a pixel is a defect, in [0, 1), without a seed threshold "
                            "(default: the checkpoint's, else 0.5; with --data also its seed threshold)")
        return
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default {FULL.epochs})")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per step (default {FULL.batch_size})")
    p.add_argument("--n-train", type=int, default=None,
                   help=f"training images (windows with --crop) per epoch (default {FULL.n_train}; "
                        f"{MULTICLASS.n_train} with --task multiclass)")
    p.add_argument("--n-val", type=int, default=None, help=f"validation images (default {FULL.n_val})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default {DEMO_LR:g}; {MULTICLASS_LR:g} with --task multiclass)")
    p.add_argument("--crop", type=int, default=None,
                   help=f"train on N x N windows of synthetic images, mostly over defects (default {FULL.crop}; "
                        "0 = whole images; a --data folder always trains on whole images)")
    p.add_argument("--schedule", choices=("constant",) + tuple(s for s in SCHEDULERS if s), default=DEMO_SCHEDULE,
                   help=f"learning-rate schedule (default {DEMO_SCHEDULE})")
    p.add_argument("--card", action="store_true",
                   help=f"the product card's settings: Adam at a constant lr {CARD_LR:g} (overrides --lr/--schedule)")
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                   help="mixed precision: auto = bf16 on CPUs and GPUs that compute it natively (AMX, AVX-512 BF16, "
                        "compute capability >= 8.0), fp16 "
                        "on older GPUs, fp32 elsewhere")
    p.add_argument("--base", type=int, default=16, help="UNet channels at full resolution (default 16)")
    p.add_argument("--depth", type=int, default=None,
                   help="UNet down/up levels (default 2; 3 with --task multiclass, for more context)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="on a CPU, ask glibc to keep freed memory for reuse instead of handing it back to the kernel "
                        "after every step: a process-wide allocator setting (unetlab.keep_freed_memory_for_reuse) "
                        "that speeds CPU training up, e.g. 12 -> 17 img/s on 2 cores; the process keeps its peak "
                        "memory. On by default; the run's log says when it is made")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unetlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"unetlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate -> train -> evaluate -> figures and results.json")
    _add_run_options(p)
    p.add_argument("--threshold", type=cli_real.threshold_arg, default=None,
                   help="probability above which a pixel is a defect, in [0, 1) (default: the best on the "
                        "validation set)")
    p.add_argument("--out", default="runs/demo", help="folder for the checkpoint and results.json")
    p.add_argument("--figures", default="figures", help="folder for the PNG figures (default figures/)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="write a synthetic dataset (images/, masks/, labels/, dataset.json)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, help="dataset folder (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--surface", default="mixed", help="mixed, " + ", ".join(SURFACES))
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="train a UNet on synthetic data (or on --data FOLDER)")
    _add_run_options(p)
    p.add_argument("--out", default="runs/train", help="folder for model.pt")
    p.add_argument("--task", choices=TASKS, default="binary",
                   help="binary: one defect mask (default); multiclass: background, scratch, crack, stain")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="synthetic data preset: default (the tutorial's; the default for --task binary), "
                        "randomized (domain randomisation) or multiclass (scratches >= 2 px, so a hairline is "
                        "always a crack; the default for --task multiclass)")
    p.add_argument("--figures", default="figures", help="folder for the multi-class figures")
    p.add_argument("--data", default=None, help="images/ + masks/ folder to train on instead of on-the-fly data")
    p.add_argument("--resume", action="store_true", help="continue from OUT/model.pt")
    p.add_argument("--overwrite", action="store_true", help="start over even if OUT/model.pt exists")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint on held-out synthetic data, or on a labelled --data FOLDER "
                                        "of real images (class Dice, per class, pooled, false alarms)")
    p.add_argument("--checkpoint", required=True, help="model.pt written by train or demo")
    _add_run_options(p, training=False)
    p.add_argument("--data", default=None,
                   help="labelled folder to evaluate on (any layout finetune --data reads; any sizes)")
    cli_real.add_missing_masks(p)
    p.add_argument("--figures", default="figures", help="folder for the PNG figures")
    p.add_argument("--out", default=None, help="also write the scores to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    cli_real.add_commands(sub)
    return parser


DISTRIBUTED_COMMANDS = ("train", "pretrain", "finetune")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        launch = distributed.launched()
        if launch is not None and args.command not in DISTRIBUTED_COMMANDS:
            raise SystemExit(f"error: torchrun trains one model on N processes with {', '.join(DISTRIBUTED_COMMANDS)}; "
                             f"`unetlab {args.command}` runs in one process: start it without torchrun")
        if hasattr(args, "device"):
            args.device = resolve_device(args.device)  # before any work: "--device cuda" on a CPU-only build
        return args.func(args) if launch is None else _run_distributed(args)
    except (ValueError, OSError) as err:  # OSError: missing files, full disks, unwritable folders
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: any checkpoint on disk holds the last finished epoch (resume with --resume)",
              file=sys.stderr)
        return 130
