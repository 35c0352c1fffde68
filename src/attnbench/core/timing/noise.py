"""Is a difference real? Bootstrap intervals of a median from raw samples, and a verdict on two sets of samples.

A speedup or a winner is claimed only when the two medians' 95% bootstrap intervals do not overlap; otherwise the
two are the same within noise. Resampling is seeded, so the same samples always give the same verdict. Below
MIN_SAMPLES samples a side nothing is claimed: the bootstrap interval of a median of 2 is the span of the 2, and two
runs of one kernel fail to overlap that way one time in 3.

NumPy, not torch: the sweep's own process judges its jobs' samples for the report, and torch would cost it seconds of
import at the end of every sweep (numpy comes with torch's and MLflow's own dependencies).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
MIN_SAMPLES = 5


def median_interval(samples: list[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of `samples`."""
    if not samples:
        raise ValueError("no samples")
    if len(samples) == 1:
        return samples[0], samples[0]
    return _interval(tuple(samples), confidence, resamples, seed)


# A report compares each job with the baseline and the runner-up, in the table, the pivot and the plots: one job's
# interval was computed a dozen times (2.9 s of a six-job sweep on an H200, 2000 samples a job). Seeded, so the same
# samples always give the same interval: computed once. Each entry keeps its samples alive (~32 bytes a sample: 64 MB
# for 1024 entries of 2000).
@lru_cache(maxsize=1024)
def _interval(samples: tuple[float, ...], confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    values = np.asarray(samples, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(len(samples), size=(resamples, len(samples)))
    medians = np.median(values[picks], axis=1)  # the interpolated median, as statistics.median
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    ratio: float  # median(b) / median(a): above 1, b is slower
    a_interval: tuple[float, float]
    b_interval: tuple[float, float]
    enough: bool = True  # both sides have MIN_SAMPLES samples or more

    @property
    def verdict(self) -> str:
        """'faster' or 'slower' (b against a) where the intervals do not overlap; else 'same'."""
        if not self.enough:
            return "same"
        if self.b_interval[1] < self.a_interval[0]:
            return "faster"
        if self.b_interval[0] > self.a_interval[1]:
            return "slower"
        return "same"


def compare(a: list[float], b: list[float]) -> Comparison:
    """b against a (e.g. a new run against a baseline), from both runs' raw samples."""
    a_median, b_median = float(np.median(a)), float(np.median(b))
    return Comparison(b_median / a_median, median_interval(a), median_interval(b), min(len(a), len(b)) >= MIN_SAMPLES)
