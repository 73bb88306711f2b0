"""Hostile files, wrong inputs and interrupted runs: probe unetlab the way issue 11 did and print what happened.

    ulimit -v 4000000; python benchmarks/probe_robustness.py [--cases NAME ...] [--timeout 300]

Every case runs in its own Python process (under the caller's ``ulimit``, so a runaway allocation ends that
process, not the machine) in a fresh temporary folder, and is put in one of these outcomes:

    clear           refused with one clear error (a ValueError/OSError naming the problem, or the CLI's one
                    "error:" line and exit code 2), or, where success is right, it succeeded correctly
    unclear         refused, but with a traceback, an unexpected exception or a message that does not say why
    silently wrong  accepted what it should refuse, or gave a wrong result without a word
    crash           killed (out of memory, a signal) or hung past --timeout
    data loss       a file that had to survive is gone or changed

Prints a markdown table (case, outcome, detail) and the totals. Needs no network and no GPU (``--device cuda``
is probed only where CUDA is absent). Never part of the test run; the unit tests hold one test per fix.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from contextlib import redirect_stderr
from pathlib import Path

OUTCOMES = ("clear", "unclear", "silently wrong", "crash", "data loss")
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


# ----------------------------------------------------------------------------------------------------------------
# Helpers, run inside the case's process


def refused(call, pattern: str, types=(ValueError, OSError)) -> tuple[str, str]:
    """clear if ``call()`` raises one of ``types`` whose message contains ``pattern``; unclear for another error;
    silently wrong when it returns."""
    try:
        call()
    except types as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        return ("clear" if pattern in str(err) else "unclear"), f"{type(err).__name__}: {text}"[:160]
    except Exception as err:  # noqa: BLE001 - anything else is the finding
        return "unclear", f"{type(err).__name__}: {err}"[:160]
    return "silently wrong", "accepted"


def cli(argv: list[str], pattern: str) -> tuple[str, str]:
    """Run ``unetlab ARGV`` in this process: clear when it exits 2 with one 'error:' line containing ``pattern``."""
    from unetlab.cli import main

    err = io.StringIO()
    try:
        with redirect_stderr(err):
            code = main(argv)
    except SystemExit as done:  # argparse refusals (exit 2), and the CLI's SystemExit("error: ...") (exit 1)
        code = done.code
        if isinstance(code, str):
            err.write(code)
            code = 1 if code.startswith("error: ") else code
    except Exception as exc:  # noqa: BLE001
        return "unclear", f"traceback: {type(exc).__name__}: {exc}"[:160]
    text = err.getvalue().strip().splitlines()
    last = text[-1] if text else ""
    if code == 0:
        return "silently wrong", "exit code 0"
    ok = code in (1, 2) and pattern in err.getvalue() and "Traceback" not in err.getvalue()
    return ("clear" if ok else "unclear"), f"exit {code}: {last}"[:160]


def tiny_model(seed: int = 0, **config):
    import torch

    import unetlab

    torch.manual_seed(seed)
    return unetlab.UNet(**{"base": 4, **config}).eval()


def toy_loader(n: int = 8, masks_times: float = 1.0, nan: bool = False):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    images = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = (images > 0.5).float() * masks_times
    if nan:
        images[0, 0, 0, 0] = float("nan")
    return DataLoader(TensorDataset(images, masks), batch_size=4)


FAST = dict(lr=1e-2, progress=False, device="cpu")


def forged(path: Path, change) -> Path:
    """A copy of a good checkpoint with ``change(payload)`` applied and a digest that matches (a careful forger)."""
    import torch

    from unetlab.checkpoint import save_checkpoint, weights_digest

    payload = torch.load(save_checkpoint(path, tiny_model()), weights_only=True)
    change(payload)
    payload["sha256"] = weights_digest(payload)
    torch.save(payload, path)
    return path


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def quick_train(out: Path, *extra: str) -> list[str]:
    """A small ``unetlab train`` (constant lr, so that any number of epochs can be resumed); later options win."""
    return ["train", "--quick", "--n-train", "8", "--n-val", "4", "--schedule", "constant", "--out", str(out), *extra]


# ----------------------------------------------------------------------------------------------------------------
# Bad configs


@case
def unet_depth_30(tmp):
    import unetlab
    return refused(lambda: unetlab.UNet(depth=30), "depth must be")


@case
def unet_huge_base(tmp):
    import unetlab
    return refused(lambda: unetlab.UNet(base=100_000), "parameters")


@case
def defect_config_from_none(tmp):
    import unetlab
    return refused(lambda: unetlab.DefectConfig.from_dict(None), "expects a dict")


@case
def defect_config_out_of_range(tmp):
    import unetlab
    return refused(lambda: unetlab.DefectConfig(size=10), "size must be")


@case
def loaders_over_a_million(tmp):
    import unetlab
    sizes = unetlab.RunSizes(n_train=1_500_000, n_val=8, n_test=8, epochs=1, batch_size=4)
    return refused(lambda: unetlab.make_loaders(sizes=sizes), "would overlap")


# ----------------------------------------------------------------------------------------------------------------
# Hostile and corrupt checkpoints


@case
def checkpoint_depth_30(tmp):
    from unetlab import load_checkpoint
    path = forged(tmp / "m.pt", lambda p: p["model_config"].update(depth=30))
    return refused(lambda: load_checkpoint(path), "invalid model_config")


@case
def checkpoint_huge_base(tmp):
    from unetlab import load_checkpoint
    path = forged(tmp / "m.pt", lambda p: p["model_config"].update(base=10**6))
    return refused(lambda: load_checkpoint(path), "invalid model_config")


@case
def checkpoint_flipped_bit(tmp):
    import struct

    from unetlab import load_checkpoint, save_checkpoint
    path = save_checkpoint(tmp / "m.pt", tiny_model())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data/0"))
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x04
    path.write_bytes(bytes(data))
    return refused(lambda: load_checkpoint(path), "sha256")


@case
def checkpoint_nan_weights(tmp):
    from unetlab import load_checkpoint
    path = forged(tmp / "m.pt", lambda p: p["model_state"]["head.weight"].fill_(float("nan")))
    return refused(lambda: load_checkpoint(path), "NaN")


@case
def checkpoint_nan_weights_evaluated(tmp):
    path = forged(tmp / "m.pt", lambda p: p["model_state"]["head.bias"].fill_(float("inf")))
    return cli(["evaluate", "--checkpoint", str(path), "--quick", "--figures", str(tmp / "f")], "NaN or infinite")


@case
def checkpoint_without_model_config(tmp):
    import torch

    from unetlab import load_checkpoint
    torch.save({"format": "unetlab.checkpoint", "format_version": 2, "model_state": {}}, tmp / "m.pt")
    return refused(lambda: load_checkpoint(tmp / "m.pt"), "lacks the field")


@case
def checkpoint_truncated(tmp):
    from unetlab import load_checkpoint, save_checkpoint
    data = save_checkpoint(tmp / "m.pt", tiny_model()).read_bytes()
    (tmp / "m.pt").write_bytes(data[: len(data) // 3])
    return refused(lambda: load_checkpoint(tmp / "m.pt"), "truncated")


@case
def checkpoint_random_bytes(tmp):
    from unetlab import load_checkpoint
    (tmp / "m.pt").write_bytes(os.urandom(4096))
    return refused(lambda: load_checkpoint(tmp / "m.pt"), "cannot read checkpoint")


@case
def checkpoint_malicious_pickle(tmp):
    import torch

    from unetlab import load_checkpoint
    marker = tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "unetlab.checkpoint", "evil": Evil()}, tmp / "m.pt")
    outcome = refused(lambda: load_checkpoint(tmp / "m.pt"), "weights-only")
    return ("silently wrong", "the pickle ran code") if marker.exists() else outcome


@case
def checkpoint_pickled_module(tmp):
    import torch

    from unetlab import load_checkpoint
    torch.save(tiny_model(), tmp / "m.pt")
    return refused(lambda: load_checkpoint(tmp / "m.pt"), "weights-only")


@case
def checkpoint_tensor_larger_than_file(tmp):
    import torch

    from unetlab import load_checkpoint
    path = forged(tmp / "m.pt", lambda p: None)
    payload = torch.load(path, weights_only=True)
    payload["model_state"]["head.weight"] = torch.zeros(1).expand(10**10)
    torch.save(payload, path)
    return refused(lambda: load_checkpoint(path), "claims")


@case
def checkpoint_version_1_still_loads(tmp):
    import torch

    from unetlab import load_checkpoint, save_checkpoint
    payload = torch.load(save_checkpoint(tmp / "m.pt", tiny_model()), weights_only=True)
    del payload["sha256"]
    payload["format_version"] = 1
    torch.save(payload, tmp / "v1.pt")
    try:
        load_checkpoint(tmp / "v1.pt")
    except Exception as err:  # noqa: BLE001
        return "unclear", f"a version 1 file is refused: {err}"[:160]
    return "clear", "loads (no digest to check)"


# ----------------------------------------------------------------------------------------------------------------
# Training on wrong data


@case
def fit_0_255_masks(tmp):
    from unetlab import fit
    return refused(lambda: fit(tiny_model(), toy_loader(masks_times=255), epochs=1, **FAST), "0 (background) and 1")


@case
def fit_nan_images(tmp):
    from unetlab import fit
    outcome = refused(lambda: fit(tiny_model(), toy_loader(nan=True), toy_loader(), epochs=1,
                                  checkpoint=tmp / "m.pt", **FAST), "NaN")
    return ("silently wrong", "a checkpoint was saved") if (tmp / "m.pt").exists() else outcome


@case
def fit_one_shot_iterator(tmp):
    from unetlab import fit
    batches = iter(toy_loader())
    outcome = refused(lambda: fit(tiny_model(), batches, epochs=1, **FAST), "one-shot iterator")
    left = len(list(batches))
    return outcome if left == 2 else ("silently wrong", f"{2 - left} batch(es) consumed")


@case
def fit_diverging_loss(tmp):
    from unetlab import fit
    from unetlab.losses import BCEDiceLoss
    loss, calls = BCEDiceLoss(), []

    def nan_on_step_5(logits, masks):
        calls.append(1)
        return loss(logits, masks) * (float("nan") if len(calls) == 5 else 1.0)

    outcome = refused(lambda: fit(tiny_model(), toy_loader(), epochs=3, checkpoint=tmp / "m.pt",
                                  loss_fn=nan_on_step_5, **FAST), "diverged")
    from unetlab import load_checkpoint
    _, info = load_checkpoint(tmp / "m.pt")
    return outcome if info["epoch"] == 2 else ("silently wrong", f"checkpoint at epoch {info['epoch']}")


@case
def fit_colour_batches(tmp):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from unetlab import fit
    data = DataLoader(TensorDataset(torch.rand(4, 3, 32, 32), torch.zeros(4, 1, 32, 32)), batch_size=2)
    return refused(lambda: fit(tiny_model(), data, epochs=1, **FAST), "convert colour images")


@case
def fit_labels_out_of_range(tmp):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from unetlab import fit
    images = torch.rand(4, 1, 32, 32)
    data = DataLoader(TensorDataset(images, torch.zeros(4, 1, 32, 32), torch.full((4, 32, 32), 7)), batch_size=2)
    return refused(lambda: fit(tiny_model(out_channels=4), data, epochs=1, **FAST), "class ids in [0, 4)")


# ----------------------------------------------------------------------------------------------------------------
# Resume and interruptions


def _weights(path: Path):
    """The last epoch's weights of a checkpoint, after load_checkpoint has checked the file."""
    import torch

    from unetlab import load_checkpoint
    load_checkpoint(path)
    return torch.load(path, weights_only=True)["train_state"]["model_state"]


def _same(a, b) -> bool:
    import torch
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _resume_exact(tmp, workers: int):
    """4 epochs straight with 0 workers against 2 epochs + resume to 4 with ``workers``, on shuffled windows."""
    from unetlab.cli import main
    with redirect_stderr(io.StringIO()):
        main(quick_train(tmp / "straight", "--crop", "32", "--epochs", "4", "--workers", "0"))
        main(quick_train(tmp / "split", "--crop", "32", "--epochs", "2", "--workers", str(workers)))
        main(quick_train(tmp / "split", "--crop", "32", "--epochs", "4", "--workers", str(workers), "--resume"))
    same = _same(_weights(tmp / "straight" / "model.pt"), _weights(tmp / "split" / "model.pt"))
    return ("clear", "2 + resume to 4 == 4 straight") if same else ("silently wrong", "the weights differ")


@case
def resume_is_exact(tmp):
    return _resume_exact(tmp, 0)


@case
def resume_is_exact_with_2_workers(tmp):
    return _resume_exact(tmp, 2)


def _resume_with(tmp, extra: list[str], pattern: str):
    from unetlab.cli import main
    with redirect_stderr(io.StringIO()):
        assert main(quick_train(tmp / "run")) == 0
    before = (tmp / "run" / "model.pt").read_bytes()
    outcome = cli([*quick_train(tmp / "run"), "--resume", "--epochs", "2", *extra], pattern)
    if (tmp / "run" / "model.pt").read_bytes() != before:
        return "silently wrong", f"{outcome[1]}; the checkpoint was rewritten"
    return outcome


@case
def resume_with_another_lr(tmp):
    return _resume_with(tmp, ["--lr", "1e-3"], "lr=")


@case
def resume_with_another_preset(tmp):
    return _resume_with(tmp, ["--preset", "randomized"], "data_config differs")


@case
def resume_with_another_batch_size(tmp):
    return _resume_with(tmp, ["--batch-size", "2"], "batch_size=")


@case
def resume_with_another_schedule(tmp):
    return _resume_with(tmp, ["--schedule", "cosine"], "scheduler")


@case
def sigkill_during_training_then_resume(tmp):
    """Kill a training run 4 times at different moments; the checkpoint must always load, and resuming to the
    end must give the weights of a run that was never killed."""
    from unetlab import load_checkpoint
    command = [sys.executable, "-m", "unetlab"]
    killed = tmp / "killed" / "model.pt"
    for delay in (4.0, 6.5, 9.0, 11.5):
        argv = quick_train(tmp / "killed", "--epochs", "6", *(["--resume"] * killed.exists()))
        proc = subprocess.Popen(command + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if killed.exists():
            load_checkpoint(killed)  # raises if half-written
    subprocess.run(command + quick_train(tmp / "killed", "--epochs", "6", *(["--resume"] * killed.exists())),
                   check=True, capture_output=True)
    subprocess.run(command + quick_train(tmp / "whole", "--epochs", "6"), check=True, capture_output=True)
    litter = len(list((tmp / "killed").glob(".*.tmp")))  # a kill during a write cannot clean up its temporary file
    same = _same(_weights(killed), _weights(tmp / "whole" / "model.pt"))
    return ("clear", f"4 SIGKILLs, always loadable, same final weights ({litter} temporary files)") if same else (
        "silently wrong", "killed-and-resumed weights differ from a straight run")


# ----------------------------------------------------------------------------------------------------------------
# Prediction inputs


@case
def predict_channel_first_colour(tmp):
    import numpy as np

    from unetlab import predict
    return refused(lambda: predict(tiny_model(), np.random.rand(3, 64, 64).astype(np.float32)), "ambiguous")


@case
def predict_channels_last_colour(tmp):
    import numpy as np

    from unetlab import predict
    return refused(lambda: predict(tiny_model(), np.zeros((64, 64, 3), np.uint8)), "colour")


@case
def predict_empty_array(tmp):
    import numpy as np

    from unetlab import predict
    return refused(lambda: predict(tiny_model(), np.zeros((0, 64), np.float32)), "non-empty")


@case
def predict_nan_image(tmp):
    import numpy as np

    from unetlab import predict
    image = np.full((32, 32), np.nan, np.float32)
    return refused(lambda: predict(tiny_model(), image), "NaN")


@case
def predict_uint16_image(tmp):
    import numpy as np

    from unetlab import predict
    return refused(lambda: predict(tiny_model(), np.zeros((32, 32), np.uint16)), "dtype")


# ----------------------------------------------------------------------------------------------------------------
# Image folders


def _pair_folder(root: Path, images: dict, masks: dict) -> Path:
    import cv2
    for sub, files in (("images", images), ("masks", masks)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            if isinstance(data, bytes):
                (root / sub / name).write_bytes(data)
            else:
                cv2.imwrite(str(root / sub / name), data)
    return root


def _hollow_png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * (width + 1) * min(height, 64), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@case
def data_folder_20000x20000_png(tmp):
    import numpy as np
    small = np.zeros((32, 32), np.uint8)
    root = _pair_folder(tmp / "data", {"a.png": small, "b.png": _hollow_png(20000, 20000)},
                        {"a.png": small, "b.png": small})
    return cli(["train", "--quick", "--data", str(root), "--out", str(tmp / "run")], "pixels")


@case
def data_folder_same_stem_twice(tmp):
    import numpy as np
    small = np.zeros((32, 32), np.uint8)
    root = _pair_folder(tmp / "data", {"a.png": small, "a.jpg": small, "b.png": small},
                        {"a.png": small, "b.png": small})
    return cli(["train", "--quick", "--data", str(root), "--out", str(tmp / "run")], "share the stem")


@case
def data_folder_mask_of_another_size(tmp):
    import numpy as np
    root = _pair_folder(tmp / "data", {"a.png": np.zeros((32, 32), np.uint8), "b.png": np.zeros((32, 32), np.uint8)},
                        {"a.png": np.zeros((32, 40), np.uint8), "b.png": np.zeros((32, 32), np.uint8)})
    return cli(["train", "--quick", "--data", str(root), "--out", str(tmp / "run")], "but its image")


@case
def data_folder_corrupt_image(tmp):
    import numpy as np
    small = np.zeros((32, 32), np.uint8)
    root = _pair_folder(tmp / "data", {"a.png": b"\x89PNG garbage", "b.png": small}, {"a.png": small, "b.png": small})
    return cli(["train", "--quick", "--data", str(root), "--out", str(tmp / "run")], "not a readable image")


@case
def data_folder_soft_masks(tmp):
    import numpy as np
    small = np.zeros((32, 32), np.uint8)
    soft = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32).astype(np.uint8)
    root = _pair_folder(tmp / "data", {"a.png": small, "b.png": small}, {"a.png": soft, "b.png": small})
    return cli(["train", "--quick", "--data", str(root), "--out", str(tmp / "run")], "binary mask")


# ----------------------------------------------------------------------------------------------------------------
# Writing datasets


@case
def generate_overwrite_a_folder_of_mine(tmp):
    (tmp / "thesis").mkdir()
    (tmp / "thesis" / "thesis.txt").write_text("four years")
    outcome = cli(["generate", "--n", "2", "--size", "32", "--out", str(tmp / "thesis"), "--overwrite"],
                  "refusing to replace")
    intact = (tmp / "thesis" / "thesis.txt").is_file()
    return outcome if intact else ("data loss", "thesis.txt deleted")


@case
def generate_overwrite_a_dataset_with_my_notes(tmp):
    from unetlab import write_dataset
    out = write_dataset(tmp / "ds", 2, progress=False)
    (out / "notes.txt").write_text("mine")
    outcome = cli(["generate", "--n", "2", "--size", "32", "--out", str(out), "--overwrite"], "did not write")
    return outcome if (out / "notes.txt").is_file() else ("data loss", "notes.txt deleted")


@case
def generate_overwrite_a_dataset(tmp):
    from unetlab import write_dataset
    out = write_dataset(tmp / "ds", 3, progress=False)
    outcome = cli(["generate", "--n", "2", "--size", "32", "--out", str(out), "--overwrite"], "")
    n = len(list((out / "images").iterdir()))
    if outcome[1].startswith("exit code 0") and n == 2:
        return "clear", "replaced whole"
    return "unclear", f"{outcome[1]}; {n} images"


@case
def generate_into_an_empty_folder_keeps_its_mode(tmp):
    from unetlab.cli import main
    (tmp / "ds").mkdir()
    (tmp / "ds").chmod(0o751)
    with redirect_stderr(io.StringIO()):
        main(["generate", "--n", "1", "--size", "32", "--out", str(tmp / "ds")])
    mode = (tmp / "ds").stat().st_mode & 0o777
    return ("clear", "mode 751 kept") if mode == 0o751 else ("silently wrong", f"mode became {mode:o}")


@case
def generate_into_a_file(tmp):
    (tmp / "f").write_text("x")
    return cli(["generate", "--n", "1", "--size", "32", "--out", str(tmp / "f")], "is a file")


@case
def generate_on_a_full_disk(tmp):
    import unetlab.folders
    unetlab.folders._write_png = disk_full
    outcome = cli(["generate", "--n", "3", "--size", "32", "--out", str(tmp / "ds")], "No space left")
    left = [p.name for p in tmp.iterdir()]
    return outcome if not left else ("unclear", f"half-written: {left}")


# ----------------------------------------------------------------------------------------------------------------
# The command line


@case
def cli_device_cuda_without_cuda(tmp):
    import torch
    if torch.cuda.is_available():
        return "clear", "n/a: this machine has CUDA"
    return cli(quick_train(tmp / "run", "--device", "cuda"), "not available")


@case
def cli_device_gpu(tmp):
    return cli(quick_train(tmp / "run", "--device", "gpu"), "unknown device")


@case
def cli_unwritable_out(tmp):
    """A read-only --out: chmod where it binds (not as root), else a path under a file; both before any epoch."""
    if os.geteuid() != 0:
        (tmp / "ro").mkdir()
        (tmp / "ro").chmod(0o555)
        out, how = tmp / "ro" / "run", "read-only folder"
    else:
        (tmp / "file").write_text("x")
        out, how = tmp / "file" / "run", "under a file (root ignores chmod)"
    started = time.perf_counter()
    outcome = cli(quick_train(out, "--epochs", "3"), "nothing was started")
    return outcome[0], f"{how}, {time.perf_counter() - started:.1f} s: {outcome[1]}"[:160]


@case
def cli_train_threshold_7(tmp):
    return cli(["train", "--quick", "--threshold", "7", "--out", str(tmp / "run")], "--threshold")


@case
def cli_evaluate_threshold_1_5(tmp):
    return cli(["evaluate", "--checkpoint", str(tmp / "m.pt"), "--threshold", "1.5"], "[0, 1)")


@case
def cli_lr_zero(tmp):
    return cli(quick_train(tmp / "run", "--lr", "0"), "lr must be")


@case
def cli_epochs_zero(tmp):
    return cli(quick_train(tmp / "run", "--epochs", "0"), "--epochs must be")


@case
def cli_missing_checkpoint(tmp):
    return cli(["evaluate", "--checkpoint", str(tmp / "none.pt")], "does not exist")


@case
def cli_disk_full_while_training(tmp):
    import unetlab.checkpoint
    unetlab.checkpoint.torch.save = disk_full
    outcome = cli(quick_train(tmp / "run"), "No space left")
    left = [p.name for p in (tmp / "run").iterdir()] if (tmp / "run").exists() else []
    return outcome if not left else ("unclear", f"left behind: {left}")


@case
def cli_disk_full_while_writing_figures(tmp):
    import matplotlib.figure
    matplotlib.figure.Figure.savefig = disk_full
    outcome = cli(["demo", "--quick", "--out", str(tmp / "run"), "--figures", str(tmp / "fig")], "No space left")
    left = [p.name for p in (tmp / "fig").iterdir()] if (tmp / "fig").exists() else []
    return outcome if not left else ("unclear", f"left behind: {left}")


@case
def results_json_with_nan(tmp):
    from unetlab.io import write_json  # what every command writes its JSON with
    write_json(tmp / "r.json", {"mean_dice": float("nan"), "dice": {"crack": float("inf")}})
    text = (tmp / "r.json").read_text()
    if "NaN" in text or "Infinity" in text:
        return "silently wrong", "bare NaN/Infinity in JSON"
    return "clear", "null, listed under undefined_values"


# ----------------------------------------------------------------------------------------------------------------
# Downloads


def _mt_zip(path: Path, extra: dict | None = None) -> Path:
    import cv2
    import numpy as np
    image = cv2.imencode(".jpg", np.full((16, 16), 100, np.uint8))[1].tobytes()
    mask = cv2.imencode(".png", np.zeros((16, 16), np.uint8))[1].tobytes()
    members = {"top/MT_Free/Imgs/a.jpg": image, "top/MT_Free/Imgs/a.png": mask, **(extra or {})}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@case
def download_zip_bomb(tmp):
    from unetlab import download_magnetic_tile
    archive = _mt_zip(tmp / "bomb.zip", {"top/pad.bin": b"\0" * 300_000_000})  # 300 MB in about 300 KB
    (tmp / "out").mkdir()
    outcome = refused(lambda: download_magnetic_tile(tmp / "out" / "mt", url=archive.as_uri(), sha256=None,
                                                     allow_unverified=True, progress=False), "zip bomb")
    return outcome if not list((tmp / "out").iterdir()) else ("unclear", "left files behind")


@case
def download_path_traversal(tmp):
    from unetlab import download_magnetic_tile
    archive = _mt_zip(tmp / "a.zip", {"top/../../evil.txt": b"x"})
    outcome = refused(lambda: download_magnetic_tile(tmp / "out" / "mt", url=archive.as_uri(), sha256=None,
                                                     allow_unverified=True, progress=False), "unsafe member")
    return outcome if not list(tmp.parent.glob("evil.txt")) else ("silently wrong", "wrote outside dest")


@case
def download_without_checksum(tmp):
    from unetlab import download_magnetic_tile
    archive = _mt_zip(tmp / "a.zip")
    return refused(lambda: download_magnetic_tile(tmp / "mt", url=archive.as_uri(), sha256=None, progress=False),
                   "needs the sha256")


@case
def download_checksum_mismatch(tmp):
    from unetlab import download_magnetic_tile
    archive = _mt_zip(tmp / "a.zip")
    return refused(lambda: download_magnetic_tile(tmp / "mt", url=archive.as_uri(), progress=False), "mismatch")


@case
def download_default_is_pinned(tmp):
    from unetlab.real import MT_ARCHIVE_SHA256, MT_ARCHIVE_URL, MT_COMMIT
    pinned = MT_COMMIT in MT_ARCHIVE_URL and "refs/heads" not in MT_ARCHIVE_URL and len(MT_ARCHIVE_SHA256) == 64
    return ("clear", f"commit {MT_COMMIT[:12]}, sha256 {MT_ARCHIVE_SHA256[:12]}") if pinned else (
        "silently wrong", MT_ARCHIVE_URL)


@case
def download_larger_than_max_bytes(tmp):
    from unetlab import download_magnetic_tile
    archive = _mt_zip(tmp / "a.zip", {"top/noise.bin": os.urandom(500_000)})
    return refused(lambda: download_magnetic_tile(tmp / "mt", url=archive.as_uri(), sha256=None,
                                                  allow_unverified=True, max_bytes=100_000, progress=False),
                   "larger than max_bytes")


# ----------------------------------------------------------------------------------------------------------------
# Runner


def run_one(name: str) -> None:
    """Child process: run one case in a fresh folder and print its JSON result on the last line."""
    os.environ["UNETLAB_QUICK"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    import warnings

    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            outcome, detail = CASES[name](Path(folder))
        except MemoryError as err:
            outcome, detail = "crash", f"MemoryError {err}"
        except Exception as err:  # noqa: BLE001
            outcome, detail = "unclear", f"probe saw {type(err).__name__}: {err}"[:160]
    print(json.dumps({"outcome": outcome, "detail": detail}))


def run_all(names: list[str], timeout: float) -> list[tuple[str, str, str]]:
    rows = []
    for name in names:
        try:
            done = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            rows.append((name, "crash", f"hung past {timeout:.0f} s"))
            continue
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode < 0:
            rows.append((name, "crash", f"killed by signal {-done.returncode}"))
        elif not last.startswith("{"):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append((name, "crash", f"exit {done.returncode}: {tail}"[:160]))
        else:
            result = json.loads(last)
            rows.append((name, result["outcome"], result["detail"]))
        print(f"  {name}: {rows[-1][1]}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None, help=f"some of: {', '.join(CASES)}")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a case counts as hung")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child)
        return
    names = args.cases or list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    start = time.perf_counter()
    rows = run_all(names, args.timeout)
    print("| case | outcome | detail |\n|---|---|---|")
    for name, outcome, detail in rows:
        print(f"| {name} | {outcome} | {detail.replace('|', '/')} |")
    totals = Counter(outcome for _, outcome, _ in rows)
    print(f"\n{len(rows)} cases in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{totals[o]} {o}" for o in OUTCOMES))


if __name__ == "__main__":
    main()
