"""Datasets: synthetic images made on the fly, image folders on disk, and the loaders the tutorial trains with.

Every dataset item is ``(image, mask)`` (or ``(image, mask, labels)`` when asked for labels):

- image: (1, H, W) float32 in [0, 1];
- mask: (1, H, W) float32, 1.0 where there is a defect, 0.0 elsewhere;
- labels: (H, W) int64 class ids (0 background, 1 scratch, 2 crack, 3 stain; see ``synth.CLASS_NAMES``).

Synthetic images are quantised to 8 bits, as a camera would deliver them, so a dataset written to disk with
:func:`write_dataset` and read back with :class:`DefectFolder` gives exactly the same tensors.

Real images (section "Real images" below): :class:`DefectFolder` also reads the original magnetic-tile layout,
:func:`download_magnetic_tile` fetches it, :func:`real_splits` makes a fixed fine-tune pool and test set, and
:class:`RandomCrops` cuts fixed-size training crops from images of any size. Real masks are binarised by one rule
(:func:`binarize_mask`): a mask whose maximum is 0 or 1 is read as 0/1 (defect where value > 0); any other mask
is a defect where value >= half its dtype's range (128 for 8-bit, 32768 for 16-bit), which keeps the inner half
of anti-aliased edges. Colour masks are an error.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import __version__
from .augment import AugmentConfig, augment
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

    With ``crop``, item ``i`` is a ``crop`` x ``crop`` window of sample ``i`` instead of the whole image. Most of
    a synthetic image is plain surface, so a window placed over a defect (with probability ``defect_share``)
    teaches as much as the whole image at a fraction of the cost: a 128 px window is a quarter of the pixels of a
    256 px image. The image behind item ``i`` is still fixed by ``(seed, start + i)``; where the window falls is
    drawn afresh from torch's random stream on every access, so each epoch sees new windows (reproducible when
    that stream is seeded, as :func:`unetlab.fit` does per epoch, for a given number of DataLoader workers).

    Args:
        n: number of samples.
        cfg: generator knobs (``None``: the defaults).
        seed: dataset seed.
        start: index of the first sample (splits use :data:`SPLIT_START` so they never overlap).
        return_labels: also return the (H, W) int64 class map.
        crop: side of the training window in px (at most the image side), or ``None`` for whole images.
        defect_share: with ``crop``, the probability in [0, 1] that the window contains a defect pixel (one drawn
            uniformly from the sample's defect pixels); otherwise it falls anywhere.
    """

    def __init__(self, n: int, cfg: DefectConfig | None = None, seed: int = 0, start: int = 0,
                 return_labels: bool = False, crop: int | None = None, defect_share: float = 2 / 3) -> None:
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"SyntheticDefects needs n >= 1 samples; got {n!r}")
        if not (isinstance(seed, int) and seed >= 0 and isinstance(start, int) and start >= 0):
            raise ValueError(f"SyntheticDefects needs non-negative int seed and start; got seed={seed!r}, "
                             f"start={start!r}")
        if cfg is not None and not isinstance(cfg, DefectConfig):
            raise ValueError(f"SyntheticDefects expects a DefectConfig (or None); got {type(cfg).__name__}")
        self.n, self.cfg, self.seed, self.start = n, cfg or DefectConfig(), seed, start
        whole_pixels = isinstance(crop, int) and not isinstance(crop, bool)
        if crop is not None and not (whole_pixels and 1 <= crop <= self.cfg.size):
            raise ValueError(f"SyntheticDefects crop must be None or an int in [1, {self.cfg.size}] (the image "
                             f"side); got {crop!r}")
        _check_share(defect_share, "SyntheticDefects")
        self.return_labels, self.crop, self.defect_share = return_labels, crop, float(defect_share)

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` as numpy, whole (never cropped): (H, W) uint8 image (8-bit quantised) and (H, W) uint8
        labels."""
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} samples")
        image, labels = make_sample(self.cfg, sample_rng(self.seed, self.start + i % self.n))
        return np.rint(image * 255).astype(np.uint8), labels

    def __getitem__(self, i: int):
        image_u8, labels = self.sample(i)
        if self.crop is not None:  # a new window every access: its place comes from torch's (seeded) stream
            rng = np.random.default_rng([self.seed, self.start + i % self.n, int(torch.randint(2**62, ()))])
            window = _crop_window(rng, labels > 0, self.crop, self.defect_share)
            image_u8, labels = image_u8[window], labels[window]
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


def read_mask(path: str | os.PathLike, threshold: int | str | None = None) -> np.ndarray:
    """A binary mask file as (H, W) bool.

    By default the mask must be binary: values {0, v} for one v > 0 (e.g. 0/255 or 0/1); anything else is an
    error, because a silently binarised soft or JPEG-damaged mask would teach the wrong boundary. Pass
    ``threshold`` to binarise explicitly: an int means defect where value > threshold; ``"auto"`` applies the
    documented rule of :func:`binarize_mask` (what real masks with anti-aliased edges need).
    """
    array = _read(path)
    if array.ndim == 3:
        raise ValueError(f"{path}: a mask must be single-channel; got {array.shape[2]} channels")
    if threshold == "auto":
        return binarize_mask(array)
    if threshold is not None:
        return array > threshold
    values = np.unique(array)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise ValueError(f"{path}: expected a binary mask (0 and one other value); found {len(values)} values "
                         f"({shown}). Pass mask_threshold='auto' (see binarize_mask) or an int to binarise it.")
    return array > 0


def binarize_mask(array: np.ndarray) -> np.ndarray:
    """The documented rule for real masks: (H, W) integer or bool array -> (H, W) bool, True on defects.

    - maximum <= 1: the mask is encoded 0/1, so defect where ``value > 0``;
    - otherwise: defect where ``value >= half the dtype's range`` (128 for uint8, 32768 for uint16). Masks drawn
      as 0/255 with anti-aliased edges keep the pixels that are at least half covered.

    Colour (H, W, C) masks, float masks and negative values are a ValueError: they have no unambiguous reading.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"expected a single-channel (H, W) mask; got shape {array.shape}"
                         + (" (a colour mask: save it as one gray channel)" if array.ndim == 3 else ""))
    if array.dtype == bool:
        return array.copy()
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"expected an integer mask (uint8, uint16 or 0/1); got dtype {array.dtype}")
    if array.size == 0 or array.max() <= 1:
        if array.size and array.min() < 0:
            raise ValueError(f"mask values must be >= 0; found {array.min()}")
        return array > 0
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"a mask with values above 1 must be uint8 or uint16 (its half range is the threshold); "
                         f"got dtype {array.dtype} with maximum {array.max()}")
    return array >= (np.iinfo(array.dtype).max + 1) // 2


def _read(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"{path}: not a readable image (corrupt or unsupported format)")
    return array


class DefectFolder(Dataset):
    """Image/mask pairs from a folder, in either of two layouts (detected automatically):

    - ``root/images/<stem>.*`` and ``root/masks/<stem>.*`` (same stem, any common image format), as written by
      :func:`write_dataset` or the local real-data copy;
    - the original magnetic-tile layout, ``root/MT_<Class>/Imgs/<stem>.jpg`` beside its mask ``<stem>.png``;
      item stems become ``<Class>__<stem>`` so they stay unique across classes.

    Images may have any size, 8 or 16 bits; colour is converted to gray (with a warning). Items are
    ``(image, mask)`` tensors as in the module docstring; with ``return_labels=True`` the folder must also hold
    ``labels/`` (class ids), as a synthetic one does.

    Masks: ``mask_threshold=None`` (the default) requires strictly binary masks and names any file that is not;
    an int binarises as value > threshold; ``"auto"`` applies :func:`binarize_mask`: a 0/1 mask is read as is,
    any other as value >= half the dtype range (128 for 8-bit, 32768 for 16-bit). Real masks with anti-aliased
    edges, such as the original magnetic-tile ones, need ``"auto"``.

    Attributes:
        stems: item names, sorted. image_paths, mask_paths: their files.
        classes: one class name per item: the ``defect_class`` column of ``root/manifest.csv`` (columns
            ``stem,defect_class``) when it lists the stem, else the ``MT_<Class>`` folder, else the stem's
            prefix before ``__`` (``Crack__x`` -> ``Crack``), else ``"defect"``.

    Args:
        root: the dataset folder.
        mask_threshold: ``None``, an int >= 0, or ``"auto"`` (see above).
        return_labels: also return (H, W) int64 class labels from ``root/labels/``.
    """

    def __init__(self, root: str | os.PathLike, mask_threshold: int | str | None = None,
                 return_labels: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data folder not found: {self.root}")
        valid = mask_threshold in (None, "auto") or (isinstance(mask_threshold, (int, np.integer))
                                                     and not isinstance(mask_threshold, bool) and mask_threshold >= 0)
        if not valid:
            raise ValueError(f"mask_threshold must be None, 'auto' or an int >= 0; got {mask_threshold!r}")
        mt_folders = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("MT_"))
        if mt_folders and not (self.root / "images").is_dir():
            if return_labels:
                raise ValueError(f"{self.root} is in the magnetic-tile layout, which has no labels/ folder")
            images, masks, folder_class = _mt_pairs(mt_folders)
            where = f"in {self.root}/MT_*/Imgs have no <stem>.png mask beside them"
        else:
            for sub in ("images", "masks") + (("labels",) if return_labels else ()):
                if not (self.root / sub).is_dir():
                    raise FileNotFoundError(f"{self.root} has no {sub}/ folder; expected {self.root}/images/ and "
                                            f"{self.root}/masks/ with matching file names (or MT_<Class>/Imgs/ "
                                            f"folders)")
            images = _by_stem(self.root / "images")
            masks = _by_stem(self.root / "masks")
            folder_class = {}
            where = f"in {self.root / 'images'} have no mask in {self.root / 'masks'}"
        if not images:
            raise ValueError(f"{self.root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        missing = sorted(set(images) - set(masks))
        if missing:
            raise ValueError(f"{len(missing)} image(s) {where}: {', '.join(missing[:5])}"
                             f"{', ...' if len(missing) > 5 else ''}")
        self.stems = sorted(images)
        self.image_paths = [images[s] for s in self.stems]
        self.mask_paths = [masks[s] for s in self.stems]
        manifest = _manifest_classes(self.root / "manifest.csv")
        self.classes = [manifest.get(s) or folder_class.get(s) or _stem_class(s) for s in self.stems]
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

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` as numpy: (H, W) float32 image in [0, 1] and (H, W) bool mask (checked to match)."""
        image = read_image(self.image_paths[i])
        mask = read_mask(self.mask_paths[i], self.mask_threshold)
        if mask.shape != image.shape:
            raise ValueError(f"mask {self.mask_paths[i]} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                             f"{self.image_paths[i]} is {image.shape[1]}x{image.shape[0]}")
        return image, mask

    def __getitem__(self, i: int):
        image, mask = self.arrays(i)
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


def _mt_pairs(folders: list[Path]) -> tuple[dict[str, Path], dict[str, Path], dict[str, str]]:
    """Images, masks and classes by stem ``<Class>__<stem>`` from ``MT_<Class>/Imgs/`` (.png = mask)."""
    images, masks, classes = {}, {}, {}
    for folder in folders:
        if not (folder / "Imgs").is_dir():
            raise FileNotFoundError(f"{folder} has no Imgs/ folder; expected {folder}/Imgs/<stem>.jpg images "
                                    f"beside <stem>.png masks")
        name = folder.name[len("MT_"):]
        for path in (folder / "Imgs").iterdir():
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                key = f"{name}__{path.stem}"
                (masks if path.suffix.lower() == ".png" else images)[key] = path
                classes[key] = name
    return images, masks, classes


def _manifest_classes(path: Path) -> dict[str, str]:
    """stem -> defect_class from a manifest.csv with those columns ({} when absent)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return {r["stem"]: r["defect_class"] for r in rows if r.get("stem") and r.get("defect_class")}


def _stem_class(stem: str) -> str:
    prefix, sep, _ = stem.partition("__")
    return prefix if sep and prefix else "defect"


# ----------------------------------------------------------------------------------------------------------------
# Loaders


def make_loaders(cfg: DefectConfig | None = None, sizes: RunSizes | None = None, seed: int = 0, *,
                 num_workers: int = 0, return_labels: bool = True) -> dict[str, DataLoader]:
    """Train / val / test DataLoaders over synthetic data, with disjoint samples (see :data:`SPLIT_START`).

    ``sizes`` defaults to :func:`unetlab.run_sizes` (quick in CI). Training batches are shuffled by a seeded
    ``torch.Generator``, so a run is repeatable. ``num_workers=0`` suits notebooks (generation costs ~1 ms a
    sample); raise it freely, the samples do not change. With ``sizes.crop`` set, the training set yields
    windows of that side, most of them over a defect (see :class:`SyntheticDefects`); validation and test
    always score whole images.
    """
    sizes = sizes or run_sizes()
    cfg = cfg or DefectConfig(size=sizes.image_size)  # a given cfg keeps its own size
    if sizes.crop is not None and sizes.crop > cfg.size:
        raise ValueError(f"make_loaders: sizes.crop ({sizes.crop} px) is larger than the images ({cfg.size} px)")
    loaders = {}
    for split, n in (("train", sizes.n_train), ("val", sizes.n_val), ("test", sizes.n_test)):
        ds = SyntheticDefects(n, cfg, seed, SPLIT_START[split], return_labels=return_labels,
                              crop=sizes.crop if split == "train" else None)
        shuffle = split == "train"
        loaders[split] = DataLoader(ds, batch_size=sizes.batch_size, shuffle=shuffle, num_workers=num_workers,
                                    generator=torch.Generator().manual_seed(seed) if shuffle else None,
                                    persistent_workers=num_workers > 0)
    return loaders


# ----------------------------------------------------------------------------------------------------------------
# Real images: where they are, how to download them, fixed splits and training crops

REAL_DATA_ENV = "UNETLAB_REAL_DATA"
REAL_DATA_HINT = (
    "No real images found. Download the magnetic-tile dataset once (about 53 MB) with "
    "unetlab.download_magnetic_tile(\"data/magnetic-tile\"), then set UNETLAB_REAL_DATA=data/magnetic-tile "
    "(or pass the folder as an argument). The dataset has no licence file: research use, cite Huang et al. 2020, "
    "\"Surface defect saliency of magnetic tile\", The Visual Computer 36, 85-96."
)
MT_ARCHIVE_URL = "https://github.com/abin24/Magnetic-tile-defect-datasets./archive/refs/heads/master.zip"


def real_data_root(path: str | os.PathLike | None = None) -> Path | None:
    """The real-data folder: ``path`` if given, else the environment variable ``UNETLAB_REAL_DATA``.

    Returns the folder as an absolute path, or ``None`` when neither is set or the folder does not exist (print
    :data:`REAL_DATA_HINT` then).
    """
    value = os.environ.get(REAL_DATA_ENV, "") if path is None else path
    if not str(value).strip():
        return None
    root = Path(value).expanduser().resolve()
    return root if root.is_dir() else None


def download_magnetic_tile(dest: str | os.PathLike, url: str = MT_ARCHIVE_URL, sha256: str | None = None,
                           progress: bool = True) -> Path:
    """Download the public magnetic-tile repository's zip archive, verify it, and unpack it to ``dest``.

    Before anything is unpacked the archive must pass: the sha256 (when given), the zip CRC check of every
    member, safe member names (no absolute paths, no ``..``), and the expected ``MT_<Class>/Imgs/`` folders with
    ``<stem>.jpg`` images beside ``<stem>.png`` masks (a single top folder, as in GitHub archives, is dropped).
    The archive is streamed to a temporary file beside ``dest`` and unpacked into a temporary folder there, which
    is renamed to ``dest`` in one step: on any failure nothing is left behind. ``dest`` may be missing or empty;
    if it already holds a readable dataset it is returned without downloading. ``url`` may be a ``file://`` URL.

    Returns:
        ``dest``, the folder holding the ``MT_*`` folders, ready for ``DefectFolder(dest, mask_threshold="auto")``.
    """
    dest = Path(dest).expanduser()
    if _holds_dataset(dest):
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and holds no dataset; remove it or choose another folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".zip.part", dir=dest.parent)
    archive, unpacked = Path(name), None
    try:
        with os.fdopen(handle, "wb") as file:
            digest = _fetch(url, file, progress, desc=f"downloading {dest.name}")
        if sha256 is not None and digest != sha256.strip().lower():
            raise ValueError(f"{url}: sha256 mismatch: expected {sha256}, got {digest} (damaged or changed archive)")
        try:
            with zipfile.ZipFile(archive) as zf:
                top = _check_archive(zf, url)
                unpacked = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
                zf.extractall(unpacked)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise ValueError(f"{url}: not a valid zip archive ({e})") from e
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.rename(unpacked / top, dest)
    finally:  # on success too: the archive and the rest of the temporary folder go
        archive.unlink(missing_ok=True)
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)
    return dest


def _holds_dataset(root: Path) -> bool:
    try:
        return len(DefectFolder(root)) > 0
    except (FileNotFoundError, ValueError, NotADirectoryError):
        return False


def _fetch(url: str, file, progress: bool, desc: str) -> str:
    """Stream ``url`` into ``file`` with a progress bar; returns the sha256 hex digest of the bytes."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    file.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.URLError as e:
        raise OSError(f"could not download {url}: {e.reason}") from e
    return digest.hexdigest()


def _check_archive(zf: zipfile.ZipFile, url: str) -> str:
    """Verify names, CRCs and the MT_<Class>/Imgs/ layout; returns the top folder to unpack from ('' for none)."""
    names = zf.namelist()
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise ValueError(f"{url}: unsafe member name {name!r} in the archive (absolute or with '..'); "
                             f"nothing unpacked")
    bad = zf.testzip()
    if bad is not None:
        raise ValueError(f"{url}: CRC check failed for {bad!r}: the archive is corrupt; nothing unpacked")
    tops = {name.split("/", 1)[0] for name in names}
    top = tops.pop() if len(tops) == 1 and all("/" in n for n in names) else ""
    if top.startswith("MT_"):
        top = ""
    jpg, png = set(), set()
    for name in names:
        parts = PurePosixPath(name[len(top) + 1 if top else 0:]).parts
        if len(parts) == 3 and parts[0].startswith("MT_") and parts[1] == "Imgs":
            stem, suffix = os.path.splitext(parts[2])
            {".jpg": jpg, ".png": png}.get(suffix.lower(), set()).add((parts[0], stem))
    if not jpg & png:
        raise ValueError(f"{url}: the archive has no MT_<Class>/Imgs/ folder with <stem>.jpg images beside "
                         f"<stem>.png masks; is it the magnetic-tile repository?")
    return top


def real_splits(classes: Sequence[str], test_fraction: float = 0.5, seed: int = 0
                ) -> tuple[list[int], list[int]]:
    """Fixed, stratified split of a real dataset into a fine-tune pool and a test set that is never trained on.

    Each class's indices are shuffled by ``seed``; ``round(n_class * test_fraction)`` of them go to the test
    set, the rest to the pool. The pool is ordered round-robin across classes (sorted by name), so ``pool[:k]``
    is as class-balanced as possible for every k, and ``pool[:5]`` is a subset of ``pool[:10]``.

    Args:
        classes: one class name per item (e.g. ``DefectFolder.classes``).
        test_fraction: share of each class held out for testing, in (0, 1).
        seed: non-negative int; the same seed gives the same split.

    Returns:
        ``(pool, test)``: disjoint lists of item indices; ``test`` is sorted.
    """
    if isinstance(classes, str) or len(classes) == 0:
        raise ValueError(f"real_splits needs a non-empty sequence of class names; got {classes!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    rng = np.random.default_rng(seed)
    pools, test = [], []
    for name in sorted(set(classes)):
        members = rng.permutation([i for i, c in enumerate(classes) if c == name]).tolist()
        n_test = int(np.floor(len(members) * test_fraction + 0.5))
        test += members[:n_test]
        pools.append(members[n_test:])
    pool = [p[r] for r in range(max(map(len, pools))) for p in pools if r < len(p)]
    return pool, sorted(test)


class RandomCrops(Dataset):
    """``n`` random ``size`` x ``size`` crops of real images, for training; item ``i`` depends on (seed, i) only.

    Item ``i`` picks one image uniformly, pads it by mirror reflection where it is smaller than ``size``, takes a
    random crop and, when ``augment`` is given, applies :func:`unetlab.augment.augment` to image and mask
    together. The result does not depend on the number of DataLoader workers or the order of access.

    Args:
        images: (H, W) float32 images in [0, 1]; sizes may differ.
        masks: (H, W) bool masks (or 0/1 numbers), one per image, same shape as it.
        n: number of crops (the dataset's length, e.g. steps per epoch x batch size).
        size: crop side in px.
        seed: dataset seed.
        augment: an :class:`AugmentConfig`, or ``None`` for plain crops.
        defect_share: probability in [0, 1] that a crop is placed over a defect (a random defect pixel of the
            chosen image lands at a random spot of the crop; images without defects get a uniform crop). Real
            defects are small and rare: with uniform crops most batches would teach "nothing here" (foreground
            oversampling, as nnU-Net does with a third of its patches).

    Items: ``(image (1, size, size) float32, mask (1, size, size) float32 in {0, 1})``.
    """

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], n: int, size: int = 256,
                 seed: int = 0, augment: AugmentConfig | None = None, defect_share: float = 0.0) -> None:
        for name, value in (("n", n), ("size", size)):
            if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"RandomCrops needs {name} >= 1 (an int); got {value!r}")
        if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
            raise ValueError(f"RandomCrops needs a non-negative int seed; got {seed!r}")
        _check_share(defect_share, "RandomCrops")
        if augment is not None and not isinstance(augment, AugmentConfig):
            raise ValueError(f"augment must be an AugmentConfig or None; got {type(augment).__name__}")
        if len(images) == 0 or len(images) != len(masks):
            raise ValueError(f"RandomCrops needs as many masks as images, at least one; got {len(images)} images "
                             f"and {len(masks)} masks")
        self.images, self.masks = [], []
        for k, (image, mask) in enumerate(zip(images, masks)):
            image, mask = np.asarray(image), np.asarray(mask)
            if image.ndim != 2 or mask.shape != image.shape:
                raise ValueError(f"image {k}: expected a grayscale (H, W) image and a mask of the same shape; got "
                                 f"{image.shape} and {mask.shape}")
            if image.size == 0 or not (image.min() >= 0 and image.max() <= 1):
                raise ValueError(f"image {k}: expected values in [0, 1] (float32); got {image.dtype} with range "
                                 f"[{image.min() if image.size else None}, {image.max() if image.size else None}]")
            if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
                raise ValueError(f"mask {k}: expected bool or 0/1 values; use binarize_mask first")
            self.images.append(image.astype(np.float32, copy=False))
            self.masks.append(mask.astype(bool, copy=False))
        self.n, self.size, self.seed, self.augment = int(n), int(size), int(seed), augment
        self.defect_share = float(defect_share)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} crops")
        rng = sample_rng(self.seed, i % self.n)
        k = int(rng.integers(len(self.images)))
        image, mask = _pad_to(self.images[k], self.size), _pad_to(self.masks[k], self.size)
        window = _crop_window(rng, mask, self.size, self.defect_share)
        image, mask = image[window], mask[window]
        if self.augment is not None:  # the module-level augment() function, with this dataset's config
            image, mask = augment(np.ascontiguousarray(image), np.ascontiguousarray(mask), self.augment, rng)
        return (torch.from_numpy(np.ascontiguousarray(image, np.float32)).unsqueeze(0),
                torch.from_numpy(mask.astype(np.float32)).unsqueeze(0))


def _check_share(defect_share, caller: str) -> None:
    if isinstance(defect_share, bool) or not isinstance(defect_share, (int, float)) or not 0 <= defect_share <= 1:
        raise ValueError(f"{caller} needs defect_share in [0, 1]; got {defect_share!r}")


def _crop_window(rng: np.random.Generator, defects: np.ndarray, size: int,
                 defect_share: float) -> tuple[slice, slice]:
    """Row and column slices of a random ``size`` x ``size`` window of an (H, W) image (H, W >= size).

    With probability ``defect_share`` the window contains a defect pixel: one drawn uniformly from the True
    pixels of the (H, W) bool ``defects``, put at a random place in the window. Otherwise (or when ``defects``
    holds none) the window is uniform over the image.
    """
    h, w = defects.shape
    where = np.flatnonzero(defects) if defect_share > 0 and rng.random() < defect_share else ()
    if len(where):
        yy, xx = divmod(int(where[rng.integers(len(where))]), w)
        y = int(rng.integers(max(0, yy - size + 1), min(yy, h - size) + 1))
        x = int(rng.integers(max(0, xx - size + 1), min(xx, w - size) + 1))
    else:
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return slice(y, y + size), slice(x, x + size)


def _pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Mirror-pad (H, W) ``array`` to at least ``size`` x ``size``, the extra split evenly on both sides."""
    dh, dw = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if dh == dw == 0:
        return array
    return np.pad(array, ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)), mode="reflect")
