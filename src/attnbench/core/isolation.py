"""What keeps one job from the next in a worker process that runs many: its own CPU threads, cold compiler caches,
device memory given back, and the process's one-time costs paid before the first job."""

from __future__ import annotations

import contextlib
import gc
import logging

import torch

from attnbench.core.spec import JobSpec
from attnbench.core.timing.profiling import profile_call

log = logging.getLogger(__name__)


@contextlib.contextmanager
def cpu_threads(spec: JobSpec, device: torch.device):
    """A CPU job runs on timing.cpu_threads torch threads; the process's own setting is back afterwards."""
    before = torch.get_num_threads()
    if device.type == "cpu" and spec.timing.cpu_threads:
        torch.set_num_threads(spec.timing.cpu_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fresh_compiler():
    """Compile from scratch in every job. Inductor's on-disk caches key a graph without the SDPA backend
    flags, so a sweep would otherwise reuse the math job's compiled graph for flash and efficient (seen on
    an H100 with torch 2.11: all three ran the same decomposed kernels). Cold compiles also keep compile_s
    independent of what ran before."""
    return torch.compiler.config.patch(force_disable_caches=True)


def warm_up_process() -> None:
    """What the first job of a process would otherwise pay inside its own time, paid before it, while the sweep
    process starts up: the profiler's first start (which imports torch's compiler, seconds on a cold host), on
    CUDA the context, and torch.compile's first wrapper (Dynamo's imports: 1.3 s of the first compiled job's build
    on an H200 host; nothing is compiled until a call). Called by the job worker (attnbench.harness.runner)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    profile_call(lambda: torch.empty(1, device=device), device)
    torch.compile(torch.empty)


def dynamo_graphs() -> int:
    # No public counter of compiled graphs exists; tests/test_upstream.py fails if this private one changes.
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def release_memory() -> None:
    # Give the next job the device memory this one held: compiled graphs and CUDA-graph pools (released by
    # the compiler's reset), cycles (tracebacks). Only on CUDA: a full collection costs ~0.3 s with torch
    # loaded, and host memory needs no help. Never raises: after a sticky CUDA error, cleanup fails too.
    if not torch.cuda.is_available():
        return
    try:
        torch.compiler.reset()
        gc.collect()
        torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001
        log.warning("could not release device memory after the job: %s", (str(e).strip().splitlines() or [""])[0])
