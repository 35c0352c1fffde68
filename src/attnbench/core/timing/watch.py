"""What the host and the GPU were doing while a job's calls were timed: threads, CPU waits, clocks, other users.

The findings are metrics and tags of the job: `contended` when its threads waited for a core
(attnbench.core.timing.host; such a time is never a winner or a speedup), `clock_drop` when the GPU lowered its SM
clock and `gpu.shared` when another process held the card (attnbench.core.timing.gpu_clock).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch

from attnbench.core.timing import gpu_clock
from attnbench.core.timing.host import HostClock, HostUsage


def thread_tags() -> dict[str, str]:
    """The torch thread pools a job ran with."""
    return {"threads.intra_op": str(torch.get_num_threads()), "threads.inter_op": str(torch.get_num_interop_threads())}


@dataclass
class Seen:
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def watch(device: torch.device, max_cpu_wait: float) -> Iterator[Seen]:
    """Around the timed calls: `Seen` is filled in when they end."""
    seen = Seen()
    gpu = gpu_clock.handle(device)
    gpu_start = gpu_clock.read(gpu)
    host_start = HostClock.now()
    yield seen
    usage = HostUsage.between(host_start, HostClock.now())
    gpu_end = gpu_clock.read(gpu)
    seen.metrics |= usage.metrics()
    if why := usage.contended(torch.get_num_threads(), max_cpu_wait):
        seen.tags["contended"] = why
    if gpu_start is not None and gpu_end is not None:
        metrics, tags = gpu_clock.during(gpu, gpu_start, gpu_end)
        seen.metrics |= metrics
        seen.tags |= tags
