"""The device's ceilings, to quote achieved TFLOP/s and GB/s against: measured once per GPU of a sweep (kept in
the sweep folder, for every process that runs jobs on that GPU), and the vendor's datasheet figure for cards we
know."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from attnbench.core.files import write_atomically
from attnbench.core.spec import Timing
from attnbench.core.timing.timer import measure

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
    cfg = Timing(min_time_s=0.0, min_reps=reps, max_reps=reps, flush_l2=False)  # large: cache is moot
    return measure(fn, device, "events", cfg, per_call_estimate_s=1e-3).stats.median_us / 1e3


# Where measured ceilings are kept, one file per GPU and dtype: set by the job worker to its sweep's folder.
SAVED_IN: Path | None = None


@lru_cache(maxsize=None)
def measured_peaks(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """The GPU's ceilings: measured by the first process to run a job on it, read by the others."""
    if device.type != "cuda":
        return {}
    saved = None
    if SAVED_IN is not None:
        gpu = torch.cuda.get_device_properties(device).uuid
        saved = SAVED_IN / f"ceilings-GPU-{gpu}-{str(dtype).removeprefix('torch.')}.json"
        if saved.is_file():
            return json.loads(saved.read_text())
    peaks = _measure_peaks(device, dtype)
    if saved is not None:
        write_atomically(saved, json.dumps(peaks))
    return peaks


def _measure_peaks(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """A large matmul in the job's dtype and a 1 GiB device-to-device copy, timed with CUDA events.
    Random data, not zeros: tensor cores run measurably faster on zeros."""
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
