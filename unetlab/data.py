"""Datasets of synthetic images made on the fly, the loaders the tutorial trains with, and the item contract.

Every dataset item in unetlab (synthetic, read from a folder, or cut from real images) is ``(image, mask)``, or
``(image, mask, labels)`` when asked for labels, built by :func:`to_item`:

- image: (1, H, W) float32 in [0, 1];
- mask: (1, H, W) float32, 1.0 where there is a defect, 0.0 elsewhere;
- labels: (H, W) int64 class ids (0 background, 1 scratch, 2 crack, 3 stain; see ``synth.CLASS_NAMES``).

Synthetic images are quantised to 8 bits, as a camera would deliver them, so a dataset written to disk with
:func:`unetlab.folders.write_dataset` and read back with :class:`unetlab.folders.DefectFolder` gives exactly the
same tensors. Files on disk live in :mod:`unetlab.folders`, real images in :mod:`unetlab.real`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .checks import is_fraction, is_int
from .distributed import sharded_loader
from .synth import Backgrounds, DefectConfig, make_sample, sample_rng

if TYPE_CHECKING:
    from .config import RunSizes

# Where each split's sample indices start: the test set can never overlap training (up to a million images).
SPLIT_START = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SPLIT_SIZE = 1_000_000


def to_item(image: np.ndarray, mask: np.ndarray, labels: np.ndarray | None = None) -> tuple[torch.Tensor, ...]:
    """The one array-to-tensor path of every dataset: numpy (H, W) arrays -> the item of the module docstring.

    Args:
        image: (H, W) float32 in [0, 1], or uint8 gray levels (divided by 255 here).
        mask: (H, W) bool, 0/1 numbers or class ids: a defect where ``mask > 0``.
        labels: optional (H, W) integer class ids, returned as int64.

    Views with negative strides (flipped or rotated arrays) are copied first; otherwise no copy is made.
    """
    image_t = torch.from_numpy(np.ascontiguousarray(image))
    image_t = (image_t.float().div_(255) if image_t.dtype == torch.uint8 else image_t.float()).unsqueeze(0)
    mask_t = torch.from_numpy(np.ascontiguousarray(mask > 0, dtype=np.float32)).unsqueeze(0)
    if labels is None:
        return image_t, mask_t
    return image_t, mask_t, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


def stack_items(dataset: Dataset, indices: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Items ``indices`` of ``dataset`` as stacked numpy arrays, for pictures: each item is built once.

    Returns ``(images, masks)``, or ``(images, masks, labels)`` for items with labels: images and masks
    (N, H, W) float32, labels (N, H, W) int64. The items must all have one size.
    """
    items = [dataset[i] for i in indices]
    if not items:
        raise ValueError("stack_items needs at least one index; got none")
    images = np.stack([item[0][0].numpy() for item in items])
    masks = np.stack([item[1][0].numpy() for item in items])
    if len(items[0]) == 2:
        return images, masks
    return images, masks, np.stack([item[2].numpy() for item in items])


class SyntheticDefects(Dataset):
    """``n`` synthetic samples generated on the fly; item ``i`` depends only on ``(seed, start + i)``.

    The result is identical whatever the number of DataLoader workers or the order of access, and nothing is
    stored: a sample costs about a millisecond to make, far less than a training step.

    With ``crop``, item ``i`` is a ``crop`` x ``crop`` window of sample ``i`` instead of the whole image. Most of
    a synthetic image is plain surface, so a window placed over a defect (with probability ``defect_share``)
    teaches as much as the whole image at a fraction of the cost: a 128 px window is a quarter of the pixels of a
    256 px image. The image behind item ``i`` is still fixed by ``(seed, start + i)``. Where the window falls:

    - ``ds[(epoch, i)]``, what :class:`EpochShuffle` with ``keyed=True`` asks for (and so :func:`make_loaders`):
      fixed by ``(seed, start + i, epoch)``, so every epoch sees new windows and a run is the same whatever the
      number of DataLoader workers, interrupted and resumed or not;
    - ``ds[i]``: drawn afresh from torch's random stream on every access (reproducible when that stream is
      seeded, as :func:`unetlab.fit` does per epoch, but only for a given number of DataLoader workers, since
      each worker process has its own stream).

    Args:
        n: number of samples.
        cfg: generator knobs (``None``: the defaults).
        seed: dataset seed.
        start: index of the first sample (splits use :data:`SPLIT_START` so they never overlap).
        return_labels: also return the (H, W) int64 class map.
        crop: side of the training window in px (at most the image side), or ``None`` for whole images.
        defect_share: with ``crop``, the probability in [0, 1] that the window contains a defect pixel (one drawn
            uniformly from the sample's defect pixels); otherwise it falls anywhere.
        backgrounds: paint the defects on windows of these real defect-free images instead of procedural
            surfaces (see :class:`unetlab.synth.Backgrounds`); item ``i`` still depends only on
            ``(seed, start + i)`` for a given bank.
    """

    def __init__(self, n: int, cfg: DefectConfig | None = None, seed: int = 0, start: int = 0,
                 return_labels: bool = False, crop: int | None = None, defect_share: float = 2 / 3,
                 backgrounds: Backgrounds | None = None) -> None:
        if not (is_int(n) and n >= 1):
            raise ValueError(f"SyntheticDefects needs n >= 1 samples; got {n!r}")
        if not (is_int(seed) and seed >= 0 and is_int(start) and start >= 0):
            raise ValueError(f"SyntheticDefects needs non-negative int seed and start; got seed={seed!r}, "
                             f"start={start!r}")
        if cfg is not None and not isinstance(cfg, DefectConfig):
            raise ValueError(f"SyntheticDefects expects a DefectConfig (or None); got {type(cfg).__name__}")
        self.n, self.cfg, self.seed, self.start = int(n), cfg or DefectConfig(), int(seed), int(start)
        if crop is not None and not (is_int(crop) and 1 <= crop <= self.cfg.size):
            raise ValueError(f"SyntheticDefects crop must be None or an int in [1, {self.cfg.size}] (the image "
                             f"side); got {crop!r}")
        check_share(defect_share, "SyntheticDefects")
        if backgrounds is not None and not isinstance(backgrounds, Backgrounds):
            raise ValueError(f"SyntheticDefects expects backgrounds as a unetlab.Backgrounds (or None); got "
                             f"{type(backgrounds).__name__}")
        self.return_labels, self.defect_share = return_labels, float(defect_share)
        self.crop = int(crop) if crop is not None else None
        self.backgrounds = backgrounds

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` as numpy, whole (never cropped): (H, W) uint8 image (8-bit quantised) and (H, W) uint8
        labels."""
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} samples")
        image, labels = make_sample(self.cfg, sample_rng(self.seed, self.start + i % self.n),
                                    backgrounds=self.backgrounds)
        return np.rint(image * 255).astype(np.uint8), labels

    def __getitem__(self, key: int | tuple[int, int]):
        """Item ``i`` for ``key = i`` or ``key = (epoch, i)``; the epoch only places the window (see the class)."""
        epoch, i = key if isinstance(key, tuple) else (None, key)
        image_u8, labels = self.sample(i)
        if self.crop is not None:
            place = [1, epoch] if epoch is not None else [0, int(torch.randint(2**62, ()))]
            rng = np.random.default_rng([self.seed, self.start + i % self.n, *place])
            window = crop_window(rng, labels > 0, self.crop, self.defect_share)
            image_u8, labels = image_u8[window], labels[window]
        return to_item(image_u8, labels, labels if self.return_labels else None)


class EpochShuffle(Sampler):
    """The shuffled order of a training set, epoch by epoch: epoch ``e`` is a permutation of ``range(n)`` drawn
    from ``(seed, e)`` alone.

    So the order is the same whatever the number of DataLoader workers (the sampler runs in the main process)
    and whether or not the run was interrupted: :func:`unetlab.fit` calls :meth:`set_epoch` before every epoch,
    resumed or not. Each pass over the sampler uses the current epoch and then moves to the next one (the first
    pass is epoch 1), so a loop of your own without ``set_epoch`` still sees a new order every epoch.

    Args:
        n: length of the dataset.
        seed: non-negative int.
        keyed: yield ``(epoch, index)`` pairs instead of indices, for datasets whose items depend on the epoch
            (:class:`SyntheticDefects` with ``crop``).
    """

    def __init__(self, n: int, seed: int = 0, keyed: bool = False) -> None:
        if not (is_int(n) and n >= 1 and is_int(seed) and seed >= 0 and isinstance(keyed, bool)):
            raise ValueError(f"EpochShuffle needs an int n >= 1, an int seed >= 0 and a bool keyed; got n={n!r}, "
                             f"seed={seed!r}, keyed={keyed!r}")
        self.n, self.seed, self.keyed, self.epoch = int(n), int(seed), keyed, 1

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (an int >= 0; :func:`unetlab.fit` counts from 1)."""
        if not (is_int(epoch) and epoch >= 0):
            raise ValueError(f"EpochShuffle.set_epoch needs an int >= 0; got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1  # read now, not at the first next(): DataLoader prefetches
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n).tolist()
        return iter([(epoch, i) for i in order] if self.keyed else order)


def make_loaders(cfg: DefectConfig | None = None, sizes: RunSizes | None = None, seed: int = 0, *,
                 num_workers: int = 0, return_labels: bool = True) -> dict[str, DataLoader]:
    """Train / val / test DataLoaders over synthetic data, with disjoint samples (see :data:`SPLIT_START`).

    ``sizes`` is required: the caller chooses them, e.g. ``unetlab.run_sizes()`` for the tutorial's (quick under
    ``UNETLAB_QUICK=1``); this layer reads no run mode. ``cfg`` defaults to ``DefectConfig(size=sizes.image_size)``
    (a given cfg keeps its own size). Training batches are shuffled by :class:`EpochShuffle`, the order of each
    epoch fixed by ``(seed, epoch)``, so a run is repeatable, also across an interruption and resume.
    ``num_workers=0`` suits notebooks (generation costs ~1 ms a sample); raise it freely, nothing changes, not
    even the training windows. With ``sizes.crop`` set, the training set yields windows of that side, most of
    them over a defect (see :class:`SyntheticDefects`); validation and test always score whole images. Under
    torchrun the training loader is this process's share of every batch (:func:`unetlab.distributed.sharded_loader`:
    ``sizes.batch_size`` is the total over the processes); validation and test loaders hold whole splits.

    Each split holds at most 1,000,000 images (the distance between the :data:`SPLIT_START` values), so that no
    validation or test image is ever a training image; more is a ValueError.
    """
    if sizes is None:
        raise ValueError("make_loaders needs sizes: pass unetlab.run_sizes() (the tutorial's, quick under "
                         "UNETLAB_QUICK=1) or a RunSizes of your own")
    cfg = cfg or DefectConfig(size=sizes.image_size)
    if sizes.crop is not None and sizes.crop > cfg.size:
        raise ValueError(f"make_loaders: sizes.crop ({sizes.crop} px) is larger than the images ({cfg.size} px)")
    splits = {"train": sizes.n_train, "val": sizes.n_val, "test": sizes.n_test}
    for split, n in splits.items():
        if n > SPLIT_SIZE:
            raise ValueError(f"make_loaders: n_{split} = {n:,} images; each split holds at most {SPLIT_SIZE:,} "
                             f"(SPLIT_START), or the {split} samples would overlap the next split's")
    loaders = {}
    for split, n in splits.items():
        crop = sizes.crop if split == "train" else None
        ds = SyntheticDefects(n, cfg, seed, SPLIT_START[split], return_labels=return_labels, crop=crop)
        workers = dict(num_workers=num_workers, persistent_workers=num_workers > 0)
        if split == "train":
            sampler = EpochShuffle(n, seed, keyed=crop is not None)
            loaders[split] = sharded_loader(ds, sizes.batch_size, sampler, **workers)
        else:
            loaders[split] = DataLoader(ds, batch_size=sizes.batch_size, **workers)
    return loaders


def check_share(defect_share: float, caller: str) -> None:
    """ValueError unless ``defect_share`` is a probability in [0, 1]."""
    if not is_fraction(defect_share):
        raise ValueError(f"{caller} needs defect_share in [0, 1]; got {defect_share!r}")


def crop_window(rng: np.random.Generator, defects: np.ndarray, size: int,
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
