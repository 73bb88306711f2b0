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
from .folders import IMAGE_SUFFIXES, DefectFolder, one_colour_warning, read_image
from .io import new_folder_beside, replace_folder
from .synth import Backgrounds, sample_rng

REAL_DATA_ENV = "UNETLAB_REAL_DATA"
REAL_DATA_HINT = (
    "No real images found. Download the magnetic-tile dataset once (about 53 MB) with "
    "unetlab.download_magnetic_tile(\"data/magnetic-tile\"), then set UNETLAB_REAL_DATA=data/magnetic-tile "
    "(or pass the folder as an argument). The dataset has no licence file: research use, cite Huang et al. 2020, "
    "\"Surface defect saliency of magnetic tile\", The Visual Computer 36, 85-96."
)
# What download_magnetic_tile fetches by default: one commit of the public repository, not a moving branch (its
# owner could change the images we test on), and the sha256 of its zip. The commit is the snapshot HEAD the local
# copy was made from (cc4eb53, 2020-05-09, ../shared/realdata/magnetic-tile/README.md); its full hash and the
# archive's sha256 are as another project pinned them (NVIDIA's AnomalyGen prepare_magnetic_tile_defect.py) and
# were not downloaded and checked here (no network on the machine that wrote this). GitHub does not promise
# byte-stable archives: a mismatch stops the download with a clear error and unpacks nothing.
MT_COMMIT = "cc4eb530b57b9cb7225bf76023873043ffd50655"
MT_ARCHIVE_URL = f"https://github.com/abin24/Magnetic-tile-defect-datasets./archive/{MT_COMMIT}.zip"
MT_ARCHIVE_SHA256 = "592b050953d1de4ffa538b93b6b91aee7268d8e59b73d4d9c92cfce187d7ce66"
# The most a download may fetch, and unpack, in bytes: the dataset is 53 MB, so 256 MiB leaves room and stops a
# zip bomb (a 1 MB archive that unpacks to 1 GiB) long before the disk is full.
MT_MAX_BYTES = 256 * 2**20


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


def download_magnetic_tile(dest: str | os.PathLike, url: str = MT_ARCHIVE_URL, sha256: str | None = MT_ARCHIVE_SHA256,
                           progress: bool = True, *, allow_unverified: bool = False,
                           max_bytes: int = MT_MAX_BYTES) -> Path:
    """Download the public magnetic-tile repository's zip archive, verify it, and unpack it to ``dest``.

    What is pinned: by default the archive of one commit (:data:`MT_COMMIT`, not a branch) and its sha256
    (:data:`MT_ARCHIVE_SHA256`; see the comment above them for where they come from). Another ``url`` needs its
    own ``sha256``; ``sha256=None`` is refused unless ``allow_unverified=True`` says, explicitly, to trust whatever
    the url delivers.

    Before anything is unpacked the archive must pass: the sha256, at most ``max_bytes`` downloaded and declared
    unpacked (a zip bomb is refused from its headers), the zip CRC check of every member, safe member names (no
    absolute paths, no ``..``), and the expected ``MT_<Class>/Imgs/`` folders with ``<stem>.jpg`` images beside
    ``<stem>.png`` masks (a single top folder, as in GitHub archives, is dropped). While unpacking, the bytes
    written are counted and more than ``max_bytes`` stops it, whatever the members declared. The archive is
    streamed to a temporary file beside ``dest`` and unpacked into a temporary folder there, which is renamed to
    ``dest`` in one step: on any failure nothing is left behind. ``dest`` may be missing or empty; if it already
    holds a readable dataset it is returned without downloading. ``url`` may be a ``file://`` URL.

    Returns:
        ``dest``, the folder holding the ``MT_*`` folders, ready for ``DefectFolder(dest, mask_threshold="auto")``.
    """
    dest = Path(dest).expanduser()
    if _holds_dataset(dest):
        return dest
    if sha256 is None and not allow_unverified:
        raise ValueError(f"download_magnetic_tile needs the sha256 of the archive at {url} to check what arrives; "
                         f"pass sha256=..., or allow_unverified=True to unpack it unchecked")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and holds no dataset; remove it or choose another folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".zip.part", dir=dest.parent)
    archive, unpacked = Path(name), None
    try:
        with os.fdopen(handle, "wb") as file:
            digest = _fetch(url, file, progress, f"downloading {dest.name}", max_bytes)
        if sha256 is not None and digest != sha256.strip().lower():
            hint = (" (the pinned archive of commit " + MT_COMMIT + ")" if url == MT_ARCHIVE_URL
                    else "; for another url, pass the sha256 of the archive at that url")
            raise ValueError(f"{url}: sha256 mismatch: expected {sha256}, got {digest}: a damaged or changed "
                             f"archive{hint}; nothing unpacked")
        try:
            with zipfile.ZipFile(archive) as zf:
                top = _check_archive(zf, url, max_bytes)
                unpacked = new_folder_beside(dest, "partial")
                _unpack(zf, top, unpacked, max_bytes, url)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise ValueError(f"{url}: not a valid zip archive ({e})") from e
        replace_folder(unpacked, dest)  # dest is absent or empty, checked above
    finally:  # on success too: the archive goes, and a partial folder on failure
        archive.unlink(missing_ok=True)
        if unpacked is not None and unpacked.exists():
            shutil.rmtree(unpacked, ignore_errors=True)
    return dest


def _unpack(zf: zipfile.ZipFile, top: str, folder: Path, max_bytes: int, url: str) -> None:
    """Write the files of ``zf`` (names checked by :func:`_check_archive`) into ``folder``, without the ``top``
    folder, counting the bytes as they are written: more than ``max_bytes`` in all stops it."""
    written = 0
    for info in zf.infolist():
        relative = info.filename[len(top) + 1:] if top else info.filename
        if info.is_dir() or not relative:
            continue
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as source, open(target, "xb") as sink:
            written = _copy_at_most(source, sink.write, max_bytes, written,
                                    f"{url}: unpacking stopped after {max_bytes:,} bytes (max_bytes): the archive "
                                    f"holds more than it declares; nothing unpacked")


def _copy_at_most(source, write, max_bytes: int, copied: int, too_much: str) -> int:
    """``write`` every 1 MiB chunk read from ``source``; returns ``copied`` plus the bytes copied, and raises
    ValueError(``too_much``) as soon as that passes ``max_bytes`` (before writing the chunk that does)."""
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > max_bytes:
            raise ValueError(too_much)
        write(chunk)
    return copied


def _holds_dataset(root: Path) -> bool:
    try:
        return len(DefectFolder(root)) > 0
    except (FileNotFoundError, ValueError, NotADirectoryError):
        return False


def _fetch(url: str, file, progress: bool, desc: str, max_bytes: int) -> str:
    """Stream ``url`` into ``file`` with a progress bar, at most ``max_bytes`` of it (whatever the server says its
    length is); returns the sha256 hex digest of the bytes."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
                def write(chunk: bytes) -> None:
                    file.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))

                _copy_at_most(response, write, max_bytes, 0, f"{url}: the download is larger than "
                              f"max_bytes={max_bytes:,}; is it the magnetic-tile archive? Nothing unpacked")
    except urllib.error.URLError as e:
        raise OSError(f"could not download {url}: {e.reason}") from e
    return digest.hexdigest()


def _check_archive(zf: zipfile.ZipFile, url: str, max_bytes: int) -> str:
    """Verify the declared size, names, CRCs and the MT_<Class>/Imgs/ layout; returns the top folder to unpack
    from ('' for none)."""
    declared = sum(info.file_size for info in zf.infolist())
    if declared > max_bytes:
        raise ValueError(f"{url}: the archive would unpack to {declared:,} bytes, more than max_bytes={max_bytes:,} "
                         f"(a zip bomb, or not the magnetic-tile archive); nothing unpacked")
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
    def load(cls, root: str | os.PathLike, progress: bool = True, missing_masks: str = "error") -> RealSet:
        """Read every image/mask pair of ``root`` (any layout :class:`unetlab.DefectFolder` reads), binarising
        masks with its documented ``"auto"`` rule; ``missing_masks="good"`` reads an image without a mask as a
        good part (class ``"good"``), as :class:`unetlab.DefectFolder` documents."""
        folder = DefectFolder(root, mask_threshold="auto", missing_masks=missing_masks)
        images, masks = [], []
        with one_colour_warning():
            for i in tqdm(range(len(folder)), desc="reading real images", unit="image", disable=not progress):
                image, mask = folder.arrays(i)
                images.append(image)
                masks.append(mask)
        return cls(images, masks, list(folder.classes), list(folder.stems))

    def __len__(self) -> int:
        return len(self.images)

    def good_parts(self, indices: Sequence[int] | None = None) -> list[int]:
        """The indices (among ``indices``, default all) of the images of a defect-free class: a class none of
        whose images has a defect pixel (the folder of good parts, e.g. "Free"). An image of a defect class whose
        mask happens to be empty (a missed label: the magnetic tiles have two such "Uneven" ones) is not a good
        part and stays out."""
        free = {c for c in self.classes} - {c for c, m in zip(self.classes, self.masks) if m.any()}
        return [int(i) for i in (range(len(self)) if indices is None else indices) if self.classes[i] in free]

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


def holdout_split(classes: Sequence[str], fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split labelled images into training and validation indices, stratified by class.

    Each class with at least two images gives ``max(1, round(n * fraction))`` of them (chosen by ``seed``) to
    validation, so every such class is checked; a class with one image trains. If that leaves no validation
    image at all, one image is held out anyway.

    Args:
        classes: one class name per image (e.g. ``RealSet.classes``), at least two images.
        fraction: share held out per class, in (0, 1).
        seed: non-negative int.

    Returns:
        ``(train, val)``: disjoint sorted index lists, both non-empty.
    """
    if isinstance(classes, str) or len(classes) < 2:
        raise ValueError(f"holdout_split needs at least 2 images to keep one for validation; got {len(classes)}")
    if not (0 < fraction < 1):
        raise ValueError(f"holdout_split needs a fraction in (0, 1); got {fraction!r}")
    if not (is_int(seed) and seed >= 0):
        raise ValueError(f"holdout_split needs a non-negative int seed; got {seed!r}")
    rng = np.random.default_rng([int(seed), 7])
    val = []
    for name in sorted(set(classes)):
        members = [i for i, c in enumerate(classes) if c == name]
        if len(members) >= 2:
            val += rng.permutation(members)[:max(1, round(len(members) * fraction))].tolist()
    if not val:
        val = [int(rng.integers(len(classes)))]
    held = set(val)
    return [i for i in range(len(classes)) if i not in held], sorted(val)


def load_backgrounds(folder: str | os.PathLike, progress: bool = True) -> Backgrounds:
    """The defect-free images of ``folder`` as a :class:`unetlab.synth.Backgrounds` bank to paint defects on.

    Every image file directly in ``folder`` (``.png``, ``.jpg``, ``.bmp``, ``.tif``, ...; sorted by name, so the
    same folder and seed give the same samples) is read with :func:`unetlab.folders.read_image`: any size, 8 or
    16 bits, colour converted to gray with a warning. Sub-folders are not read. A folder of a labelled dataset
    (``images/`` beside ``masks/``) is refused: point at the defect-free pictures themselves.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"background folder not found: {root}")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        hint = (" (it holds images/ and masks/: pass the folder of defect-free images itself)"
                if (root / "images").is_dir() else "")
        raise ValueError(f"{root} holds no image files ({', '.join(IMAGE_SUFFIXES)}){hint}")
    with one_colour_warning():
        images = [read_image(p) for p in tqdm(files, desc="reading backgrounds", unit="image", disable=not progress)]
    return Backgrounds(images)


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
