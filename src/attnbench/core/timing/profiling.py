"""One call under torch.profiler: the aten ops it dispatched and the device work it ran."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from attnbench.core.devices import synchronize

# kineto, torch.profiler's library, writes `USDT: ... profiler_start` / `profiler_stop` (and `STAGE:` lines) to
# stderr around every profiling session, from C++, under any Python log level: a job profiles one call, so every job
# printed them into the sweep's output. Its one switch is this variable, read when the process first profiles; no
# level keeps its errors but drops those lines (USDT is its highest), and a failed profile shows anyway as no kernel
# seen. A user who wants kineto's log sets the variable; it is never overridden.
KINETO_LOG_LEVEL = "KINETO_LOG_LEVEL"
KINETO_QUIET = "99"


@dataclass
class Profile:
    ops: list[str]  # aten op names, host side
    kernels: dict[str, float]  # kernel (and copy) name → summed device µs, over all the calls profiled
    calls: int = 1

    @property
    def kernel_us(self) -> float:
        """Device time of the kernels (and copies) of one call, on average: what the GPU itself spent."""
        return sum(self.kernels.values()) / self.calls


def compiled_region(ops: list[str]) -> bool:
    """Whether torch.compile'd code ran: Dynamo and Inductor mark their regions in the profile."""
    return any("Torch-Compiled Region" in op or "CompiledFxGraph" in op for op in ops)


def profile_call(fn, device: torch.device, host_ops: bool = True, calls: int = 1) -> Profile:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault(KINETO_LOG_LEVEL, KINETO_QUIET)
    activities = ([ProfilerActivity.CPU] if host_ops else []) + (
        [ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with warnings.catch_warnings(), profile(activities=activities) as prof:
        warnings.simplefilter("ignore")  # the profiler's own notices are not the user's business
        for _ in range(calls):
            fn()
        synchronize(device)
    ops, kernels = [], {}
    for event in prof.events():
        if event.device_type == DeviceType.CUDA:
            kernels[event.name] = kernels.get(event.name, 0.0) + event.time_range.elapsed_us()
        elif event.device_type == DeviceType.CPU:
            ops.append(event.name)
    return Profile(ops, kernels, calls)
