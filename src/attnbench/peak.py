"""The device's ceilings, to quote achieved TFLOP/s and GB/s against: measured once per process, and the
vendor's datasheet figure for cards we know."""

from __future__ import annotations

from functools import lru_cache

import torch

from attnbench.config import TimingConfig
from attnbench.timing import measure


# Dense (no sparsity) tensor-core TFLOP/s for fp16/bf16, plain fp32 TFLOP/s, and memory GB/s, by the
# name torch.cuda.get_device_name() reports.
DATASHEET = {
    "NVIDIA H100 80GB HBM3": {"float16": 989.4, "bfloat16": 989.4, "float32": 66.9, "gbps": 3350},  # SXM5
    "NVIDIA H100 PCIe": {"float16": 756.5, "bfloat16": 756.5, "float32": 51.2, "gbps": 2000},
    "NVIDIA H200": {"float16": 989.4, "bfloat16": 989.4, "float32": 66.9, "gbps": 4800},
    "NVIDIA A100-SXM4-80GB": {"float16": 312.0, "bfloat16": 312.0, "float32": 19.5, "gbps": 2039},
    "NVIDIA A100-SXM4-40GB": {"float16": 312.0, "bfloat16": 312.0, "float32": 19.5, "gbps": 1555},
}

MATMUL_SIZE = 8192
COPY_BYTES = 2**30


def datasheet(device_name: str, dtype: torch.dtype) -> dict[str, float]:
    figures = DATASHEET.get(device_name)
    if figures is None:
        return {}
    key = str(dtype).removeprefix("torch.")
    return {"datasheet_tflops": figures[key], "datasheet_gbps": figures["gbps"]} if key in figures else {}


def _median_event_ms(fn, device: torch.device, reps: int = 10) -> float:
    fn()  # warm-up: cuBLAS handle and heuristics, allocator
    cfg = TimingConfig(min_time_s=0.0, min_reps=reps, max_reps=reps, flush_l2=False)  # large: cache is moot
    return measure(fn, device, "events", cfg, per_call_estimate_s=1e-3).stats.median_us / 1e3


@lru_cache(maxsize=None)
def measured_peaks(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """A large matmul in the job's dtype and a 1 GiB device-to-device copy, timed with CUDA events.
    Random data, not zeros: tensor cores run measurably faster on zeros."""
    if device.type != "cuda":
        return {}
    n = MATMUL_SIZE if dtype.itemsize <= 2 else MATMUL_SIZE // 2
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    matmul_ms = _median_event_ms(lambda: a @ b, device)
    del a, b
    src = torch.randn(COPY_BYTES // 4, device=device)
    dst = torch.empty_like(src)
    copy_ms = _median_event_ms(lambda: dst.copy_(src), device)
    del src, dst
    torch.cuda.empty_cache()
    return {
        "device_peak_tflops": 2 * n**3 / (matmul_ms / 1e3) / 1e12,
        # read + write, as bandwidth tools count a copy
        "device_peak_gbps": 2 * COPY_BYTES / (copy_ms / 1e3) / 1e9,
    }
