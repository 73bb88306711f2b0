"""Device, precision and memory-format choices, and the opt-in allocator setting that nothing makes silently."""

from types import SimpleNamespace

import pytest
import torch

import unetlab
import unetlab.device as device
from unetlab.device import (autocast_dtype, default_device, keep_freed_memory_for_reuse, resolve_device,
                            use_channels_last)


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"),  # CUDA wins even where an Apple GPU is there too
    (False, True, "mps"),
    (False, False, "cpu"),
])
def test_default_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert default_device() == torch.device(expected)


def test_autocast_is_off_by_default_except_on_cuda_and_native_bf16_cpus(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("off", cuda) is None
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype("auto", cpu) == torch.bfloat16 and autocast_dtype("off", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="amp='fp16' needs a CUDA or MPS device"):
        autocast_dtype("fp16", cpu)


@pytest.mark.parametrize("capability, expected", [
    ((7, 5), torch.float16),  # T4 (Colab's free GPU): bfloat16 only through emulation
    ((7, 0), torch.float16),  # V100
    ((8, 0), torch.bfloat16),  # A100
    ((8, 6), torch.bfloat16),  # RTX 30xx
    ((9, 0), torch.bfloat16),  # H100 / H200
])
def test_auto_precision_on_cuda_is_bf16_only_where_the_gpu_has_it(monkeypatch, capability, expected):
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # as on a T4: emulation
    assert autocast_dtype("auto", torch.device("cuda:1")) == expected
    assert asked == [torch.device("cuda:1")]  # the GPU that trains, not whichever one is current
    assert autocast_dtype("bf16", torch.device("cuda")) == torch.bfloat16  # asking for it still gets it


def test_fp16_training_scales_the_gradients(monkeypatch):
    """Where "auto" picks float16, fit turns its gradient scaler on (float16 gradients underflow without it);
    bfloat16 has float32's range and needs none. (No GPU here: the scaler and autocast are recorded, not run.)"""
    from unetlab.model import UNet
    from unetlab.train import _Run

    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: SimpleNamespace(device=device,
                                                                                         enabled=enabled))
    monkeypatch.setattr(torch, "autocast", lambda device, dtype, enabled: SimpleNamespace(dtype=dtype))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    cuda = torch.device("cuda")
    for amp_dtype, scaled in ((autocast_dtype("auto", cuda), True), (torch.bfloat16, False)):
        run = _Run(UNet(base=4), None, device=cuda, amp_dtype=amp_dtype, lr=1e-3, scheduler=None, epochs=1,
                   steps_per_epoch=1, settings={})
        assert (run.scaler.device, run.scaler.enabled, run.autocast.dtype) == ("cuda", scaled, amp_dtype)


def test_channels_last_is_on_except_on_mps():
    assert use_channels_last("auto", torch.device("cpu")) and not use_channels_last("auto", torch.device("mps"))
    assert use_channels_last(False, torch.device("cpu")) is False
    with pytest.raises(ValueError, match="channels_last must be True, False or 'auto'"):
        use_channels_last("yes", torch.device("cpu"))


def test_training_never_changes_the_allocator_by_itself(monkeypatch):
    from torch.utils.data import DataLoader, TensorDataset

    from unetlab.model import UNet
    from unetlab.train import fit

    calls = []
    monkeypatch.setattr(device, "_MALLOC_TUNED", None)
    monkeypatch.setattr(device.ctypes, "CDLL", lambda *args: calls.append(args))  # would fail if it were called
    images = torch.rand(4, 1, 16, 16)
    fit(UNet(base=4), DataLoader(TensorDataset(images, (images > 0.5).float()), batch_size=2), epochs=1,
        device="cpu", progress=False)
    assert calls == [] and device._MALLOC_TUNED is None


def test_the_allocator_setting_is_made_once_and_then_only_reported(monkeypatch):
    class FakeLibc:
        def __init__(self):
            self.calls = []

        def mallopt(self, option, value):
            self.calls.append((option, value))
            return 1

    libc = FakeLibc()
    monkeypatch.setattr(device, "_MALLOC_TUNED", None)
    monkeypatch.setattr(device.sys, "platform", "linux")
    monkeypatch.setattr(device.platform, "libc_ver", lambda: ("glibc", "2.39"))
    monkeypatch.setattr(device.ctypes, "CDLL", lambda *args: libc)
    assert keep_freed_memory_for_reuse() is True and keep_freed_memory_for_reuse() is True
    assert libc.calls == [(-4, 0), (-1, 2**30)]  # M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 1 GiB, set once
    monkeypatch.setattr(device, "_MALLOC_TUNED", None)
    monkeypatch.setattr(device.platform, "libc_ver", lambda: ("", ""))  # musl, or not Linux: nothing to do
    assert keep_freed_memory_for_reuse() is False and len(libc.calls) == 2


def test_a_device_that_is_not_here_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device(None) == resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device 'cuda' is not available here: .*; use 'cpu'"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match=r"device 'mps' is not available here"):
        resolve_device(torch.device("mps"))
    with pytest.raises(ValueError, match=r"unknown device 'gpu': expected cuda, cuda:N, mps or cpu"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="device 'cuda' is not available here"):
        unetlab.fit(unetlab.UNet(base=2), [(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))], epochs=1,
                    device="cuda", progress=False)
    with pytest.raises(ValueError, match="device 'cuda' is not available here"):
        unetlab.predict(unetlab.UNet(base=2), torch.zeros(8, 8), device="cuda")


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, False, True), (False, True, True),
                                                         (False, False, False)])
def test_native_bf16_is_read_from_torch(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert device.cpu_has_native_bf16() is expected


@pytest.mark.parametrize("flags, expected", [("fpu avx512f amx_bf16 amx_tile", True), ("fpu avx512f avx512_bf16", True),
                                             ("fpu avx2 avx512f", False)])
def test_native_bf16_is_read_from_cpuinfo_without_torch_probes(monkeypatch, tmp_path, flags, expected):
    import builtins

    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(info if path == "/proc/cpuinfo" else path,
                                                                          *a, **k))
    assert device.cpu_has_native_bf16() is expected
