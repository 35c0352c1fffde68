"""Timings say when they cannot be trusted: a job whose threads waited for a core is `contended`, in its tags and in
every table, and gets no speedup and never a winner; the threads it ran with are recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.analysis.pivot import JobRecord, speedup, summarise
from attnbench.core.timing.host import HostClock, HostUsage
from attnbench.harness.placement import usable_cores
from conftest import run_config

SMALL = ["shape=tiny", "device=cpu", "backend=math", "timing.warmup_s=0", "timing.min_time_s=0.3",
         "timing.min_reps=10", "timing.max_reps=2000"]
BUSY_S = 60  # each busy process ends by itself after this, whatever happens to the test


def _record(result: dict, backend: str) -> JobRecord:
    return JobRecord(backend, {"backend.name": backend}, result.metrics,
                     result.tags | {"status": result.status}, result.samples)


@pytest.mark.skipif(not Path("/proc/self/schedstat").exists(), reason="needs Linux's scheduler statistics")
def test_a_cpu_job_starved_of_cores_is_contended_and_never_a_winner(compose_cfg):
    spin = f"import time\nend = time.time() + {BUSY_S}\nwhile time.time() < end:\n    pass"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(usable_cores() + 1)]
    try:
        results = [run_config(compose_cfg(*SMALL, f"backend={backend}")) for backend in ("math", "naive")]
    finally:
        for process in busy:
            process.kill()
            process.wait()
    for result in results:
        assert result.status == "ok", result.reason
        assert "waited for a core" in result.tags["contended"]
        assert result.metrics["cpu_wait_share"] > 0.1
        assert result.tags["threads.intra_op"] == "1"  # timing.cpu_threads' default
        assert result.metrics["timed_cpu_s"] >= 0 and result.metrics["timed_wall_s"] > 0
    math, naive = (_record(r, b) for r, b in zip(results, ("math", "naive")))
    (problem,) = summarise([math, naive])
    assert problem.winner == "no winner: every exact job that ran was contended (timed while waiting for a core)"
    assert speedup(math, naive) == ""


def test_the_wait_share_is_the_threads_wait_over_their_wanted_time():
    start = HostClock(wall_s=0.0, cpu_s=0.0, run_s=1.0, wait_s=0.5)
    end = HostClock(wall_s=2.0, cpu_s=1.5, run_s=2.5, wait_s=1.0)
    usage = HostUsage.between(start, end)
    assert usage.wait_share == pytest.approx(0.25) and usage.cpu_s == 1.5
    assert "25%" in usage.contended(threads=2, max_wait=0.1) and usage.contended(threads=2, max_wait=0.3) is None
    unknown = HostUsage.between(HostClock(0.0, 0.0, None, None), HostClock(1.0, 1.0, None, None))
    assert unknown.wait_share is None and unknown.contended(1, 0.1) is None
    assert "cpu_wait_share" not in unknown.metrics()


def test_cpu_threads_are_set_for_a_cpu_job_and_refused_when_not_positive(compose_cfg):
    result = run_config(compose_cfg(*SMALL, "timing.min_time_s=0", "timing.min_reps=1", "timing.cpu_threads=2"))
    assert result.tags["threads.intra_op"] == "2" and "threads.inter_op" in result.tags
    bad = run_config(compose_cfg(*SMALL, "timing.cpu_threads=0"))
    assert bad.status == "error" and "timing.cpu_threads" in bad.reason


def test_a_gpu_whose_clock_fell_or_that_another_process_used_is_said(monkeypatch):
    from attnbench.core.timing import gpu_clock

    monkeypatch.setattr(gpu_clock, "_clock_samples", lambda gpu, since_us: [1900, 1690])  # the driver's, in between
    start = gpu_clock.GpuState(1980, 1980, 300.0, 45, processes=1, timestamp_us=10)
    end = gpu_clock.GpuState(1800, 1980, 690.0, 67, processes=2, timestamp_us=20)
    metrics, tags = gpu_clock.during(object(), start, end)
    assert metrics["gpu_sm_clock_min_mhz"] == 1690 and metrics["gpu_sm_clock_start_mhz"] == 1980
    assert "from 1980 to 1690 MHz" in tags["clock_drop"] and "1 other process" in tags["gpu.shared"]
    steady = gpu_clock.GpuState(1975, 1980, 300.0, 45, processes=1, timestamp_us=30)
    monkeypatch.setattr(gpu_clock, "_clock_samples", lambda gpu, since_us: [])
    assert gpu_clock.during(object(), start, steady)[1] == {}  # 0.3% lower: no drop, nobody else


def test_watching_a_cpu_job_leaves_nvml_alone(monkeypatch):
    """A CPU sweep's console said "GPU clocks are not recorded: NVML is not available" for every job."""
    import torch

    from attnbench.core.timing import gpu_clock
    from attnbench.core.timing.watch import watch

    monkeypatch.setattr(gpu_clock, "_nvml", lambda: pytest.fail("NVML consulted for a CPU job"))
    with watch(torch.device("cpu"), max_cpu_wait=0.5) as seen:
        sum(range(1000))
    assert not any(key.startswith("gpu_") for key in seen.metrics)
