"""Measure the latency of a zero-argument callable on a device.

Methods (the name is logged next to every number it produces):
- ``events``: one ``torch.cuda.Event`` pair around each call, optionally after overwriting an L2-sized
  buffer so that no call reads inputs the previous call left in cache. Device time; CUDA only. Where the
  host launches kernels slower than the GPU runs them, the launch gaps are inside the pair too.
- ``wall``: host clock around blocks of back-to-back calls, one synchronize per block. What a user's
  eager loop feels, launch overhead included. Every device.
- ``cuda_graph``: one call captured in a CUDA graph, each replay between an event pair (after the same
  L2 flush): device time with the launch gaps gone. CUDA only.
- ``profiler``: ``torch.profiler`` (CUPTI) timestamps of every kernel and copy the call runs, summed per
  call: kernel time and nothing else. CUDA only; ``profiler_reps`` calls, one profiling session each.

Repetition is adaptive: warm up for ``warmup_s``, then take samples until they add up to ``min_time_s``
and number at least ``min_reps``, never more than ``max_reps``. The first call (which includes any
compilation) is timed on its own by :func:`first_call` and never enters the samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

from attnbench.core.devices import synchronize
from attnbench.core.errors import Unsupported
from attnbench.core.spec import Timing, TimingMethod
from attnbench.core.timing.stats import Stats

# The events method queues this much work between synchronisations, so the host never runs far ahead.
EVENT_BATCH_S = 0.05
MAX_EVENT_BATCH = 100
# Flush at least this much, as triton.testing.do_bench does, and at least twice the L2 where it is larger.
MIN_FLUSH_BYTES = 256 * 2**20


@dataclass
class Measurement:
    method: str
    samples_us: list[float]
    calls_per_sample: int = 1
    stats: Stats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = Stats.from_samples(self.samples_us)


CUDA_ONLY = {TimingMethod.events, TimingMethod.cuda_graph, TimingMethod.profiler}


def methods_for(method: TimingMethod, device: torch.device) -> list[str]:
    """The methods a job runs, headline first."""
    if method is TimingMethod.auto:
        return ["events", "wall"] if device.type == "cuda" else ["wall"]
    if method in CUDA_ONLY and device.type != "cuda":
        raise Unsupported(f"timing.method={method.value} needs CUDA; device is {device.type}: use wall")
    return [method.value]


def first_call(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    """Run fn once, synchronised; return its output and the seconds it took (compilation included)."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def _time_block(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Seconds for `calls` back-to-back calls, the device synchronized before and after (the warm-up's batches and
    the wall method's samples)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return time.perf_counter() - start


def warm_up(fn: Callable[[], object], device: torch.device, seconds: float) -> float:
    """Call fn in doubling batches for at least `seconds`; return the per-call time of the last batch."""
    batch, spent, per_call = 1, 0.0, 0.0
    while True:
        elapsed = _time_block(fn, device, batch)
        spent += elapsed
        per_call = elapsed / batch
        if spent >= seconds:
            return per_call
        batch *= 2


def measure(fn: Callable[[], object], device: torch.device, method: str, cfg: Timing,
            per_call_estimate_s: float) -> Measurement:
    if method == "events":
        return _measure_events(fn, device, cfg, per_call_estimate_s)
    if method == "wall":
        return _measure_wall(fn, device, cfg, per_call_estimate_s)
    if method == "cuda_graph":
        return _measure_cuda_graph(fn, device, cfg, per_call_estimate_s)
    if method == "profiler":
        return _measure_profiler(fn, device, cfg)
    raise ValueError(f"unknown timing method {method!r}")


def _enough(samples: int, timed_s: float, cfg: Timing) -> bool:
    return samples >= cfg.max_reps or (samples >= cfg.min_reps and timed_s >= cfg.min_time_s)


@lru_cache(maxsize=None)
def l2_flush_buffer(device: torch.device) -> torch.Tensor:
    l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
    nbytes = max(MIN_FLUSH_BYTES, 2 * l2_bytes)
    return torch.empty(nbytes // 4, dtype=torch.int32, device=device)


def _event_samples(fn, device, cfg: Timing, per_call_estimate_s: float) -> list[float]:
    """µs between an event pair around each fn(), after an L2 flush when configured."""
    flush = l2_flush_buffer(device) if cfg.flush_l2 else None
    batch = min(MAX_EVENT_BATCH, max(1, int(EVENT_BATCH_S / max(per_call_estimate_s, 1e-9))))
    samples: list[float] = []
    while not _enough(len(samples), sum(samples) / 1e6, cfg):
        # Events are made before the loop: creating them between calls is host work that a launch-bound
        # call would otherwise pay inside its own timing.
        n = min(batch, cfg.max_reps - len(samples))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for start, end in zip(starts, ends):
            if flush is not None:
                flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        samples.extend(start.elapsed_time(end) * 1e3 for start, end in zip(starts, ends))  # ms → µs
    return samples


def _measure_events(fn, device, cfg: Timing, per_call_estimate_s: float) -> Measurement:
    return Measurement("events", _event_samples(fn, device, cfg, per_call_estimate_s))


def _measure_cuda_graph(fn, device, cfg: Timing, per_call_estimate_s: float) -> Measurement:
    # Capture needs a warmed-up call on a side stream first (lazy init must not happen during capture).
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except Exception as e:  # noqa: BLE001 - what cannot be captured is a property of the workload
        raise Unsupported(f"timing.method=cuda_graph: the call cannot be captured: {e}".splitlines()[0]) from e
    return Measurement("cuda_graph", _event_samples(graph.replay, device, cfg, per_call_estimate_s))


def _measure_profiler(fn, device, cfg: Timing) -> Measurement:
    from attnbench.core.timing.profiling import profile_call

    flush = l2_flush_buffer(device) if cfg.flush_l2 else None
    samples = []
    for _ in range(max(1, cfg.profiler_reps)):
        if flush is not None:
            flush.zero_()  # outside the session: its kernel is not the call's
        samples.append(sum(profile_call(fn, device, host_ops=False).kernels.values()))
    return Measurement("profiler", samples)


def _measure_wall(fn, device, cfg: Timing, per_call_estimate_s: float) -> Measurement:
    calls = max(1, math.ceil(cfg.wall_block_s / max(per_call_estimate_s, 1e-9)))
    samples: list[float] = []
    timed_s = 0.0
    while not _enough(len(samples), timed_s, cfg):
        elapsed = _time_block(fn, device, calls)
        timed_s += elapsed
        samples.append(elapsed / calls * 1e6)
    return Measurement("wall", samples, calls_per_sample=calls)
