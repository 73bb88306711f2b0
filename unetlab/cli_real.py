"""The command line for real use: ``unetlab pretrain | finetune | predict``, and ``evaluate --data FOLDER``.

An engineer with pictures of good parts and a few labelled defects:

    unetlab pretrain --backgrounds good_parts/ --out runs/pretrain        # synthetic defects on your surfaces
    unetlab finetune --data labelled/ --init runs/pretrain/model.pt --out runs/finetune
    unetlab predict --checkpoint runs/finetune/model.pt --out masks/ new_images/
    unetlab evaluate --checkpoint runs/finetune/model.pt --data labelled_test/ --out scores.json

Every command checks its inputs and its output folder before any work starts, and writes its files atomically.
The decision travels in the checkpoint: a threshold and, when it scored better, a seed threshold (keep only
the regions of defect pixels with a confident core: :mod:`unetlab.decision`). ``finetune`` chooses them on the
images it holds out, ``pretrain`` on held-out synthetic samples and the unpainted backgrounds; ``predict`` and
``evaluate`` use them unless ``--threshold`` says otherwise (a plain threshold, without a seed threshold).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from ._version import __version__
from .checkpoint import load_checkpoint, save_checkpoint
from .decision import defect_mask
from .device import AMP_MODES, keep_freed_memory_for_reuse, resolve_device
from .evaluate import predict, predict_masks, score_masks
from .finetune import FinetuneConfig, finetune
from .folders import IMAGE_SUFFIXES, MISSING_MASKS, one_colour_warning, read_image
from .io import atomic_write, check_writable, write_json
from .pretrain import PretrainConfig, pretrain
from .real import RealSet, load_backgrounds
from .synth import PRESETS
from .viz import save_figure

QUICK_FINETUNE = dict(min_steps=8, max_steps=8, evals=2)  # --quick: a smoke test of the whole path
QUICK_PRETRAIN = dict(n_train=32, epochs=1, n_val=8)


# --------------------------------------------------------------------------------------------------------------
# Shared checks


def _fresh_checkpoint(out: Path, overwrite: bool) -> Path:
    checkpoint = out / "model.pt"
    if checkpoint.exists() and not overwrite:
        raise SystemExit(f"error: {checkpoint} exists; pass --overwrite to replace it or choose another --out")
    return checkpoint


def threshold_arg(text: str) -> float:
    """argparse type of ``--threshold``: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) (a pixel is a defect when its probability is "
                                         f"above it); got {text}")
    return value


def _said(threshold: float, seed_threshold: float | None) -> str:
    """How a decision is printed: "threshold 0.35, seed threshold 0.9"."""
    return f"threshold {threshold:g}" + (f", seed threshold {seed_threshold:g}" if seed_threshold is not None else "")


def _decision(args: argparse.Namespace, info: dict) -> tuple[float, float | None, str]:
    """The threshold and seed threshold: ``--threshold`` (alone), else the checkpoint's, else 0.5 (alone); and a
    phrase that says where they came from."""
    if args.threshold is not None:
        return args.threshold, None, f"threshold {args.threshold:g} (from --threshold)"
    if info.get("threshold") is not None:
        seed = info.get("seed_threshold")
        return float(info["threshold"]), seed, f"{_said(info['threshold'], seed)} (from the checkpoint)"
    return 0.5, None, "threshold 0.5 (the default: the checkpoint has none)"


def _allocator(args: argparse.Namespace, device: torch.device) -> None:
    if args.keep_freed_memory and device.type == "cpu" and keep_freed_memory_for_reuse():
        print("CPU: glibc keeps freed memory for reuse (faster training; --no-keep-freed-memory to leave it)")


# --------------------------------------------------------------------------------------------------------------
# pretrain


def cmd_pretrain(args: argparse.Namespace) -> int:
    out = check_writable(Path(args.out))
    checkpoint = _fresh_checkpoint(out, args.overwrite)
    config = PretrainConfig(preset=args.preset, **(QUICK_PRETRAIN if args.quick else {}))
    config = config.replace(**{k: v for k, v in (("n_train", args.n_train), ("epochs", args.epochs)) if v})
    backgrounds = load_backgrounds(args.backgrounds, progress=distributed.is_main()) if args.backgrounds else None
    device = resolve_device(args.device)
    _allocator(args, device)
    result = pretrain(config, backgrounds, seed=args.seed, device=device)
    if not distributed.is_main():  # under torchrun, rank 0 reports and writes
        return 0
    data_config = {"preset": config.preset, "defect_config": config.defect_config().to_dict(),
                   "backgrounds": str(Path(args.backgrounds).resolve()) if args.backgrounds else None,
                   "n_backgrounds": len(backgrounds) if backgrounds is not None else 0, "seed": args.seed}
    save_checkpoint(checkpoint, result.model, history=result.history, threshold=result.threshold,
                    seed_threshold=result.seed_threshold, data_config=data_config)
    write_json(out / "pretrain.json", {"command": "pretrain", "unetlab_version": __version__,
                                        "config": dataclasses.asdict(config), "data": data_config,
                                        "threshold": result.threshold, "seed_threshold": result.seed_threshold,
                                        "val_dice": result.val_dice,
                                        "seconds": result.seconds, "processes": distributed.world_size(),
                                        "history": result.history.to_dict()})
    chose = "synthetic samples" + (" and the unpainted backgrounds" if backgrounds is not None else "")
    print(f"pretrained in {result.seconds:.0f} s: validation Dice {result.val_dice:.3f} ({chose}) at "
          f"{_said(result.threshold, result.seed_threshold)}")
    print(f"checkpoint: {checkpoint} (continue with: unetlab finetune --init {checkpoint} --data FOLDER --out DIR)")
    return 0


# --------------------------------------------------------------------------------------------------------------
# finetune


def cmd_finetune(args: argparse.Namespace) -> int:
    out = check_writable(Path(args.out))
    checkpoint = _fresh_checkpoint(out, args.overwrite)
    data = RealSet.load(args.data, progress=distributed.is_main(), missing_masks=args.missing_masks)
    backgrounds = load_backgrounds(args.backgrounds, progress=distributed.is_main()) if args.backgrounds else None
    config = FinetuneConfig(**(QUICK_FINETUNE if args.quick else {}))
    changes = {k: getattr(args, k) for k in ("crop", "steps_per_image", "max_steps", "synthetic_share")
               if getattr(args, k) is not None}
    if "max_steps" in changes:
        changes["min_steps"] = min(config.min_steps, changes["max_steps"])
    config = config.replace(**changes, refit=args.refit == "always")
    device = resolve_device(args.device)
    model, start, info = None, "fresh weights", {}
    if args.init.lower() != "none":
        model, info = load_checkpoint(args.init, device=device)
        if model.config["out_channels"] != 1:
            raise SystemExit(f"error: --init {args.init} is a multi-class model; finetune trains a binary one")
        start = f"{args.init}"
    _allocator(args, device)
    print(f"unetlab {__version__} finetune on {device}: {len(data)} labelled images from {args.data}, starting from "
          f"{start}")
    result = finetune(model, data, config, seed=args.seed, backgrounds=backgrounds, device=device,
                      start_decision=(info["threshold"], info["seed_threshold"]) if info else None)
    if not distributed.is_main():  # under torchrun, rank 0 reports and writes
        return 0
    save_checkpoint(checkpoint, result.model, history=result.history, threshold=result.threshold,
                    seed_threshold=result.seed_threshold,
                    data_config={"finetuned_on": result.trained_on, "validated_on": result.val_stems,
                                 "data": str(Path(args.data).resolve()), "init": start, "seed": args.seed})
    write_json(out / "finetune.json", {"command": "finetune", "unetlab_version": __version__, "init": start,
                                        "backgrounds": args.backgrounds and str(Path(args.backgrounds).resolve()),
                                        "config": dataclasses.asdict(config), "threshold": result.threshold,
                                        "seed_threshold": result.seed_threshold, "val_class_dice": result.val_score,
                                        "best_step": result.best_step, "refitted": result.refitted,
                                        "refit_steps": result.refit_steps,
                                        "steps": result.steps, "evals": result.evals, "seconds": result.seconds,
                                        "processes": distributed.world_size(),
                                        "train_stems": result.train_stems, "val_stems": result.val_stems})
    save_figure(_validation_curve(result.evals, result.best_step, result.steps, result.refit_steps),
                out / "validation.png")
    refitted = (f", its last {result.refit_steps} on all {len(data)} images (refit; held-out score of step "
                f"{result.steps - result.refit_steps})" if result.refitted else "")
    kept = (f"kept step {result.best_step} of {result.steps}{refitted}" if result.steps else
            "kept the pretrained start, untrained (too few held-out images with a defect to judge any training)")
    print(f"{kept}: held-out class Dice {result.val_score:.3f} at {_said(result.threshold, result.seed_threshold)} "
          f"({result.seconds:.0f} s)")
    print(f"checkpoint: {checkpoint}; record: {out / 'finetune.json'}; curve: {out / 'validation.png'}")
    return 0


def _validation_curve(evals: list[dict], best_step: int, steps: int, refit_steps: int):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.plot([e["step"] for e in evals], [e["val_class_dice"] for e in evals], "o-")
    if refit_steps:
        ax.axvspan(steps - refit_steps, steps, color="C1", alpha=0.15, label="on every image (not validated)")
    ax.axvline(best_step, color="gray", ls=":", label=f"kept: step {best_step}")
    ax.set(xlabel="optimiser step", ylabel="held-out class Dice", ylim=(0, 1), title="fine-tuning")
    ax.legend(loc="lower right")
    return fig


# --------------------------------------------------------------------------------------------------------------
# predict


def image_files(paths: list[str]) -> list[Path]:
    """The image files named by ``paths``: files as given, folders by their image files (``images/`` of a
    labelled folder), sorted. Two files with one stem are refused: both would write ``<stem>.png``."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            inner = path / "images" if (path / "images").is_dir() else path
            found = sorted(p for p in inner.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SystemExit(f"error: {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise SystemExit(f"error: {path} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
            files.append(path)
        else:
            raise SystemExit(f"error: no such image or folder: {path}")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems and stems[f.stem] != f:
            raise SystemExit(f"error: {stems[f.stem]} and {f} have the same name {f.stem!r}: both would write "
                             f"{f.stem}.png; rename one or predict them separately")
        stems[f.stem] = f
    return list(stems.values())


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write(path, lambda f: f.write(buf.tobytes()))


def cmd_predict(args: argparse.Namespace) -> int:
    files = image_files(args.paths)
    out = check_writable(Path(args.out))
    device = resolve_device(args.device)
    model, info = load_checkpoint(args.checkpoint, device=device)
    if model.config["out_channels"] != 1:
        raise SystemExit("error: predict writes binary masks; this checkpoint is a multi-class model")
    threshold, seed_threshold, source = _decision(args, info)
    flagged_images, flagged, total = 0, 0, 0
    with one_colour_warning():  # a folder of colour images: one warning, not one per image
        for path in tqdm(files, desc="predict", unit="image"):
            image = read_image(path)
            prob = predict(model, image, device=device, flips=args.flips, amp=args.amp)
            mask = defect_mask(prob, threshold, seed_threshold)
            _write_png(out / f"{path.stem}.png", mask.astype(np.uint8) * 255)
            if args.probs:
                _write_png(out / f"{path.stem}_prob.png", np.rint(prob * 255).astype(np.uint8))
            if args.overlays:
                gray = np.rint(image * 255).astype(np.uint8)
                overlay = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
                overlay[mask] = (0.5 * overlay[mask] + 0.5 * np.array([0, 0, 255])).astype(np.uint8)  # red in BGR
                _write_png(out / f"{path.stem}_overlay.png", overlay)
            flagged_images += bool(mask.any())
            flagged += int(mask.sum())
            total += mask.size
    print(f"wrote {len(files)} mask(s) to {out}/: {flagged_images} with defects, {100 * flagged / total:.2f}% of all "
          f"pixels flagged; {source}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# evaluate --data (called by unetlab.cli's evaluate for a binary model)


def evaluate_folder(model, info: dict, args: argparse.Namespace) -> int:
    """Score a binary model on a labelled real folder: print and (``--out``) write the real-data scores."""
    if args.out:
        check_writable(Path(args.out).parent)
    data = RealSet.load(args.data, missing_masks=args.missing_masks)
    threshold, seed_threshold, source = _decision(args, info)
    scores = score_masks(predict_masks(model, data, threshold, seed_threshold, device=args.device), data)
    per_image = scores.pop("per_image_dice")
    print(f"{args.data}: {scores['n_images']} images ({scores['n_defect_free']} defect-free), {source}")
    rows = [("class Dice", scores["class_dice"])] + [(f"  {name}", d) for name, d in scores["per_class"].items()]
    rows += [("pooled Dice", scores["dice"]), ("pooled IoU", scores["iou"]), ("precision", scores["precision"]),
             ("recall", scores["recall"]), ("false alarms on defect-free", scores["fp_rate_defect_free"])]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {'n/a' if value is None or not math.isfinite(value) else f'{value:.3f}'}")
    if args.out:
        write_json(Path(args.out), {"command": "evaluate", "unetlab_version": __version__,
                                     "checkpoint": str(args.checkpoint), "data": str(args.data),
                                     "threshold": threshold, "seed_threshold": seed_threshold,
                                     "threshold_from": source, "scores": scores,
                                     "per_image_dice": dict(zip(data.stems, per_image))})
        print(f"scores: {args.out}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# Argument parsing


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/model.pt if it exists")
    p.add_argument("--quick", action="store_true", help="a few steps only: a smoke test of the whole path")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="on a CPU, let glibc keep freed memory for reuse (process-wide; faster training)")


def add_missing_masks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--missing-masks", choices=MISSING_MASKS, default="error",
                   help="an image of --data without a mask: 'error' (default: a forgotten mask is never read as "
                        "'no defect') or 'good' (a defect-free part, as in MVTec AD or DAGM folders)")


def add_commands(sub) -> None:
    """Register ``pretrain``, ``finetune`` and ``predict`` on the ``unetlab`` parser's sub-commands."""
    d = FinetuneConfig()
    p = sub.add_parser("pretrain", help="synthetic-only pretraining for real use, optionally on your defect-free "
                                        "images (--backgrounds)")
    p.add_argument("--out", required=True, help="folder for model.pt and pretrain.json")
    p.add_argument("--backgrounds", default=None,
                   help="folder of defect-free images (any size, 8/16-bit, colour converted) to paint defects on, "
                        "and whose false alarms count when the threshold is chosen; default: procedural surfaces")
    p.add_argument("--preset", choices=tuple(PRESETS), default=PretrainConfig().preset,
                   help=f"synthetic data preset (default {PretrainConfig().preset!r})")
    p.add_argument("--n-train", type=int, default=None, help=f"samples per epoch (default {PretrainConfig().n_train})")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default {PretrainConfig().epochs})")
    _common(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="train a binary model on a folder of labelled real images")
    p.add_argument("--data", required=True, help="labelled folder (images/ + masks/, a mask named <stem> or "
                   "<stem>_mask/_label/_GT; the magnetic-tile layout; one MVTec AD category; or images "
                   "beside their <stem>_mask files)")
    add_missing_masks(p)
    p.add_argument("--init", required=True, help="checkpoint to start from (e.g. from pretrain), or 'none'")
    p.add_argument("--out", required=True, help="folder for model.pt, finetune.json and validation.png")
    p.add_argument("--crop", type=int, default=None, help=f"training window side, px (default {d.crop})")
    p.add_argument("--steps-per-image", type=int, default=None,
                   help=f"optimiser steps per training image (default {d.steps_per_image}; good parts count up to "
                        f"as many as the images with a defect; the total stays in [{d.min_steps}, {d.max_steps}])")
    p.add_argument("--max-steps", type=int, default=None, help=f"at most this many steps (default {d.max_steps})")
    p.add_argument("--backgrounds", default=None,
                   help="folder of defect-free images to paint the --synthetic-share of the training windows on "
                        "(e.g. the one pretrain used); default: the folder's own images of a defect-free class")
    p.add_argument("--synthetic-share", type=float, default=None,
                   help=f"share of the training windows replaced by synthetic defects, e.g. 0.25 (default "
                        f"{d.synthetic_share:g}: real windows only; see the README, 'Sim to real')")
    p.add_argument("--refit", choices=("always", "never"), nargs="?", const="always", default="always",
                   help="once the held-out images have chosen whether to train (validating the first half of the "
                        "steps), train the second half on every image, held-out ones too, and choose the decision "
                        "on them: better models in our measurements, in the same steps (default: always; never: "
                        "validate every part and keep the best step)")
    _common(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("predict", help="write a defect mask (<stem>.png, 0/255, the image's size) per image")
    p.add_argument("paths", nargs="+", help="image files or folders of them")
    p.add_argument("--checkpoint", required=True, help="model.pt from finetune, pretrain or train")
    p.add_argument("--out", required=True, help="folder for the masks")
    p.add_argument("--threshold", type=threshold_arg, default=None,
                   help="probability above which a pixel is a defect, without a seed threshold (default: the "
                        "checkpoint's threshold and seed threshold, else 0.5)")
    p.add_argument("--probs", action="store_true", help="also write <stem>_prob.png, the probability x 255")
    p.add_argument("--overlays", action="store_true", help="also write <stem>_overlay.png, the mask in red")
    p.add_argument("--flips", action=argparse.BooleanOptionalAction, default=True,
                   help="average the predictions of the four flips of each image (default; 4x the time, the way "
                        "finetune chose the threshold)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--amp", choices=AMP_MODES, default="auto",
                   help="the network's precision: 'auto' (default) bf16 where the CPU or GPU computes it natively, "
                        "as finetune and pretrain predict; 'off' float32")
    p.set_defaults(func=cmd_predict)
