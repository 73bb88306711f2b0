"""Datasets: synthetic images made on the fly, image folders on disk, and the loaders the tutorial trains with.

Every dataset item is ``(image, mask)`` (or ``(image, mask, labels)`` when asked for labels):

- image: (1, H, W) float32 in [0, 1];
- mask: (1, H, W) float32, 1.0 where there is a defect, 0.0 elsewhere;
- labels: (H, W) int64 class ids (0 background, 1 scratch, 2 crack, 3 stain; see ``synth.CLASS_NAMES``).

Synthetic images are quantised to 8 bits, as a camera would deliver them, so a dataset written to disk with
:func:`write_dataset` and read back with :class:`DefectFolder` gives exactly the same tensors.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import __version__
from .config import RunSizes, run_sizes
from .synth import CLASS_NAMES, DefectConfig, make_sample, sample_rng

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Where each split's sample indices start: the test set can never overlap training (up to a million images).
SPLIT_START = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def _to_tensors(image_u8: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.from_numpy(image_u8).float().div_(255).unsqueeze(0)
    return image, torch.from_numpy((mask > 0).astype(np.float32)).unsqueeze(0)


class SyntheticDefects(Dataset):
    """``n`` synthetic samples generated on the fly; item ``i`` depends only on ``(seed, start + i)``.

    The result is identical whatever the number of DataLoader workers or the order of access, and nothing is
    stored: a sample costs about a millisecond to make, far less than a training step.

    Args:
        n: number of samples.
        cfg: generator knobs (``None``: the defaults).
        seed: dataset seed.
        start: index of the first sample (splits use :data:`SPLIT_START` so they never overlap).
        return_labels: also return the (H, W) int64 class map.
    """

    def __init__(self, n: int, cfg: DefectConfig | None = None, seed: int = 0, start: int = 0,
                 return_labels: bool = False) -> None:
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"SyntheticDefects needs n >= 1 samples; got {n!r}")
        if not (isinstance(seed, int) and seed >= 0 and isinstance(start, int) and start >= 0):
            raise ValueError(f"SyntheticDefects needs non-negative int seed and start; got seed={seed!r}, "
                             f"start={start!r}")
        if cfg is not None and not isinstance(cfg, DefectConfig):
            raise ValueError(f"SyntheticDefects expects a DefectConfig (or None); got {type(cfg).__name__}")
        self.n, self.cfg, self.seed, self.start = n, cfg or DefectConfig(), seed, start
        self.return_labels = return_labels

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` as numpy: (H, W) uint8 image (8-bit quantised) and (H, W) uint8 labels."""
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} samples")
        image, labels = make_sample(self.cfg, sample_rng(self.seed, self.start + i % self.n))
        return np.rint(image * 255).astype(np.uint8), labels

    def __getitem__(self, i: int):
        image_u8, labels = self.sample(i)
        image, mask = _to_tensors(image_u8, labels)
        if self.return_labels:
            return image, mask, torch.from_numpy(labels.astype(np.int64))
        return image, mask


# ----------------------------------------------------------------------------------------------------------------
# Writing a dataset to disk


def write_dataset(out: str | os.PathLike, n: int, cfg: DefectConfig | None = None, seed: int = 0, *,
                  start: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``n`` synthetic samples as 8-bit PNGs: ``images/``, ``masks/`` (0/255), ``labels/`` (class ids).

    ``dataset.json`` records the config, seed, start index, counts per class and the unetlab version. The folder
    is built beside ``out`` and renamed into place only when complete, so an interrupted run leaves no
    half-written dataset. An existing non-empty ``out`` is an error unless ``overwrite=True`` (then it is
    replaced whole, never mixed with the new files).

    Returns:
        The dataset folder.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out} already exists and is not empty; choose another folder or pass "
                                  f"overwrite=True (--overwrite) to replace it")
    ds = SyntheticDefects(n, cfg, seed, start)  # validates n, cfg, seed
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for sub in ("images", "masks", "labels"):
            (tmp / sub).mkdir()
        class_pixels = np.zeros(len(CLASS_NAMES), np.int64)
        defect_free = 0
        width = max(5, len(str(n - 1)))
        for i in tqdm(range(n), desc=f"writing {out.name}", disable=not progress, unit="img"):
            image, labels = ds.sample(i)
            name = f"{i:0{width}d}.png"
            for sub, array in (("images", image), ("masks", (labels > 0).astype(np.uint8) * 255),
                               ("labels", labels)):
                if not cv2.imwrite(str(tmp / sub / name), array):
                    raise OSError(f"could not write {tmp / sub / name}")
            class_pixels += np.bincount(labels.ravel(), minlength=len(CLASS_NAMES))
            defect_free += not labels.any()
        meta = {"unetlab_version": __version__, "n": n, "seed": seed, "start": start,
                "config": ds.cfg.to_dict(), "class_names": list(CLASS_NAMES),
                "class_pixels": dict(zip(CLASS_NAMES, class_pixels.tolist())), "defect_free_images": defect_free}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ----------------------------------------------------------------------------------------------------------------
# Reading images and masks from a folder


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A grayscale image file as (H, W) float32 in [0, 1].

    8-bit and 16-bit files are scaled by their full range. Colour images are converted to gray with OpenCV's
    luma weights and a warning says so.
    """
    array = _read(path)
    if array.ndim == 3:
        warnings.warn(f"{path}: colour image ({array.shape[2]} channels) converted to grayscale", stacklevel=2)
        code = cv2.COLOR_BGRA2GRAY if array.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        array = cv2.cvtColor(array, code)
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype)
    if scale is None:
        raise ValueError(f"{path}: expected an 8-bit or 16-bit image; got dtype {array.dtype}")
    return array.astype(np.float32) / np.float32(scale)


def read_mask(path: str | os.PathLike, threshold: int | None = None) -> np.ndarray:
    """A binary mask file as (H, W) bool.

    By default the mask must be binary: values {0, v} for one v > 0 (e.g. 0/255 or 0/1); anything else is an
    error, because a silently binarised soft or JPEG-damaged mask would teach the wrong boundary. Pass
    ``threshold`` to binarise explicitly: defect where value > threshold.
    """
    array = _read(path)
    if array.ndim == 3:
        raise ValueError(f"{path}: a mask must be single-channel; got {array.shape[2]} channels")
    if threshold is not None:
        return array > threshold
    values = np.unique(array)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise ValueError(f"{path}: expected a binary mask (0 and one other value); found {len(values)} values "
                         f"({shown}). Pass mask_threshold=... to binarise it explicitly.")
    return array > 0


def _read(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"{path}: not a readable image (corrupt or unsupported format)")
    return array


class DefectFolder(Dataset):
    """Image/mask pairs from ``root/images/`` and ``root/masks/`` (same file stem, any common image format).

    Works for a folder written by :func:`write_dataset` and for real images: any size, 8 or 16 bit, colour
    converted to gray (with a warning). Items are ``(image, mask)`` tensors as in the module docstring; with
    ``return_labels=True`` the folder must also hold ``labels/`` (class ids), as a synthetic one does.

    Args:
        root: the dataset folder.
        mask_threshold: ``None`` requires binary masks; an int binarises them as value > threshold.
        return_labels: also return (H, W) int64 class labels from ``root/labels/``.
    """

    def __init__(self, root: str | os.PathLike, mask_threshold: int | None = None,
                 return_labels: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data folder not found: {self.root}")
        for sub in ("images", "masks") + (("labels",) if return_labels else ()):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(f"{self.root} has no {sub}/ folder; expected {self.root}/images/ and "
                                        f"{self.root}/masks/ with matching file names")
        images = _by_stem(self.root / "images")
        masks = _by_stem(self.root / "masks")
        if not images:
            raise ValueError(f"{self.root / 'images'} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        missing = sorted(set(images) - set(masks))
        if missing:
            raise ValueError(f"{len(missing)} image(s) in {self.root / 'images'} have no mask in "
                             f"{self.root / 'masks'}: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
        self.stems = sorted(images)
        self.image_paths = [images[s] for s in self.stems]
        self.mask_paths = [masks[s] for s in self.stems]
        self.label_paths = None
        if return_labels:
            labels = _by_stem(self.root / "labels")
            absent = [s for s in self.stems if s not in labels]
            if absent:
                raise ValueError(f"{len(absent)} image(s) have no labels in {self.root / 'labels'}: "
                                 f"{', '.join(absent[:5])}")
            self.label_paths = [labels[s] for s in self.stems]
        self.mask_threshold = mask_threshold

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int):
        image = read_image(self.image_paths[i])
        mask = read_mask(self.mask_paths[i], self.mask_threshold)
        if mask.shape != image.shape:
            raise ValueError(f"mask {self.mask_paths[i]} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                             f"{self.image_paths[i]} is {image.shape[1]}x{image.shape[0]}")
        image_t = torch.from_numpy(image).unsqueeze(0)
        mask_t = torch.from_numpy(mask.astype(np.float32)).unsqueeze(0)
        if self.label_paths is None:
            return image_t, mask_t
        labels = _read(self.label_paths[i])
        if labels.shape != image.shape:
            raise ValueError(f"labels {self.label_paths[i]} do not match the size of {self.image_paths[i]}")
        return image_t, mask_t, torch.from_numpy(labels.astype(np.int64))


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


# ----------------------------------------------------------------------------------------------------------------
# Loaders


def make_loaders(cfg: DefectConfig | None = None, sizes: RunSizes | None = None, seed: int = 0, *,
                 num_workers: int = 0, return_labels: bool = True) -> dict[str, DataLoader]:
    """Train / val / test DataLoaders over synthetic data, with disjoint samples (see :data:`SPLIT_START`).

    ``sizes`` defaults to :func:`unetlab.run_sizes` (quick in CI). Training batches are shuffled by a seeded
    ``torch.Generator``, so a run is repeatable. ``num_workers=0`` suits notebooks (generation costs ~1 ms a
    sample); raise it freely, the samples do not change.
    """
    sizes = sizes or run_sizes()
    cfg = cfg or DefectConfig(size=sizes.image_size)  # a given cfg keeps its own size
    loaders = {}
    for split, n in (("train", sizes.n_train), ("val", sizes.n_val), ("test", sizes.n_test)):
        ds = SyntheticDefects(n, cfg, seed, SPLIT_START[split], return_labels=return_labels)
        shuffle = split == "train"
        loaders[split] = DataLoader(ds, batch_size=sizes.batch_size, shuffle=shuffle, num_workers=num_workers,
                                    generator=torch.Generator().manual_seed(seed) if shuffle else None,
                                    persistent_workers=num_workers > 0)
    return loaders
