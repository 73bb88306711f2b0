"""Synthetic industrial surfaces with labelled defects (numpy + OpenCV only, no torch).

One call, :func:`make_sample`, draws a grayscale surface, paints scratches, cracks and stains on it, then
blurs and adds sensor noise, and returns the image with a per-pixel class map. Every knob lives in
:class:`DefectConfig`, so a slider (``unetlab.widgets``) can move it.

Units: intensities are in **gray levels** (0-255, as in an 8-bit camera image) although the returned image is
float32 in [0, 1]; lengths and widths are in **pixels**.

How an image is made (in this order):

1. surface: mean brightness + texture (brushed, cast or woven) + uneven illumination, then (when their knobs
   are above 0) edge shading and distractors: things a camera sees that are NOT defects and stay unlabelled;
2. defects, as an additive intensity change ``delta`` and a label map:
   stains first, then cracks, then scratches. Where defects overlap, the label is the one drawn last, so a thin
   scratch across a stain stays a scratch: precedence is scratch (1) > crack (2) > stain (3);
3. Gaussian blur, then Gaussian sensor noise, then clipping to [0, 1].

The mask says where the image visibly changed. A pixel is labelled when the defect's own coverage there is at
least one half (the core of an anti-aliased line, the inside of a feathered stain); the soft fringe around the
core changes the image by less than half the defect's contrast and stays unlabelled. ``tests/test_synth.py``
renders each seed with and without defects (same texture, same noise) and checks the difference against the mask.

Reproducibility: the same config and seed give identical bytes. Surface, defects and noise draw from three
independent streams spawned from the seed, so ``make_sample(cfg, seed, defects=False)`` gives the very same
surface and noise without the defects. No global random state is read or written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from .checks import gray_image, is_int, is_real

CLASS_NAMES: tuple[str, ...] = ("background", "scratch", "crack", "stain", "pit", "chip", "patch")
SURFACES: tuple[str, ...] = ("brushed", "cast", "woven")
SURFACE_CHOICES: tuple[str, ...] = ("mixed", *SURFACES)

def _knob(default, lo, hi, step, help, unit=""):
    """A DefectConfig field with the range a slider may move it in (a tuple default is a (low, high) range)."""
    return field(default=default, metadata={"range": (lo, hi), "step": step, "help": help, "unit": unit})


@dataclass(frozen=True)
class DefectConfig:
    """Every knob of the generator. Pairs are ``(low, high)`` ranges: each image draws uniformly between them.

    Set ``low == high`` to fix a value. Counts are drawn per image; an image is defect-free with probability
    ``defect_free`` (real inspection lines see mostly good parts). Invalid values raise ``ValueError`` naming the
    field, the allowed range and the value received.
    """

    size: int = _knob(256, 32, 1024, 32, "image side", "px")
    surface: str = field(default="mixed", metadata={"choices": SURFACE_CHOICES,
                                                     "help": "surface kind ('mixed' picks one per image)"})
    brightness: tuple[float, float] = _knob((70.0, 170.0), 30.0, 220.0, 1.0, "mean surface gray", "gray levels")
    texture_contrast: tuple[float, float] = _knob((4.0, 12.0), 0.0, 40.0, 0.5, "texture strength (std)",
                                                  "gray levels")
    texture_scale: tuple[float, float] = _knob((0.75, 1.5), 0.25, 4.0, 0.05, "texture grain size (x1 = default)")
    illumination: tuple[float, float] = _knob((0.0, 40.0), 0.0, 100.0, 1.0, "uneven lighting, peak to peak",
                                              "gray levels")
    edge_shading: tuple[float, float] = _knob((0.0, 0.0), 0.0, 120.0, 1.0,
                                              "shadow or glare band along an image edge", "gray levels")
    distractors: tuple[int, int] = _knob((0, 0), 0, 8, 1, "unlabelled look-alikes: long faint streaks")
    scratches: tuple[int, int] = _knob((0, 2), 0, 8, 1, "scratches per image")
    scratch_width: tuple[float, float] = _knob((1.0, 3.0), 1.0, 6.0, 0.5, "scratch width", "px")
    scratch_contrast: tuple[float, float] = _knob((50.0, 100.0), 10.0, 150.0, 1.0,
                                                  "scratch contrast (lighter or darker)", "gray levels")
    cracks: tuple[int, int] = _knob((0, 1), 0, 5, 1, "cracks per image")
    crack_width: tuple[float, float] = _knob((2.0, 4.0), 1.0, 8.0, 0.5, "crack width at its root", "px")
    crack_length: tuple[float, float] = _knob((70.0, 170.0), 10.0, 400.0, 5.0, "crack length", "px")
    crack_contrast: tuple[float, float] = _knob((50.0, 110.0), 10.0, 150.0, 1.0, "crack darkening", "gray levels")
    crack_branching: float = _knob(0.4, 0.0, 1.0, 0.05, "how often a crack branches (0 = never)")
    stains: tuple[int, int] = _knob((0, 1), 0, 5, 1, "stains per image")
    stain_size: tuple[float, float] = _knob((10.0, 28.0), 4.0, 120.0, 1.0, "stain radius", "px")
    stain_contrast: tuple[float, float] = _knob((35.0, 75.0), 10.0, 150.0, 1.0,
                                                "stain contrast (lighter or darker)", "gray levels")
    pits: tuple[int, int] = _knob((0, 0), 0, 8, 1, "pits and pores per image (dark core, bright rim)")
    pit_size: tuple[float, float] = _knob((2.0, 8.0), 1.0, 30.0, 0.5, "pit radius", "px")
    pit_contrast: tuple[float, float] = _knob((30.0, 90.0), 10.0, 150.0, 1.0, "pit darkening", "gray levels")
    pit_rim: tuple[float, float] = _knob((0.0, 0.4), 0.0, 1.0, 0.05, "pit rim brightening (x the darkening)")
    chips: tuple[int, int] = _knob((0, 0), 0, 3, 1, "chips and breaks at an image edge")
    chip_size: tuple[float, float] = _knob((10.0, 40.0), 4.0, 120.0, 1.0, "chip radius", "px")
    chip_contrast: tuple[float, float] = _knob((25.0, 90.0), 10.0, 150.0, 1.0,
                                               "chip contrast (mostly darker)", "gray levels")
    patches: tuple[int, int] = _knob((0, 0), 0, 3, 1, "large faint patches (uneven finish, wear)")
    patch_size: tuple[float, float] = _knob((30.0, 90.0), 10.0, 300.0, 1.0, "patch radius", "px")
    patch_contrast: tuple[float, float] = _knob((8.0, 30.0), 2.0, 80.0, 1.0,
                                                "patch contrast (lighter or darker)", "gray levels")
    patch_texture: tuple[float, float] = _knob((-0.5, 0.8), -1.0, 2.0, 0.05,
                                               "texture change inside a patch (-1 smooth, 0 same, 1 twice as rough)")
    defect_free: float = _knob(0.1, 0.0, 1.0, 0.05, "share of images without any defect")
    blur_sigma: tuple[float, float] = _knob((0.4, 1.0), 0.0, 3.0, 0.05, "optical blur sigma", "px")
    noise: tuple[float, float] = _knob((2.0, 5.0), 0.0, 25.0, 0.5, "sensor noise std", "gray levels")
    background_shift: tuple[float, float] = _knob((-20.0, 20.0), -100.0, 100.0, 1.0,
                                                  "brightness shift of a real background", "gray levels")
    background_gain: tuple[float, float] = _knob((0.8, 1.25), 0.25, 4.0, 0.05,
                                                 "contrast gain of a real background (x1 = as shot)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            # Lists (from JSON or a slider) become tuples, so configs stay hashable and compare equal.
            object.__setattr__(self, f.name, _validated(f, getattr(self, f.name)))

    def replace(self, **changes) -> "DefectConfig":
        """A copy with some knobs changed (validated), e.g. ``cfg.replace(cracks=(1, 1))``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DefectConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys keep their defaults."""
        if not isinstance(d, dict):
            raise ValueError(f"DefectConfig.from_dict expects a dict of knobs (as to_dict writes it); "
                             f"got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"DefectConfig has no field(s) {unknown}; known fields: {sorted(names)}")
        return cls(**d)


    @property
    def n_classes(self) -> int:
        """Class ids this config can draw, background included: 1 + the highest id of a kind whose count can
        be above 0 (4 for the tutorial's scratch, crack and stain; up to ``len(CLASS_NAMES)``). A multi-class
        model of this data needs this many outputs."""
        drawn = [CLASS_NAMES.index(name) for name, knob, _ in _DEFECT_KINDS if getattr(self, knob)[1] > 0]
        return 1 + max(drawn, default=0)

    @classmethod
    def preset(cls, name: str, **changes) -> "DefectConfig":
        """A named starting point (see :data:`PRESETS`), with any knob changed, e.g.
        ``DefectConfig.preset("randomized", size=128)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown DefectConfig preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **changes})


# Named configs. "default" is the tutorial's learnable teaching set-up (clear defects, moderate lighting).
# "randomized" is domain randomisation for sim-to-real transfer: much wider surface, lighting, contrast, blur and
# noise ranges, shadowed or glaring edges and unlabelled streaks, so that a real camera image looks like one more
# variation rather than something new. Defects get fainter (down to 15-25 gray levels) because real ones are.
PRESETS: dict[str, dict] = {
    "default": {},
    "randomized": dict(
        brightness=(40.0, 210.0), texture_contrast=(2.0, 25.0), texture_scale=(0.5, 3.0),
        illumination=(0.0, 100.0), edge_shading=(0.0, 80.0), distractors=(0, 4),
        scratch_contrast=(25.0, 100.0), crack_contrast=(20.0, 110.0), crack_width=(1.5, 5.0),
        stain_size=(10.0, 50.0), stain_contrast=(15.0, 75.0),
        blur_sigma=(0.3, 2.0), noise=(1.0, 12.0),
    ),
    # For naming defects (chapter 07). A crack tapers to a 1 px hairline, and by default a scratch can be 1 px wide
    # too: there the two look the same and no model tells them apart. Here scratches are at least 2 px wide, so
    # the hairline is a crack's alone. Everything else is the default.
    "multiclass": dict(scratch_width=(2.0, 3.0)),
    # For real use (``unetlab pretrain``): the randomised world plus the defect kinds real inspection sees (pits,
    # chips at an edge, large faint patches), all fainter than the tutorial's, and a few more clean images.
    # Measured on real images in the README ("Sim to real"), where the ablation of each kind is.
    "transfer": dict(
        brightness=(40.0, 210.0), texture_contrast=(2.0, 25.0), texture_scale=(0.5, 3.0),
        illumination=(0.0, 60.0), edge_shading=(0.0, 60.0), distractors=(0, 3),
        scratch_contrast=(20.0, 90.0), crack_contrast=(20.0, 100.0), crack_width=(1.5, 5.0),
        stain_size=(10.0, 50.0), stain_contrast=(12.0, 60.0),
        pits=(0, 3), pit_contrast=(20.0, 90.0), chips=(0, 1), patches=(0, 1),
        defect_free=0.15, blur_sigma=(0.3, 1.5), noise=(1.0, 8.0),
    ),
}


def _validated(f: dataclasses.Field, value):
    """``value`` checked against the field's metadata; pairs are returned as tuples."""
    name, default = f.name, f.default
    if "choices" in f.metadata:
        if value not in f.metadata["choices"]:
            raise ValueError(f"DefectConfig.{name} must be one of {f.metadata['choices']}; got {value!r}")
        return value
    lo, hi = f.metadata["range"]
    is_pair = isinstance(default, tuple)
    kind = type(default[0] if is_pair else default)
    expected = f"a (low, high) pair of {kind.__name__}s in [{lo}, {hi}]" if is_pair else f"{kind.__name__} in [{lo}, {hi}]"
    if is_pair and not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"DefectConfig.{name} must be {expected}; got {value!r}")
    parts = tuple(value) if is_pair else (value,)
    for v in parts:
        number = is_int(v) if kind is int else is_real(v)
        if not number or not (lo <= v <= hi):  # NaN fails lo <= v
            raise ValueError(f"DefectConfig.{name} must be {expected}; got {value!r}")
    parts = tuple(kind(v) for v in parts)
    if is_pair and parts[0] > parts[1]:
        raise ValueError(f"DefectConfig.{name} must have low <= high; got {value!r}")
    return parts if is_pair else parts[0]


# --------------------------------------------------------------------------------------------------------------
# Random streams


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` of a dataset with ``seed``: depends on (seed, index) only."""
    if not (is_int(seed) and is_int(index)) or seed < 0 or index < 0:
        raise ValueError(f"sample_rng expects non-negative integers (seed, index); got ({seed!r}, {index!r})")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _streams(seed_or_rng) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Three independent streams (surface, defects, noise), so removing defects leaves surface and noise as is."""
    if isinstance(seed_or_rng, np.random.Generator):
        root = seed_or_rng
    elif is_int(seed_or_rng) and seed_or_rng >= 0:
        root = np.random.default_rng(int(seed_or_rng))
    else:
        raise ValueError(f"make_sample expects a non-negative int seed or a numpy Generator; got {seed_or_rng!r}")
    seeds = root.integers(0, 2**63, size=3)
    return tuple(np.random.default_rng(int(s)) for s in seeds)


def _uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    """A uniform draw from ``pair``. It always draws one number, also when low == high, so fixing one knob
    leaves every later draw of the same stream (and so every shape) as it was."""
    lo, hi = pair
    return float(rng.uniform(lo, hi))


def _count(rng: np.random.Generator, pair: tuple[int, int]) -> int:
    """A uniform integer in [low, high]; always one draw, as in :func:`_uniform`."""
    lo, hi = pair
    return int(rng.integers(lo, hi + 1))


@lru_cache(maxsize=4)
def _noise_bank(side: int) -> np.ndarray:
    """A fixed field of N(0, 1) values, ``side`` x ``side`` float32, drawn once from a constant seed.

    Drawing 65k normal numbers costs about as much as the rest of a sample; a window of this bank at a random
    offset (chosen by the sample's own stream) is as good as fresh noise for training and 50x cheaper.
    The bank depends on nothing but ``side``, so samples stay reproducible across processes.
    """
    bank = np.random.default_rng(20261125).standard_normal((side, side), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def noise_window(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An (h, w) float32 view (read-only: copy before writing) of N(0, 1) noise from the bank at a random offset."""
    bank = _noise_bank(max(1024, 2 * max(h, w)))
    y, x = rng.integers(0, (bank.shape[0] - h + 1, bank.shape[1] - w + 1))
    return bank[y:y + h, x:x + w]


def _upsample(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Smooth upsampling of a small float32 array to (h, w) (bicubic: no blocky creases)."""
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_CUBIC)


# --------------------------------------------------------------------------------------------------------------
# Surfaces: each returns a zero-mean texture of roughly unit std, (n, n) float32.


def _fbm(rng: np.random.Generator, n: int, cell: float, octaves: int = 4) -> np.ndarray:
    """Fractal noise: octaves of smooth noise, coarse to fine, each half the cell size and 0.6x the amplitude.

    Each level is the previous one upsampled 2x with a Gaussian (``cv2.pyrUp``) plus fresh noise, so only small
    arrays of random numbers are needed, never a large blur at full size.
    """
    side = max(2, round(n / cell))
    g = noise_window(rng, side, side).copy()
    for _ in range(octaves - 1):
        g = cv2.pyrUp(g)
        cv2.scaleAdd(noise_window(rng, *g.shape), 0.6, g, dst=g)
    return cv2.resize(g, (n, n), interpolation=cv2.INTER_LINEAR)


def _brushed(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Brushed metal: streaks along one axis (smooth along it, fast across it) over a faint mottle."""
    along = max(2, round(n / (48 * scale)))
    across = max(2, round(n / scale))
    if rng.random() < 0.5:  # horizontal streaks
        streaks = cv2.resize(noise_window(rng, across, along), (n, n), interpolation=cv2.INTER_LINEAR)
    else:  # vertical streaks
        streaks = cv2.resize(noise_window(rng, along, across), (n, n), interpolation=cv2.INTER_LINEAR)
    return cv2.scaleAdd(_fbm(rng, n, 64 * scale, octaves=2), 0.6, streaks)


def _cast(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Cast or sand-blasted metal: isotropic fractal grain plus sparse dark pits."""
    tex = _fbm(rng, n, 32 * scale, octaves=4)
    tex[noise_window(rng, n, n) < -3.1] -= 2.5  # pits on ~0.1% of the pixels
    return tex


def _woven(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Woven fabric or carbon-fibre weave: threads over-under in a checkerboard, modulated by slow noise.

    Warp threads run along y (brightness |sin| across x), weft threads along x; where both sines have the same
    sign the warp lies on top. Written as sums of outer products of 1-D profiles, so it costs a few array ops:
    weave = (A + B)/2 + sign(sx) sign(sy) (A - B)/2 with A = |sx| per column and B = |sy| per row.
    """
    period = float(rng.uniform(10, 16)) * scale
    t = np.arange(n, dtype=np.float32) * np.float32(math.pi / period)
    sx, sy = np.sin(t + np.float32(rng.uniform(0, math.pi))), np.sin(t + np.float32(rng.uniform(0, math.pi)))
    a, b, px, py = np.abs(sx), np.abs(sy), np.sign(sx), np.sign(sy)
    weave = np.add.outer(b, a)
    weave += np.multiply.outer(py, px * a)
    weave -= np.multiply.outer(py * b, px)
    weave -= np.float32(1.25)
    return cv2.scaleAdd(_fbm(rng, n, 64 * scale, octaves=2), 0.3, weave)


_SURFACE_MAKERS = {"brushed": _brushed, "cast": _cast, "woven": _woven}


def _add_lighting(img: np.ndarray, rng: np.random.Generator, mean: float, peak_to_peak: float) -> None:
    """Add a brightness field to ``img`` (in place): ``mean`` plus a random ramp and an off-centre vignette,
    ``peak_to_peak`` in all.

    Both the ramp and the vignette are separable in x and y, so the field is the sum of a column profile and a
    row profile: two broadcast additions, no full-size temporary.
    """
    n = img.shape[0]
    u = np.arange(n, dtype=np.float32) * np.float32(1 / n) - np.float32(0.5)
    angle, strength = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.5, 2.0))
    cy, cx = (float(v) for v in rng.uniform(-0.4, 0.4, size=2))
    fy = u * math.sin(angle) - strength * (u - cy) ** 2
    fx = u * math.cos(angle) - strength * (u - cx) ** 2
    lo, hi = float(fy.min() + fx.min()), float(fy.max() + fx.max())
    k = peak_to_peak / (hi - lo + 1e-6)
    img += ((fy - (lo + hi) / 2) * np.float32(k) + np.float32(mean))[:, None]
    img += fx * np.float32(k)


def _surface(cfg: DefectConfig, rng: np.random.Generator, backgrounds: Backgrounds | None = None) -> np.ndarray:
    """(size, size) float32 surface in [0, 1] units (1/255 per gray level), before defects, blur and noise:
    a procedural texture, or a window of a real background when ``backgrounds`` is given."""
    n = cfg.size
    if backgrounds is None:
        kind = cfg.surface if cfg.surface != "mixed" else SURFACES[rng.integers(len(SURFACES))]
        img = _SURFACE_MAKERS[kind](rng, n, _uniform(rng, cfg.texture_scale))
        img *= np.float32(_uniform(rng, cfg.texture_contrast) / 255)
        mean = _uniform(rng, cfg.brightness) / 255
    else:
        img = backgrounds.window(rng, n, _uniform(rng, cfg.background_gain))
        mean = _uniform(rng, cfg.background_shift) / 255  # a real surface has its own mean: only shift it
    _add_lighting(img, rng, mean, _uniform(rng, cfg.illumination) / 255)
    if cfg.edge_shading[1] > 0:  # (the default configs draw nothing here)
        _add_edge_shading(img, rng, _uniform(rng, cfg.edge_shading) / 255)
    for _ in range(_count(rng, cfg.distractors)):
        _add_streak(img, rng)
    return img


class Backgrounds:
    """A bank of real defect-free images to paint defects on, instead of the procedural surfaces.

    Defect-free pictures of good parts are cheap on a real line; labels are not. Each sample takes a random
    ``size`` x ``size`` window of one image of the bank (mirror-padded where the image is smaller), flipped and
    transposed at random, with its contrast scaled about its mean by the ``background_gain`` knob and its
    brightness moved by ``background_shift``: one image gives many surfaces. The defects, the camera blur of
    the defects and the sensor noise then follow the same knobs as on a procedural surface.

    This class holds pixels only (numpy, no files): :func:`unetlab.real.load_backgrounds` reads a folder.

    Args:
        images: (H, W) grayscale images, float in [0, 1] or uint8 gray levels; any sizes (at least 2 x 2).
            They are kept as float32, in the given order (the same bank and seed give the same bytes).
    """

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        if isinstance(images, np.ndarray) and images.ndim == 2:
            raise ValueError("Backgrounds expects a sequence of (H, W) images; got a single (H, W) array "
                             "(wrap it in a list)")
        self.images = [gray_image(image, f"Backgrounds: image {k}", uint8=True) for k, image in enumerate(images)]
        if not self.images:
            raise ValueError("Backgrounds needs at least one image; got none")
        small = [k for k, image in enumerate(self.images) if min(image.shape) < 2]
        if small:
            raise ValueError(f"Backgrounds needs images of at least 2 x 2 pixels; image {small[0]} is "
                             f"{self.images[small[0]].shape}")

    def __len__(self) -> int:
        return len(self.images)

    def window(self, rng: np.random.Generator, size: int, gain: float = 1.0) -> np.ndarray:
        """A random (size, size) float32 window of one image in [0, 1] units, flipped and transposed at random,
        its deviation from its own mean multiplied by ``gain`` (values may leave [0, 1]; the sample is clipped
        at the end)."""
        image = self.images[int(rng.integers(len(self.images)))]
        h, w = image.shape
        if h < size or w < size:
            image = np.pad(image, ((0, max(0, size - h)), (0, max(0, size - w))), mode="reflect")
            h, w = image.shape
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        win = image[y:y + size, x:x + size]
        flip_x, flip_y, turn = rng.random(3) < 0.5
        win = win[::-1 if flip_y else 1, ::-1 if flip_x else 1]
        win = np.array(win.T if turn else win, dtype=np.float32)
        mean = np.float32(win.mean())
        win -= mean
        win *= np.float32(gain)
        win += mean
        return win


def _add_edge_shading(img: np.ndarray, rng: np.random.Generator, depth: float) -> None:
    """Darken (shadow) or lighten (glare) a band along one image edge, in place, fading smoothly inwards.

    Real parts are often photographed with a shadowed rim or a bright bevel; a model that never saw one takes
    the rim for a defect. The band is 3-20% of the side wide and reaches ``depth`` (in [0, 1] units) at the edge.
    """
    n = img.shape[0]
    width = float(rng.uniform(0.03, 0.2)) * n
    profile = np.exp(-np.arange(n, dtype=np.float32) / np.float32(width / 2)) * np.float32(depth)
    profile *= np.float32(rng.choice([-1.0, 1.0]))
    side = int(rng.integers(4))
    profile = profile if side < 2 else profile[::-1]  # from the first or from the last row/column
    if side % 2 == 0:
        img += profile[:, None]
    else:
        img += profile[None, :]


def _add_streak(img: np.ndarray, rng: np.random.Generator) -> None:
    """A long, soft, low-contrast band right across the image (polishing mark, seam, reflection), in place.

    It is unlabelled on purpose: unlike a scratch it is wide, blurry and faint, and it crosses the whole image.
    """
    n = img.shape[0]
    width = float(rng.uniform(2.0, 12.0))
    contrast = float(rng.uniform(5.0, 25.0)) / 255 * rng.choice([-1.0, 1.0])
    centre = float(rng.uniform(0, n))
    t = np.arange(n, dtype=np.float32) - np.float32(centre)
    profile = np.exp(-0.5 * (t / np.float32(width / 2)) ** 2) * np.float32(contrast)
    if rng.random() < 0.5:
        img += profile[None, :]  # vertical streak
    else:
        img += profile[:, None]


# --------------------------------------------------------------------------------------------------------------
# Defects: each draws its coverage (0..255 uint8, anti-aliased) or alpha and returns it with a window.

_SHIFT = 4  # sub-pixel precision for OpenCV drawing: coordinates in 1/16 px


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << _SHIFT)).astype(np.int32)


_PATH_T = np.linspace(-0.5, 0.5, 12, dtype=np.float32)[:, None]  # where along a scratch its 12 points lie


def _scratch_path(rng: np.random.Generator, n: int) -> np.ndarray:
    """A long, straight or gently curved path: (k, 2) float32 points (x, y) in pixels."""
    length = rng.uniform(0.3, 0.9) * n
    angle = rng.uniform(0, math.pi)
    d = np.array([math.cos(angle), math.sin(angle)], np.float32)
    normal = np.array([-d[1], d[0]], np.float32)
    centre = rng.uniform(0.15 * n, 0.85 * n, size=2).astype(np.float32)
    t = _PATH_T
    sag = rng.uniform(-0.08, 0.08) * length  # bow of the arc at its middle
    return centre + t * length * d + (1 - 4 * t**2) * sag * normal


def _draw_line(canvas: np.ndarray, path: np.ndarray, width: float) -> None:
    """An anti-aliased polyline whose core (coverage >= 1/2) is ``round(width)`` px wide.

    OpenCV's thick anti-aliased lines grow in odd steps (thickness 1, 2, 3 give cores of 1, 3, 5 px), so a
    ``k`` px line is drawn as ``k`` one-pixel lines side by side, 1 px apart across the path.
    """
    d = path[-1] - path[0]
    normal = np.array([-d[1], d[0]], np.float32) / np.float32(np.hypot(*d) + 1e-6)
    k = max(1, round(width))
    for offset in np.arange(k, dtype=np.float32) - np.float32((k - 1) / 2):
        cv2.polylines(canvas, [_fixed(path + offset * normal)], False, 255, 1, cv2.LINE_AA, _SHIFT)


def _draw_scratch(canvas: np.ndarray, rng: np.random.Generator, cfg: DefectConfig) -> None:
    width = _uniform(rng, cfg.scratch_width)
    path = _scratch_path(rng, cfg.size)
    _draw_line(canvas, path, width)
    if rng.random() < 0.25:  # a parallel twin, as two tips of one tool leave
        d = path[-1] - path[0]
        normal = np.array([-d[1], d[0]], np.float32) / np.float32(np.hypot(*d) + 1e-6)
        _draw_line(canvas, path + normal * np.float32(rng.uniform(width + 2.5, width + 6) * rng.choice([-1, 1])),
                   width)


def _crack_branch(canvas, rng, start, heading, width, length, branching, depth) -> None:
    """A random walk with a persistent heading, width tapering from ``width`` to 1 px, spawning thinner branches."""
    step = 3.0
    steps = max(2, int(length / step))
    turn = np.cumsum(rng.normal(0, 0.22, steps))  # heading drifts: jagged but going somewhere
    turn -= np.arange(steps) * (0.5 * turn[-1] / steps)  # half the drift undone: cracks stay elongated
    headings = heading + turn
    moves = np.stack([np.cos(headings), np.sin(headings)], 1) * step
    moves += rng.normal(0, 0.6, moves.shape)  # small kinks
    path = np.vstack([start, start + np.cumsum(moves, 0)]).astype(np.float32)
    widths = width * (1 - np.arange(steps + 1) / (steps + 1)) ** 0.7
    # Segments grouped by integer thickness: one polylines call per group instead of one line call per step.
    thick = (widths / 2 + 1).astype(int)  # OpenCV thickness t draws a core of ~2t-1 px
    cuts = np.flatnonzero(np.diff(thick)) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(path)]):
        seg = path[max(0, a - 1):b]
        if len(seg) >= 2:
            cv2.polylines(canvas, [_fixed(seg)], False, 255, int(thick[a]), cv2.LINE_AA, _SHIFT)
    if depth >= 2 or branching <= 0:
        return
    n_children = rng.poisson(branching * 2.0 * length / 120)
    for _ in range(min(n_children, 3)):
        i = int(rng.integers(steps // 5, max(steps // 5 + 1, 4 * steps // 5)))
        side = rng.choice([-1.0, 1.0])
        _crack_branch(canvas, rng, path[i], headings[min(i, steps - 1)] + side * rng.uniform(0.35, 1.0),
                      max(1.0, widths[i] * 0.7), length * rng.uniform(0.25, 0.55), branching, depth + 1)


def _draw_crack(canvas: np.ndarray, rng: np.random.Generator, cfg: DefectConfig) -> None:
    n = cfg.size
    start = rng.uniform(0.1 * n, 0.9 * n, size=2).astype(np.float32)
    length = _uniform(rng, cfg.crack_length)
    heading = rng.uniform(0, 2 * math.pi)
    width = _uniform(rng, cfg.crack_width)
    # Cracks grow both ways from where they start: two branches back to back.
    _crack_branch(canvas, rng, start, heading, width, length * 0.55, cfg.crack_branching, 0)
    _crack_branch(canvas, rng, start, heading + math.pi, width, length * 0.45, cfg.crack_branching, 0)


_DISK5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_u = np.linspace(-1.3, 1.3, 6, dtype=np.float32)
_BUMP = 1 - (_u[:, None] ** 2 + _u[None, :] ** 2)  # a 6x6 dome, > 0 inside radius 1; upsampled per stain


def _stain_alpha(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A square (2r+1)^2 float32 alpha map of an irregular, soft-edged blob; alpha > 0.5 inside.

    A bump (1 - r^2/R^2) plus low-frequency noise, thresholded softly: the noise makes lobes and bays, so the
    outline is irregular rather than an ellipse; the soft threshold feathers the edge over ~2 px.
    """
    side = 2 * int(math.ceil(radius * 1.3)) + 1
    field = _upsample(1.2 * _BUMP + 0.45 * noise_window(rng, *_BUMP.shape), side, side)
    # The field rises ~2.2/radius per pixel at the edge, so this gain spreads the 0..1 ramp of alpha over ~2.5 px.
    gain = radius / 5
    alpha = np.clip(field * gain + 0.5, 0, 1)
    # Keep the feather only within 2 px of the core: faint lobes that never reach 0.5 would be visible but
    # unlabelled, and the mask must tell the truth.
    alpha *= cv2.dilate((alpha > 0.5).view(np.uint8), _DISK5)
    return alpha


def _place(n: int, side: int, centre: np.ndarray) -> tuple[slice, slice, slice, slice]:
    """Image and patch slices for a ``side`` x ``side`` patch centred at ``centre`` (x, y), clipped to the image."""
    x0, y0 = int(centre[0]) - side // 2, int(centre[1]) - side // 2
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, n), min(y0 + side, n)
    return (slice(iy0, iy1), slice(ix0, ix1), slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))


def _draw_pit(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cfg: DefectConfig) -> None:
    """A pit or pore (blowhole, inclusion, pinhole): a small dark ellipse, deepest in the middle, with an
    optional bright rim where its edge catches the light. Label 4 where the core covers >= 1/2 of a pixel; the
    rim stays unlabelled (it is the surface around the hole, and it changes the image by less than the core)."""
    n = cfg.size
    radius, aspect, angle = _uniform(rng, cfg.pit_size), float(rng.uniform(1.0, 1.8)), float(rng.uniform(0, math.pi))
    depth = _uniform(rng, cfg.pit_contrast) / 255
    rim = _uniform(rng, cfg.pit_rim) * depth
    half = int(math.ceil(radius * aspect)) + 4
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / aspect
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    outside = np.sqrt(u * u + v * v) - np.float32(radius)  # beyond the edge, in px across the short axis
    core = np.clip(0.5 - outside, 0, 1)  # 1 px anti-aliased edge: coverage 1/2 on the ellipse
    bowl = np.clip(1 - (outside / radius + 1) ** 2, 0, 1)  # deepest in the middle
    away = cv2.distanceTransform((core < 0.5).view(np.uint8), cv2.DIST_L2, 3)  # true px from the core
    ring = np.exp(-0.5 * ((away - 1.0) / 0.7) ** 2) * (1 - core)
    delta = -depth * core * (0.6 + 0.4 * bowl) + np.float32(rim) * ring
    iy, ix, py, px = _place(n, delta.shape[0], rng.uniform(0, n, size=2))
    img[iy, ix] += delta[py, px]
    labels[iy, ix][core[py, px] >= 0.5] = 4


def _draw_chip(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cfg: DefectConfig) -> None:
    """A chip or break at an edge of the part (here: the image edge): an irregular bite centred on the edge,
    where material is missing, so the texture is gone and the gray level jumps (mostly darker). Label 5."""
    n = cfg.size
    radius = _uniform(rng, cfg.chip_size)
    alpha = _stain_alpha(rng, radius)
    along = float(rng.uniform(0.1, 0.9)) * n
    centre = [(along, 0.0), (n - 1.0, along), (along, n - 1.0), (0.0, along)][int(rng.integers(4))]
    iy, ix, py, px = _place(n, alpha.shape[0], np.array(centre))
    a = alpha[py, px]
    patch = img[iy, ix]
    polarity = 1.0 if rng.random() < 0.25 else -1.0
    flat = cv2.GaussianBlur(patch, (0, 0), 3.0)
    patch += (flat - patch) * (np.float32(0.8) * a)  # a fracture face or a hole: no surface grain
    patch += np.float32(polarity * _uniform(rng, cfg.chip_contrast) / 255) * a
    labels[iy, ix][a > 0.5] = 5


def _draw_patch(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cfg: DefectConfig) -> None:
    """A large, faint patch (uneven finish, wear, discoloration, mura): an irregular blob a little lighter or
    darker than its surroundings, whose texture is smoother (``patch_texture`` < 0) or rougher (> 0) than the
    rest. Label 6 where its alpha is > 1/2, as for stains."""
    n = cfg.size
    alpha = _stain_alpha(rng, _uniform(rng, cfg.patch_size))
    contrast = _uniform(rng, cfg.patch_contrast) / 255 * rng.choice([-1.0, 1.0])
    texture = _uniform(rng, cfg.patch_texture)
    iy, ix, py, px = _place(n, alpha.shape[0], rng.uniform(0, n, size=2))
    a = alpha[py, px]
    patch = img[iy, ix]
    grain = patch - cv2.GaussianBlur(patch, (0, 0), 2.0)
    patch += grain * (np.float32(texture) * a)
    patch += np.float32(contrast) * a
    labels[iy, ix][a > 0.5] = 6


def _draw_stain(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cfg: DefectConfig) -> None:
    """An irregular, soft-edged blob, lighter or darker, that hides the grain under it. Label 3."""
    n = cfg.size
    radius = _uniform(rng, cfg.stain_size)
    alpha = _stain_alpha(rng, radius)
    contrast = _uniform(rng, cfg.stain_contrast) / 255 * rng.choice([-1.0, 1.0])
    mottle = 1 + 0.25 * _upsample(noise_window(rng, 4, 4), *alpha.shape)  # stains are not flat inside
    iy, ix, py, px = _place(n, alpha.shape[0], rng.uniform(0, n, size=2))
    a = alpha[py, px]
    patch = img[iy, ix]
    # A deposit hides the grain under it: pull the texture towards its local mean. This is also what makes a
    # stain's middle recognisable from nearby pixels alone, without seeing its edge.
    smooth = cv2.GaussianBlur(patch, (0, 0), 3.0)
    patch += (smooth - patch) * (np.float32(rng.uniform(0.5, 0.9)) * a)
    patch += np.float32(contrast) * a * mottle[py, px]
    labels[iy, ix][a > 0.5] = 3


def _line_drawer(label: int, draw, contrast_of, sign: float | None):
    """A drawer for a line-like defect (crack, scratch): coverage drawn on a canvas, then added as contrast."""
    def drawer(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cfg: DefectConfig) -> None:
        canvas = np.zeros(img.shape, np.uint8)
        draw(canvas, rng, cfg)
        polarity = sign if sign is not None else rng.choice([-1.0, 1.0])
        contrast = polarity * _uniform(rng, contrast_of(cfg)) / 255
        x, y, w, h = cv2.boundingRect(canvas)  # work only where the defect was drawn
        box = np.s_[y:y + h, x:x + w]
        cv2.addWeighted(canvas[box], contrast / 255, img[box], 1.0, 0.0, dst=img[box], dtype=cv2.CV_32F)
        labels[box][canvas[box] > 127] = label
    return drawer


# Defect kinds in the order they are painted, each with its count knob and drawer. Where defects overlap, the
# one painted later keeps its label, so a thin scratch across a stain stays a scratch: large faint ones lie
# underneath, thin sharp ones on top. The label of each kind is its index in CLASS_NAMES.
_DEFECT_KINDS = (
    ("patch", "patches", _draw_patch),
    ("chip", "chips", _draw_chip),
    ("stain", "stains", _draw_stain),
    ("pit", "pits", _draw_pit),
    ("crack", "cracks", _line_drawer(2, _draw_crack, lambda cfg: cfg.crack_contrast, -1.0)),
    ("scratch", "scratches", _line_drawer(1, _draw_scratch, lambda cfg: cfg.scratch_contrast, None)),
)


def _add_defects(img: np.ndarray, cfg: DefectConfig, rng: np.random.Generator) -> np.ndarray:
    """Paint defects onto ``img`` ((size, size) float32, in place); return their (size, size) uint8 labels.

    Every random choice comes from its own stream, keyed by what it decides: whether the image is defect-free,
    each kind's count, and defect j of each kind. So moving one knob re-draws only what it governs: adding a
    crack (cracks 0-1 -> 1-1) leaves every stain and scratch where it was, and the first crack keeps its path.
    """
    labels = np.zeros(img.shape, np.uint8)
    root = int(rng.integers(2**63))

    def stream(*key: int) -> np.random.Generator:
        return np.random.default_rng([root, *key])

    if stream(0).random() < cfg.defect_free:
        return labels
    ids = {name: CLASS_NAMES.index(name) for name, _, _ in _DEFECT_KINDS}
    counts = {name: _count(stream(1, ids[name]), getattr(cfg, knob)) for name, knob, _ in _DEFECT_KINDS}
    possible = [name for name, knob, _ in _DEFECT_KINDS if getattr(cfg, knob)[1] > 0]
    if sum(counts.values()) == 0 and possible:  # only the defect_free knob decides which images are empty
        counts[possible[int(stream(2).integers(len(possible)))]] = 1
    for name, _, draw in _DEFECT_KINDS:
        for j in range(counts[name]):
            draw(img, labels, stream(3, ids[name], j), cfg)
    return labels


# --------------------------------------------------------------------------------------------------------------


def make_sample(cfg: DefectConfig | None = None, seed_or_rng: int | np.random.Generator = 0, *,
                defects: bool = True, backgrounds: Backgrounds | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its per-pixel labels.

    Args:
        cfg: the generator's knobs; ``None`` means ``DefectConfig()``.
        seed_or_rng: a non-negative int seed or a ``numpy.random.Generator`` (which is advanced).
        defects: ``False`` renders the very same surface, blur and noise without any defect, which shows what
            the defects changed (``image - clean``).
        backgrounds: paint on windows of these real defect-free images (see :class:`Backgrounds`) instead of
            a procedural surface; the surface knobs (``surface``, ``brightness``, ``texture_*``) are then
            unused and ``background_gain`` / ``background_shift`` vary the windows. A real picture has been
            through a camera already, so only the defects are blurred; noise is added as configured.

    Returns:
        image: (size, size) float32 in [0, 1].
        labels: (size, size) uint8 class ids: 0 background, then the defect kinds of :data:`CLASS_NAMES`
            (1 scratch, 2 crack, 3 stain, 4 pit, 5 chip, 6 patch); the binary defect mask is ``labels > 0``.
    """
    if cfg is None:
        cfg = DefectConfig()
    elif not isinstance(cfg, DefectConfig):
        raise ValueError(f"make_sample expects a DefectConfig (or None); got {type(cfg).__name__}")
    if backgrounds is not None and not isinstance(backgrounds, Backgrounds):
        raise ValueError(f"make_sample expects backgrounds as a unetlab.Backgrounds (or None); got "
                         f"{type(backgrounds).__name__}: wrap the images, Backgrounds(images)")
    rng_surface, rng_defects, rng_noise = _streams(seed_or_rng)
    surface = _surface(cfg, rng_surface, backgrounds)
    img = surface.copy()
    labels = _add_defects(img, cfg, rng_defects) if defects else np.zeros((cfg.size, cfg.size), np.uint8)
    sigma = _uniform(rng_noise, cfg.blur_sigma)
    if sigma > 0:
        if backgrounds is None:  # the camera sees the whole procedural scene
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        else:  # the real background is a photograph already: blur only what was painted on it
            img = surface + cv2.GaussianBlur(img - surface, (0, 0), sigma)
    cv2.scaleAdd(noise_window(rng_noise, cfg.size, cfg.size), _uniform(rng_noise, cfg.noise) / 255, img, dst=img)
    np.clip(img, 0, 1, out=img)
    return img, labels
