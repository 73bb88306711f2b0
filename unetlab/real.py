"""Real images: where they are, how to download them, fixed splits, training crops, and the set held in memory.

The tutorial's real data are the public magnetic-tile images (Huang et al. 2020; not shipped with unetlab, see
:data:`REAL_DATA_HINT`). :func:`real_data_root` finds them, :func:`download_magnetic_tile` fetches them,
:class:`RealSet` holds them in memory (read by :class:`unetlab.folders.DefectFolder`, which also reads the
original magnetic-tile layout), :func:`real_splits` makes a fixed fine-tune pool and test set, and
:class:`RandomCrops` cuts fixed-size training crops from images of any size.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .augment import AugmentConfig, augment
from .checks import gray_image, is_int
from .data import check_share, crop_window, to_item
from .folders import DefectFolder
from .synth import sample_rng

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


@dataclass
class RealSet:
    """Real images held in memory, with their masks and classes (a few hundred images: tens of MB).

    Attributes:
        images: list of (H, W) float32 arrays in [0, 1]; sizes may differ between images.
        masks: list of (H, W) bool arrays, True where there is a defect.
        classes: one class name per image (e.g. "Crack"; images without defects have their own, e.g. "Free").
        stems: file stems, for captions.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    classes: list[str]
    stems: list[str]

    @classmethod
    def load(cls, root: str | os.PathLike, progress: bool = True) -> RealSet:
        """Read every image/mask pair of ``root`` (any layout :class:`unetlab.DefectFolder` reads), binarising
        masks with its documented ``"auto"`` rule."""
        folder = DefectFolder(root, mask_threshold="auto")
        images, masks = [], []
        for i in tqdm(range(len(folder)), desc="reading real images", unit="image", disable=not progress):
            image, mask = folder.arrays(i)
            images.append(image)
            masks.append(mask)
        return cls(images, masks, list(folder.classes), list(folder.stems))

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> RealSet:
        """The images at ``indices``, in that order."""
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"RealSet.subset got indices outside [0, {len(self)}): {bad[:5]}")
        return RealSet([self.images[i] for i in indices], [self.masks[i] for i in indices],
                       [self.classes[i] for i in indices], [self.stems[i] for i in indices])


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
    if not (is_int(seed) and seed >= 0):
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
        images: (H, W) float images in [0, 1] (not uint8: see :mod:`unetlab.checks`); sizes may differ.
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
            if not (is_int(value) and value >= 1):
                raise ValueError(f"RandomCrops needs {name} >= 1 (an int); got {value!r}")
        if not (is_int(seed) and seed >= 0):
            raise ValueError(f"RandomCrops needs a non-negative int seed; got {seed!r}")
        check_share(defect_share, "RandomCrops")
        if augment is not None and not isinstance(augment, AugmentConfig):
            raise ValueError(f"augment must be an AugmentConfig or None; got {type(augment).__name__}")
        if len(images) == 0 or len(images) != len(masks):
            raise ValueError(f"RandomCrops needs as many masks as images, at least one; got {len(images)} images "
                             f"and {len(masks)} masks")
        self.images, self.masks = [], []
        for k, (image, mask) in enumerate(zip(images, masks)):
            image, mask = gray_image(image, f"image {k}"), np.asarray(mask)
            if mask.shape != image.shape:
                raise ValueError(f"image {k}: expected a grayscale (H, W) image and a mask of the same shape; got "
                                 f"{image.shape} and {mask.shape}")
            if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
                raise ValueError(f"mask {k}: expected bool or 0/1 values; use binarize_mask first")
            self.images.append(image)
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
        window = crop_window(rng, mask, self.size, self.defect_share)
        image, mask = image[window], mask[window]
        if self.augment is not None:  # the module-level augment() function, with this dataset's config
            image, mask = augment(np.ascontiguousarray(image), np.ascontiguousarray(mask), self.augment, rng)
        return to_item(image, mask)


def _pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Mirror-pad (H, W) ``array`` to at least ``size`` x ``size``, the extra split evenly on both sides."""
    dh, dw = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if dh == dw == 0:
        return array
    return np.pad(array, ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)), mode="reflect")
