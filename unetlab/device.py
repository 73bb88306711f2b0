"""Where and how the model runs: the device, mixed precision, the memory format, and one opt-in allocator setting.

The same code runs on CUDA, Apple's MPS and the CPU. :func:`default_device` picks the fastest one here;
:func:`autocast_dtype` and :func:`use_channels_last` turn the ``amp`` and ``channels_last`` arguments of
:func:`unetlab.fit` into what torch needs. :func:`keep_freed_memory_for_reuse` changes glibc's allocator for the
whole process, so the library never calls it by itself: ``unetlab demo`` and ``unetlab train`` do on a CPU (and
say so), and so do the notebooks that train.
"""

from __future__ import annotations

import ctypes
import platform
import sys

import torch

AMP_MODES = ("auto", "off", "fp16", "bf16")


def default_device() -> torch.device:
    """The fastest device here: ``cuda`` if available, else ``mps`` (Apple GPU), else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` that exists here; None picks :func:`default_device`.

    One clear ValueError for a name torch does not know ("gpu") or a device this machine or this PyTorch build
    lacks (``cuda`` on a CPU-only build, ``cuda:3`` on a one-GPU machine, ``mps`` off a Mac), instead of a torch
    error deep inside the first ``.to(device)``.
    """
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {str(device)!r}: expected cuda, cuda:N, mps or cpu") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            why = (f"this PyTorch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                   else f"{count} CUDA device(s) visible")
            raise ValueError(f"device {str(device)!r} is not available here: {why}; use 'cpu', or no device to "
                             f"get the fastest one ({default_device()})")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} is not available here: no Apple GPU (MPS); use 'cpu', or no "
                         f"device to get the fastest one ({default_device()})")
    return resolved


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (one of :data:`AMP_MODES`) on ``device``, or None for full float32.

    ``"auto"``: on CUDA bfloat16 where the GPU computes it natively (:func:`cuda_has_native_bf16`), else
    float16 (``fit`` scales its gradients); bfloat16 on a CPU that computes it natively (AMX or AVX-512 BF16,
    :func:`cpu_has_native_bf16`: about 1.7x the training speed there, same scores in our measurements); float32
    elsewhere (without them, bfloat16 on a CPU is emulated and slower); ``"bf16"``: bfloat16 anywhere;
    ``"fp16"``: float16, CUDA or MPS only; ``"off"``: float32.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}; got {amp!r}")
    if amp == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if device.type != "cuda":
            return None
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    if amp == "fp16" and device.type not in ("cuda", "mps"):
        raise ValueError(f"amp='fp16' needs a CUDA or MPS device; on {device.type} use amp='bf16' or 'off'")
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 products natively: AMX matrix units (Intel Sapphire Rapids and later)
    or the AVX-512 BF16 instructions (AMD Zen 4 and later, Intel Cooper Lake). PyTorch's own probes when it has
    them, else the ``amx_bf16`` / ``avx512_bf16`` flags of ``/proc/cpuinfo`` (Linux)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(probe is not None for probe in probes):
        try:
            return any(bool(probe()) for probe in probes)
        except RuntimeError:
            return False
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and (" amx_bf16" in line or " avx512_bf16" in line)
                       for line in info)
    except OSError:
        return False


def use_channels_last(channels_last: bool | str, device: torch.device) -> bool:
    """Whether to keep weights and activations channels-last: ``"auto"`` means on for CPU and CUDA (oneDNN's and
    cuDNN's fast convolution layout, about 2x on a CPU), off on MPS."""
    if channels_last == "auto":
        return device.type != "mps"
    if not isinstance(channels_last, bool):
        raise ValueError(f"channels_last must be True, False or 'auto'; got {channels_last!r}")
    return channels_last


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True when the CUDA ``device`` has bfloat16 arithmetic in hardware: compute capability 8.0 or later
    (Ampere: A100, RTX 30xx, and newer).

    ``torch.cuda.is_bf16_supported()`` is not the test: it is also True on older GPUs (a T4, capability 7.5, as
    on Colab's free tier) where bfloat16 runs through emulation, much slower than float16 on their tensor cores.
    """
    return torch.cuda.get_device_capability(device) >= (8, 0)


def keep_freed_memory_for_reuse() -> bool:
    """Opt-in, process-wide: ask glibc (Linux) to serve large tensors from its heap and keep freed memory.

    By default glibc returns every block above 32 MB to the kernel as soon as it is freed, and the kernel must
    zero fresh pages for the next one. One activation of a 256x256 batch of 8 at 16 channels is 33.5 MB, so every
    CPU training step paid that price again: measured on a 2-core CPU, 12 -> 17 training images/s (README,
    "Speed"). The price: the process keeps its peak memory instead of handing it back between steps, for as long
    as it runs, and the setting (``mallopt`` through ctypes) applies to all of the process, not only to unetlab.
    That is why nothing in the library calls it: ``unetlab demo`` and ``unetlab train`` turn it on for CPU
    training (``--no-keep-freed-memory`` leaves glibc's default), and the notebooks that train call it in
    their setup cell.

    Returns True when the setting is in effect (it is made once; later calls only report it), False where it does
    not apply (not Linux with glibc).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = False
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL(None)
            m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
            _MALLOC_TUNED = bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**30))
    return _MALLOC_TUNED


_MALLOC_TUNED: bool | None = None
