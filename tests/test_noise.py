"""Noise-aware verdicts: intervals from raw samples, and when a difference counts."""

from __future__ import annotations

import random
import statistics

import pytest

from attnbench.core.timing.noise import compare, median_interval


def _samples(center: float, spread: float, n: int = 200, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(center, spread) for _ in range(n)]


def test_the_interval_holds_the_median_and_shrinks_with_more_samples():
    few, many = _samples(100, 5, n=20), _samples(100, 5, n=2000)
    low, high = median_interval(few)
    assert low <= statistics.median(few) <= high
    many_low, many_high = median_interval(many)
    assert (many_high - many_low) < (high - low) / 3


def test_the_interval_is_the_same_for_the_same_samples():
    samples = _samples(50, 10)
    assert median_interval(samples) == median_interval(samples)


def test_one_sample_is_its_own_interval():
    assert median_interval([3.0]) == (3.0, 3.0)
    with pytest.raises(ValueError):
        median_interval([])


def test_a_planted_regression_is_slower_and_an_equal_pair_is_the_same():
    base = _samples(100, 3, seed=1)
    assert compare(base, _samples(110, 3, seed=2)).verdict == "slower"
    assert compare(base, _samples(90, 3, seed=3)).verdict == "faster"
    same = compare(base, _samples(100, 3, seed=4))
    assert same.verdict == "same" and same.ratio == pytest.approx(1, abs=0.02)


def test_a_difference_inside_wide_noise_is_not_claimed():
    # 3% apart, but each sample scatters by 30%: no claim either way
    assert compare(_samples(100, 30, n=30, seed=5), _samples(103, 30, n=30, seed=6)).verdict == "same"


def test_too_few_samples_claim_nothing():
    # 2 samples a side that do not overlap: the same kernel does this by chance one time in 3
    assert compare([10.0, 11.0], [20.0, 21.0]).verdict == "same"
    assert compare([10.0, 11.0, 10.5, 10.2, 10.8], [20.0, 21.0, 20.5, 20.2, 20.8]).verdict == "slower"


def test_judging_samples_loads_no_torch():
    """The sweep's own process judges its jobs' samples for the report: torch cost it ~2 s of import there."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from attnbench.analysis import sweep_report\n"
            "from attnbench.core.timing.noise import compare\n"
            "assert compare([1.0, 1.1, 1.0, 1.2, 1.1], [2.0, 2.1, 2.0, 2.2, 2.1]).verdict == 'slower'\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_report_bootstraps_each_jobs_samples_once():
    """Each job is compared with the baseline and the runner-up in the pivot, the table and the winner line: its
    interval was computed a dozen times (2.9 s of a six-job GPU sweep's end)."""
    from attnbench.analysis.pivot import JobRecord, summarise
    from attnbench.analysis.render.markdown import markdown
    from attnbench.core.timing import noise

    jobs = [JobRecord(name=name, params={"backend.name": name}, metrics={"median_us": median},
                      tags={"status": "ok", "timing.headline": "events"}, samples={"events": _samples(median, 1, seed=i)})
            for i, (name, median) in enumerate([("math", 900), ("flash", 100), ("cudnn", 90), ("efficient", 300)])]
    noise._interval.cache_clear()
    markdown(summarise(jobs), "t")
    assert noise._interval.cache_info().misses == len(jobs)
    assert noise._interval.cache_info().hits > len(jobs)  # asked again, answered from the first computation
