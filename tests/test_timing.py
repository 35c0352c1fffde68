"""The timer on CPU workloads, and on a fake clock where a test needs known costs: no test compares two
wall-clock measurements, which a loaded machine makes flaky."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.core.errors import Unsupported
from attnbench.core.timing import timer
from attnbench.core.timing.stats import Stats
from attnbench.core.timing.timer import first_call, measure, methods_for
from attnbench.core.timing.timer import warm_up
from attnbench.harness.config import TimingConfig, TimingMethod

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, so that the cost of a call is its work, not a fight between thread pools
    (seen on a 16-core host while Inductor's compile workers from earlier tests were still busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
A = torch.randn(256, 256) / 16


def matmuls(n: int):
    def work():
        x = A
        for _ in range(n):
            x = torch.tanh(A @ x)
        return x

    return work


def timing(**kw) -> TimingConfig:
    return TimingConfig(**({"warmup_s": 0.02, "min_time_s": 0.05, "min_reps": 5, "max_reps": 200} | kw))


class FakeClock:
    """time.perf_counter for the timer, advanced only by the fake work: costs are exact, whatever the load."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def work(self, *costs_s: float):
        """A callable whose n-th call costs costs_s[n] seconds (the last cost repeats)."""
        calls = []

        def call():
            self.now += costs_s[min(len(calls), len(costs_s) - 1)]
            calls.append(1)

        call.calls = calls
        return call


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timer, "time", fake)
    return fake


def test_twice_the_work_is_timed_as_twice_as_long(clock):
    cfg = timing(min_time_s=0.2)
    single, double = clock.work(0.001), clock.work(0.002)
    t1 = measure(single, CPU, "wall", cfg, warm_up(single, CPU, cfg.warmup_s)).stats.median_us
    t2 = measure(double, CPU, "wall", cfg, warm_up(double, CPU, cfg.warmup_s)).stats.median_us
    assert t1 == pytest.approx(1000) and t2 == pytest.approx(2 * t1)


def test_stats_are_computed_from_the_raw_samples():
    m = measure(matmuls(2), CPU, "wall", timing(), 1e-3)
    assert m.method == "wall" and m.samples_us and all(s > 0 for s in m.samples_us)
    assert m.stats == Stats.from_samples(m.samples_us)


def test_min_reps_is_honoured_when_time_is_no_constraint():
    m = measure(matmuls(1), CPU, "wall", timing(min_time_s=0.0, min_reps=7), 1e-3)
    assert m.stats.count == 7


def test_max_reps_caps_a_run_that_min_time_would_extend():
    m = measure(matmuls(1), CPU, "wall", timing(min_time_s=1e6, max_reps=9), 1e-3)
    assert m.stats.count == 9


def test_min_time_is_reached_before_stopping():
    cfg = timing(min_time_s=0.1, min_reps=1, max_reps=100_000)
    m = measure(matmuls(2), CPU, "wall", cfg, 1e-3)
    timed_s = sum(m.samples_us) * m.calls_per_sample / 1e6
    assert timed_s >= 0.1 * (1 - 1e-9) and m.stats.count > 1  # same sum, other rounding


def test_wall_blocks_hold_enough_calls_to_last_the_block_target():
    m = measure(matmuls(1), CPU, "wall", timing(wall_block_s=0.01), per_call_estimate_s=0.001)
    assert m.calls_per_sample == math.ceil(0.01 / 0.001)


def test_the_first_call_is_timed_apart_from_the_steady_state(clock):
    slow_first = clock.work(0.040, 0.004)
    _, first_s = first_call(slow_first, CPU)
    m = measure(slow_first, CPU, "wall", timing(), warm_up(slow_first, CPU, 0.01))
    assert first_s == pytest.approx(0.040) and m.stats.max_us == pytest.approx(4000)


def test_warm_up_runs_for_at_least_its_duration_and_estimates_per_call_time(clock):
    work = clock.work(0.001)
    estimate = warm_up(work, CPU, 0.05)
    assert len(work.calls) >= 50 and estimate == pytest.approx(0.001)


def test_auto_means_wall_on_cpu_and_events_need_cuda():
    assert methods_for(TimingMethod.auto, CPU) == ["wall"]
    assert methods_for(TimingMethod.wall, CPU) == ["wall"]
    with pytest.raises(Unsupported, match="events"):
        methods_for(TimingMethod.events, CPU)
    assert methods_for(TimingMethod.auto, torch.device("cuda")) == ["events", "wall"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_events_measure_device_time_and_twice_the_work_takes_longer():
    dev = torch.device("cuda")
    x = torch.randn(2048, 2048, device=dev, dtype=torch.float16)

    def work(n):
        return lambda: [x @ x for _ in range(n)]

    cfg = timing(min_time_s=0.1)
    t1 = measure(work(4), dev, "events", cfg, warm_up(work(4), dev, 0.05))
    t2 = measure(work(8), dev, "events", cfg, warm_up(work(8), dev, 0.05))
    assert 1.6 * t1.stats.median_us < t2.stats.median_us < 2.4 * t1.stats.median_us
    assert t1.stats.cv < 0.2
