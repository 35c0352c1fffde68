"""Summary statistics of raw latency samples, in microseconds."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Stats:
    median_us: float
    mean_us: float
    min_us: float
    max_us: float
    p10_us: float
    p90_us: float
    std_us: float
    cv: float  # std / mean: how stable the measurement was
    count: int

    @classmethod
    def from_samples(cls, samples_us: list[float]) -> "Stats":
        if not samples_us:
            raise ValueError("no samples to summarise")
        mean = statistics.fmean(samples_us)
        std = statistics.stdev(samples_us) if len(samples_us) > 1 else 0.0
        if len(samples_us) > 1:
            # "inclusive" interpolates between order statistics, as numpy.percentile does by default
            deciles = statistics.quantiles(samples_us, n=10, method="inclusive")
            p10, p90 = deciles[0], deciles[-1]
        else:
            p10 = p90 = samples_us[0]
        return cls(
            median_us=statistics.median(samples_us),
            mean_us=mean,
            min_us=min(samples_us),
            max_us=max(samples_us),
            p10_us=p10,
            p90_us=p90,
            std_us=std,
            cv=std / mean if mean > 0 else 0.0,
            count=len(samples_us),
        )

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{key}": float(value) for key, value in asdict(self).items()}
