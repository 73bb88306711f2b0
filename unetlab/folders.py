"""Image folders on disk: read images and masks, the folder layouts :class:`DefectFolder` reads, and writing
a synthetic dataset as files.

Items are the tensors of :mod:`unetlab.data` (``(image, mask)`` or ``(image, mask, labels)``). Real masks are
binarised by one rule (:func:`binarize_mask`): a mask whose maximum is 0 or 1 is read as 0/1 (defect where
value > 0); any other mask is a defect where value >= half its dtype's range (128 for 8-bit, 32768 for 16-bit),
which keeps the inner half of anti-aliased edges. Colour masks are an error.

Every file is checked before it is decoded: its header must describe at most :data:`MAX_IMAGE_PIXELS` pixels
(a PNG of a few hundred KB can describe 20000 x 20000 pixels, which OpenCV would allocate before reading it).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import warnings
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ._version import __version__
from .checks import is_int
from .data import SyntheticDefects, to_item
from .io import new_folder_beside, replace_folder, write_error
from .synth import CLASS_NAMES, DefectConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# The largest image read, in pixels: 100 MP is a 10000 x 10000 frame (400 MB as float32), larger than the frames
# of industrial area cameras; a bigger file is refused from its header, before any decoding.
MAX_IMAGE_PIXELS = 100_000_000
# A mask may carry one of these after its image's stem (any case), as public defect datasets name them:
# a.png -> masks/a.png, a_mask.png, a_label.bmp or a_GT.png.
MASK_NAME_SUFFIXES = ("_mask", "_label", "_gt")
# What DefectFolder does with an image that has no mask: refuse the folder (a forgotten or misnamed mask must not
# become a "no defect" label unnoticed), or read the image as a good part (all-zero mask, class GOOD_CLASS), as in
# datasets whose defect-free images come without a mask file (MVTec AD and DAGM are laid out so).
MISSING_MASKS = ("error", "good")
GOOD_CLASS = "good"
_GOOD_HINT = ("; if the images without a mask are defect-free parts, pass missing_masks='good' (command line: "
              "--missing-masks good)")
# What write_dataset writes; --overwrite replaces only a folder that holds nothing else.
DATASET_PARTS = ("images", "masks", "labels")


class ColourConverted(UserWarning):
    """:func:`read_image` converted a colour file to gray."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A grayscale image file as (H, W) float32 in [0, 1].

    8-bit and 16-bit files are scaled by their full range. Colour images are converted to gray with OpenCV's
    luma weights and a :class:`ColourConverted` warning says so (one per file; readers of whole folders
    summarise them with :func:`one_colour_warning`).
    """
    array = _read(path)
    if array.ndim == 3:
        warnings.warn(f"{path}: colour image ({array.shape[2]} channels) converted to grayscale", ColourConverted,
                      stacklevel=2)
        code = cv2.COLOR_BGRA2GRAY if array.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        array = cv2.cvtColor(array, code)
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype)
    if scale is None:
        raise ValueError(f"{path}: expected an 8-bit or 16-bit image; got dtype {array.dtype}")
    return array.astype(np.float32) / np.float32(scale)


@contextmanager
def one_colour_warning():
    """Within this block, the :class:`ColourConverted` warnings of :func:`read_image` are held back and become
    one warning at its end, saying how many files were converted and naming the first: a folder of colour images
    (most MVTec AD categories) would otherwise print two lines per image. Other warnings pass through as
    usual."""
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ColourConverted)
            yield
    finally:  # also when the block fails: what was converted before the error is still said
        _summarise_colour_warnings(caught)


def _summarise_colour_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Re-emit the warnings :func:`one_colour_warning` held back: the colour ones as one."""
    colour = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, ColourConverted)))
    for w in caught:
        if not issubclass(w.category, ColourConverted):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if len(colour) == 1:
        warnings.warn(colour[0], ColourConverted, stacklevel=4)
    elif colour:
        first = colour[0].split(": colour image")[0]
        warnings.warn(f"{len(colour)} colour images converted to grayscale (the first: {first})", ColourConverted,
                      stacklevel=4)


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
    """The decoded file, after :func:`_check_size` has read its header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    _check_size(path)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"{path}: not a readable image (corrupt or unsupported format)")
    return array


def _check_size(path: Path) -> None:
    """ValueError unless the header of image file ``path`` says it has at most :data:`MAX_IMAGE_PIXELS` pixels
    (Pillow reads only the header; images it would call a decompression bomb are refused with its message)."""
    limit = f"unetlab reads images of at most {MAX_IMAGE_PIXELS:,} pixels (MAX_IMAGE_PIXELS)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # this check says it better
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: {str(err).rstrip('.')}; {limit}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:  # what Pillow raises for damaged headers
        raise ValueError(f"{path}: not a readable image (corrupt or unsupported format: {err})") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{path}: {width} x {height} = {width * height:,} pixels; {limit}")


class DefectFolder(Dataset):
    """Image/mask pairs from a folder, in one of four layouts (detected automatically):

    - ``root/images/<stem>.*`` and ``root/masks/<stem>.*`` (same stem, any common image format), as written by
      :func:`write_dataset` or the local real-data copy; the mask's stem may also end in one of
      :data:`MASK_NAME_SUFFIXES` (``<stem>_mask``, ``<stem>_label``, ``<stem>_GT``, any case), but an image
      with two candidate masks is an error;
    - the original magnetic-tile layout, ``root/MT_<Class>/Imgs/<stem>.jpg`` beside its mask ``<stem>.png``;
      item stems become ``<Class>__<stem>`` so they stay unique across classes;
    - the MVTec AD layout of one category, ``root/{train,test}/<class>/<stem>.*`` with masks in
      ``root/ground_truth/<class>/`` (named ``<stem>_mask`` or as above); the images of a class folder named
      ``good`` are defect-free parts by that layout's convention and need no mask; item stems become
      ``<class>__<split>_<stem>`` (``crack__test_000``);
    - images and masks **side by side** in ``root`` itself, each mask named after its image with one of
      :data:`MASK_NAME_SUFFIXES` (``10000.png`` beside ``10000_GT.png``, as in KolektorSDD2), or in a ``Label/``
      folder beside the images (``0576.PNG`` and ``Label/0576_label.PNG``, as in DAGM).

    Images may have any size, 8 or 16 bits; colour is converted to gray (with a warning). Items are
    ``(image, mask)`` tensors as in :mod:`unetlab.data`; with ``return_labels=True`` the folder must also hold
    ``labels/`` (class ids), as a synthetic one does.

    Images without a mask: ``missing_masks="error"`` (the default) refuses the folder and names them;
    ``"good"`` reads each as a defect-free part: an all-zero mask (its ``mask_paths`` entry is ``None``) and the
    class ``"good"`` unless the manifest or its ``MT_<Class>`` or MVTec class folder names one. With ``"good"``,
    ``masks/`` may be absent (a folder of good parts only).

    Masks: ``mask_threshold=None`` (the default) requires strictly binary masks and names any file that is not;
    an int binarises as value > threshold; ``"auto"`` applies :func:`binarize_mask`: a 0/1 mask is read as is,
    any other as value >= half the dtype range (128 for 8-bit, 32768 for 16-bit). Real masks with anti-aliased
    edges, such as the original magnetic-tile ones, need ``"auto"``.

    Attributes:
        stems: item names, sorted. image_paths, mask_paths: their files (``None``: no mask, a good part).
        classes: one class name per item: the ``defect_class`` column of ``root/manifest.csv`` (columns
            ``stem,defect_class``) when it lists the stem, else the ``MT_<Class>`` or MVTec class folder, else the
            stem's prefix before ``__`` (``Crack__x`` -> ``Crack``), else ``"defect"``.

    Args:
        root: the dataset folder.
        mask_threshold: ``None``, an int >= 0, or ``"auto"`` (see above).
        return_labels: also return (H, W) int64 class labels from ``root/labels/``.
        missing_masks: ``"error"`` or ``"good"`` (see above).
    """

    def __init__(self, root: str | os.PathLike, mask_threshold: int | str | None = None,
                 return_labels: bool = False, missing_masks: str = "error") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data folder not found: {self.root}")
        valid = mask_threshold in (None, "auto") or (is_int(mask_threshold) and mask_threshold >= 0)
        if not valid:
            raise ValueError(f"mask_threshold must be None, 'auto' or an int >= 0; got {mask_threshold!r}")
        if missing_masks not in MISSING_MASKS:
            raise ValueError(f"missing_masks must be one of {MISSING_MASKS}; got {missing_masks!r}")
        images, masks, folder_class, good_by_layout, where, hint = _layout(self.root, return_labels, missing_masks)
        if not images:
            raise ValueError(f"{self.root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        missing = set(images) - set(masks) - good_by_layout
        if missing and missing_masks == "error":
            raise ValueError(f"{len(missing)} image(s) {where}: {', '.join(sorted(missing)[:5])}"
                             f"{', ...' if len(missing) > 5 else ''}{hint}{_GOOD_HINT}")
        self.stems = sorted(images)
        self.image_paths = [images[s] for s in self.stems]
        self.mask_paths = [masks.get(s) for s in self.stems]
        manifest = _manifest_classes(self.root / "manifest.csv")
        self.classes = [manifest.get(s) or folder_class.get(s) or (GOOD_CLASS if s in missing else _stem_class(s))
                        for s in self.stems]
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
        """Item ``i`` as numpy: (H, W) float32 image in [0, 1] and (H, W) bool mask (checked to match; all False
        for a good part without a mask file)."""
        image = read_image(self.image_paths[i])
        if self.mask_paths[i] is None:
            return image, np.zeros(image.shape, bool)
        mask = read_mask(self.mask_paths[i], self.mask_threshold)
        if mask.shape != image.shape:
            raise ValueError(f"mask {self.mask_paths[i]} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                             f"{self.image_paths[i]} is {image.shape[1]}x{image.shape[0]}")
        return image, mask

    def __getitem__(self, i: int):
        image, mask = self.arrays(i)
        if self.label_paths is None:
            return to_item(image, mask)
        labels = _read(self.label_paths[i])
        if labels.shape != image.shape:
            raise ValueError(f"labels {self.label_paths[i]} do not match the size of {self.image_paths[i]}")
        return to_item(image, mask, labels)


def _layout(root: Path, return_labels: bool, missing_masks: str
            ) -> tuple[dict[str, Path], dict[str, Path], dict[str, str], set[str], str, str]:
    """The layout of ``root`` read: images, masks and classes by item stem (classes only where the layout names
    them), the stems that are defect-free by the layout, and the words that say where masks were looked for
    (``where``) and how they are named (``hint``), for the error about images without one."""
    mt_folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("MT_"))
    layout = ("images" if (root / "images").is_dir() else "magnetic-tile" if mt_folders
              else "MVTec AD" if _is_mvtec(root) else "side-by-side" if _by_stem(root) else "images")
    if layout != "images" and return_labels:
        raise ValueError(f"{root} is in the {layout} layout, which has no labels/ folder")
    hint = f" (a mask is named <stem> or <stem>{'/'.join(MASK_NAME_SUFFIXES)}, in any image format)"
    if layout == "magnetic-tile":
        images, masks, classes = _mt_pairs(mt_folders)
        return images, masks, classes, set(), f"in {root}/MT_*/Imgs have no <stem>.png mask beside them", ""
    if layout == "MVTec AD":
        where = f"in {root}/{{train,test}}/<class>/ have no mask in {root}/ground_truth/<class>/"
        return *_mvtec_pairs(root), where, hint
    if layout == "side-by-side":
        hint = f" (beside its image, a mask is named <stem>{'/'.join(MASK_NAME_SUFFIXES)}, in any image format)"
        where = f"in {root} have no mask beside them (or in its Label/ folder)"
        return *_side_by_side_pairs(root), {}, set(), where, hint
    for sub in ("images", "masks") + (("labels",) if return_labels else ()):
        if not (root / sub).is_dir() and not (sub == "masks" and missing_masks == "good"):
            raise FileNotFoundError(f"{root} has no {sub}/ folder; expected {root}/images/ and {root}/masks/ with "
                                    f"matching file names (or MT_<Class>/Imgs/ folders, MVTec AD's train/, test/ and "
                                    f"ground_truth/, or images and <stem>_mask files side by side)"
                                    f"{_GOOD_HINT if sub == 'masks' else ''}{_category_hint(root)}")
    images = _by_stem(root / "images")
    found = _by_stem(root / "masks") if (root / "masks").is_dir() else {}
    masks = _masks_by_image(images, found, root / "masks")
    return images, masks, {}, set(), f"in {root / 'images'} have no mask in {root / 'masks'}", hint


def _by_stem(folder: Path, keep=lambda path: True) -> dict[str, Path]:
    """The image files of ``folder`` (those ``keep`` accepts) by stem; ValueError when two share one, e.g.
    ``a.png`` and ``a.jpg`` (which one is meant? never guessed)."""
    found = defaultdict(list)
    for path in folder.iterdir():
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and keep(path):
            found[path.stem].append(path)
    for stem, paths in sorted(found.items()):
        if len(paths) > 1:
            raise ValueError(f"{folder}: {len(paths)} files share the stem {stem!r} "
                             f"({', '.join(sorted(p.name for p in paths))}); keep one of them")
    return {stem: paths[0] for stem, paths in found.items()}


def _masks_by_image(images: dict[str, Path], masks: dict[str, Path], folder: Path) -> dict[str, Path]:
    """The mask of each image stem that has one: ``masks[stem]`` or a mask named ``<stem>`` plus one of
    :data:`MASK_NAME_SUFFIXES` (any case). ValueError when an image has two candidates (never guessed)."""
    by_base = defaultdict(list)  # image stem -> the mask stems that name it
    for name in masks:
        by_base[name].append(name)
        if name in images:  # images x and x_gt: the mask x_gt is x_gt's, never x's too
            continue
        for suffix in MASK_NAME_SUFFIXES:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                by_base[name[:-len(suffix)]].append(name)
    found = {}
    for stem in images:
        candidates = by_base.get(stem, [])
        if len(candidates) > 1:
            names = ", ".join(sorted(masks[c].name for c in candidates))
            raise ValueError(f"{folder}: {len(candidates)} masks could belong to the image {stem!r} ({names}); "
                             f"keep one of them")
        if candidates:
            found[stem] = masks[candidates[0]]
    return found


def _mt_pairs(folders: list[Path]) -> tuple[dict[str, Path], dict[str, Path], dict[str, str]]:
    """Images, masks and classes by stem ``<Class>__<stem>`` from ``MT_<Class>/Imgs/`` (.png = mask)."""
    images, masks, classes = {}, {}, {}
    for folder in folders:
        if not (folder / "Imgs").is_dir():
            raise FileNotFoundError(f"{folder} has no Imgs/ folder; expected {folder}/Imgs/<stem>.jpg images "
                                    f"beside <stem>.png masks")
        name = folder.name[len("MT_"):]
        for found, is_mask in ((masks, True), (images, False)):
            files = _by_stem(folder / "Imgs", lambda path: (path.suffix.lower() == ".png") == is_mask)
            found.update({f"{name}__{stem}": path for stem, path in files.items()})
            classes.update({f"{name}__{stem}": name for stem in files})
    return images, masks, classes


def _is_mvtec(root: Path) -> bool:
    """Whether ``root`` is one MVTec AD category: ``test/`` and ``ground_truth/`` folders (``train/`` optional)."""
    return (root / "test").is_dir() and (root / "ground_truth").is_dir()


def _category_hint(root: Path) -> str:
    """A hint when ``root`` holds MVTec AD categories (``root/<category>/test/``) rather than being one."""
    categories = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_mvtec(p))
    if not categories:
        return ""
    return (f". {root} holds {len(categories)} MVTec AD categories ({', '.join(categories[:3])}"
            f"{', ...' if len(categories) > 3 else ''}): pass one of them, e.g. {root / categories[0]}")


def _mvtec_pairs(root: Path) -> tuple[dict[str, Path], dict[str, Path], dict[str, str], set[str]]:
    """Images, masks, classes by stem ``<class>__<split>_<stem>`` from one MVTec AD category, and the stems of
    the ``good`` class folders' images (defect-free by the layout; they need no mask)."""
    images, masks, classes, good = {}, {}, {}, set()
    truth = {p.name: p for p in (root / "ground_truth").iterdir() if p.is_dir()}
    splits = [s for s in ("train", "test") if (root / s).is_dir()]
    seen = set()
    for split in splits:
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            name = folder.name
            seen.add(name)
            files = _by_stem(folder)
            found = _masks_by_image(files, _by_stem(truth[name]), truth[name]) if name in truth else {}
            key = {stem: f"{name}__{split}_{stem}" for stem in files}
            images.update({key[stem]: path for stem, path in files.items()})
            masks.update({key[stem]: path for stem, path in found.items()})
            classes.update({key[stem]: name for stem in files})
            if name.lower() == GOOD_CLASS:
                good.update(key[stem] for stem in files if stem not in found)
    orphans = sorted(set(truth) - seen)
    if orphans:
        raise ValueError(f"{root}/ground_truth has mask folders with no image folder of the same name in "
                         f"{' or '.join(s + '/' for s in splits)}: {', '.join(orphans)}")
    return images, masks, classes, good


def _side_by_side_pairs(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Images and masks by stem from one folder that holds both: a file whose stem is another file's stem plus
    one of :data:`MASK_NAME_SUFFIXES` is a mask, as is every image file of a ``Label/`` folder beside them."""
    files = _by_stem(root)
    named = {stem for stem in files for suffix in MASK_NAME_SUFFIXES
             if stem.lower().endswith(suffix) and stem[:-len(suffix)] in files}
    images = {stem: path for stem, path in files.items() if stem not in named}
    found = {stem: files[stem] for stem in named}
    for folder in (p for p in root.iterdir() if p.is_dir() and p.name.lower() == "label"):
        for stem, path in _by_stem(folder).items():
            if stem in found:
                raise ValueError(f"{root}: the mask {stem!r} is both beside the images ({found[stem].name}) and in "
                                 f"{folder.name}/ ({path.name}); keep one of them")
            found[stem] = path
    return images, _masks_by_image(images, found, root)


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


def write_dataset(out: str | os.PathLike, n: int, cfg: DefectConfig | None = None, seed: int = 0, *,
                  start: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``n`` synthetic samples as 8-bit PNGs: ``images/``, ``masks/`` (0/255), ``labels/`` (class ids).

    ``dataset.json`` records the config, seed, start index, counts per class and the unetlab version. The folder
    is built beside ``out`` and renamed into place only when complete, so an interrupted run or a full disk leaves
    no half-written dataset and ``out`` as it was. An existing ``out`` must be empty (it keeps its permissions),
    unless ``overwrite=True``: then it must be a dataset this function wrote, holding nothing else, and is
    replaced whole, never mixed with the new files; any other folder is refused, never deleted.

    Returns:
        The dataset folder.

    Raises:
        FileExistsError: ``out`` is a file, or a non-empty folder without ``overwrite``, or (with it) not a
            unetlab dataset or one holding files of its own; the message names them.
        OSError: the disk is full or ``out`` cannot be written; nothing was changed.
    """
    out = Path(out)
    _check_replaceable(out, overwrite)
    ds = SyntheticDefects(n, cfg, seed, start)  # validates n, cfg, seed
    tmp = None
    try:
        tmp = new_folder_beside(out, "partial")
        for sub in DATASET_PARTS:
            (tmp / sub).mkdir()
        class_pixels = np.zeros(len(CLASS_NAMES), np.int64)
        defect_free = 0
        width = max(5, len(str(n - 1)))
        for i in tqdm(range(n), desc=f"writing {out.name}", disable=not progress, unit="img"):
            image, labels = ds.sample(i)
            name = f"{i:0{width}d}.png"
            for sub, array in zip(DATASET_PARTS, (image, (labels > 0).astype(np.uint8) * 255, labels)):
                _write_png(tmp / sub / name, array)
            class_pixels += np.bincount(labels.ravel(), minlength=len(CLASS_NAMES))
            defect_free += not labels.any()
        meta = {"unetlab_version": __version__, "n": n, "seed": seed, "start": start,
                "config": ds.cfg.to_dict(), "class_names": list(CLASS_NAMES),
                "class_pixels": dict(zip(CLASS_NAMES, class_pixels.tolist())), "defect_free_images": defect_free}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
        replace_folder(tmp, out)
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise write_error(err, f"could not write the dataset {out}", "nothing was changed") from err
        raise
    return out


def _write_png(path: Path, array: np.ndarray) -> None:
    """Encode ``array`` as PNG and write it; a full disk is an OSError with its errno (cv2.imwrite says only
    False)."""
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"OpenCV could not encode {path.name} as PNG ({array.dtype} {array.shape})")
    path.write_bytes(encoded.tobytes())


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """FileExistsError unless ``out`` is absent, an empty folder, or (with ``overwrite``) a dataset that
    :func:`write_dataset` wrote and nothing else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} is a file; a dataset is a folder: choose another path")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; choose another folder or pass "
                              f"overwrite=True (--overwrite) to replace it")
    if not (out / "dataset.json").is_file():
        raise FileExistsError(f"refusing to replace {out}: it is not a dataset written by unetlab (no dataset.json); "
                              f"overwrite replaces only those. Choose another folder, or empty this one yourself")
    foreign = [p.relative_to(out).as_posix() for p in out.iterdir()
               if p.name != "dataset.json" and not (p.name in DATASET_PARTS and p.is_dir())]
    for sub in DATASET_PARTS:
        if (out / sub).is_dir():
            foreign += [f"{sub}/{p.name}" for p in (out / sub).iterdir() if p.suffix != ".png" or not p.is_file()]
    if foreign:
        shown = sorted(foreign)
        raise FileExistsError(f"refusing to replace {out}: it holds files unetlab did not write: "
                              f"{', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''}")
