"""Where a job runs: device resolution, dtypes, synchronisation and the device's name."""

from __future__ import annotations

import platform
from functools import lru_cache

import torch

from attnbench.core.errors import Unsupported
from attnbench.core.spec import DeviceName, Dtype

TORCH_DTYPES = {Dtype.float16: torch.float16, Dtype.bfloat16: torch.bfloat16, Dtype.float32: torch.float32}


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def resolve_device(name: DeviceName) -> torch.device:
    if name is DeviceName.auto:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name is DeviceName.cuda and not torch.cuda.is_available():
        raise Unsupported(f"device=cuda but torch {torch.__version__} sees no CUDA device")
    if name is DeviceName.mps and not _mps_available():
        raise Unsupported("device=mps but the MPS backend is not available on this machine")
    return torch.device(name.value)


def check_dtype(device: torch.device, dtype: torch.dtype) -> None:
    """Refuse a dtype the device cannot run, before anything is allocated."""
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise Unsupported(f"dtype=bfloat16 needs compute capability 8.0 or newer; "
                          f"{torch.cuda.get_device_name(device)} has {torch.cuda.get_device_capability(device)}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@lru_cache(maxsize=None)
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple {platform.machine()} (MPS)"
    return cpu_model()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
