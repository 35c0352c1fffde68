"""Which ceiling a problem meets first, so that its throughput is read against that one: GB/s and the share of the
bandwidth for a memory-bound problem, useful TFLOP/s and the share of the matmul peak for a compute-bound one.

The roofline: a call that must compute F FLOPs and move B bytes (the minimum traffic, `gbyte`: Q, K, V read and O
written once, docs/metrics.md) takes at least max(F / peak FLOP/s, B / peak bytes/s). Its arithmetic intensity F/B
(`arith_intensity`) below the device's ridge point (peak FLOP/s over peak bytes/s) means bandwidth bounds it first:
its TFLOP/s would read near zero against a peak it can never reach. The ridge comes from the ceilings the jobs
recorded: measured (`device_peak_*`) where there are some, else the datasheet's (`datasheet_*`).

Attention's intensity does not depend on the head dimension: a square problem does 4·S²·D FLOPs per head over
4·S·D elements, S / (bytes per element) FLOP/byte (half that, causal) whatever D is. A decode step (q_len 1) does
~2·(heads / kv_heads) / (bytes per element): a few FLOP/byte, below every card's ridge. Where no ceiling is known (a
CPU, MPS, a card attnbench has no figures for) there is no ridge to compare with, and only that case is certain:
a decode step is memory-bound, anything else is read in TFLOP/s.

A job is anything with `metrics`, `params` and `tags` (a Record as a job writes it, a JobRecord as a report
reads it): one job's description in MLflow and a sweep's report read its throughput by the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from attnbench.core.record import is_approximate
from attnbench.core.units import format_bandwidth, format_flops


class Job(Protocol):
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]

# (peak TFLOP/s, peak GB/s, what they are), the measured ceilings first.
CEILINGS = (("device_peak_tflops", "device_peak_gbps", "measured ceilings"),
            ("datasheet_tflops", "datasheet_gbps", "the datasheet's ceilings"))


@dataclass(frozen=True)
class Bound:
    memory: bool
    why: str  # "4 FLOP/byte, below the ridge of 175 FLOP/byte (measured ceilings)"

    @property
    def label(self) -> str:
        return "memory-bound" if self.memory else "compute-bound"

    @property
    def metric(self) -> str:
        """The throughput metric a job of this problem is read by."""
        return "gbps" if self.memory else "tflops"

    @property
    def unit(self) -> str:
        return "GB/s" if self.memory else "TFLOP/s"

    def throughput(self, job: Job) -> str:
        """`3.3 TB/s` or `140 TFLOP/s`: the job's throughput, its unit scaled."""
        value = job.metrics.get(self.metric)
        return format_bandwidth(value) if self.memory else format_flops(value)

    def share_of_peak(self, job: Job) -> float | None:
        """That throughput as a percentage of the measured ceiling, else of the datasheet's; None where neither."""
        kind = "gbps" if self.memory else "tflops"
        return next((job.metrics[name] for name in (f"pct_device_peak_{kind}", f"pct_datasheet_{kind}")
                     if name in job.metrics), None)

    @property
    def ceiling_name(self) -> str:
        return "bandwidth" if self.memory else "matmul peak"


COMPUTE = Bound(False, "no job measured its work")


def intensity(job: Job) -> float | None:
    """FLOP per byte of minimum traffic (recorded, or from the work and traffic of records that predate it)."""
    m = job.metrics
    if "arith_intensity" in m:
        return m["arith_intensity"]
    return m["gflop"] / m["gbyte"] if m.get("gflop") and m.get("gbyte") else None


def ridge(jobs: Sequence[Job]) -> tuple[float, str] | None:
    """(FLOP per byte where the two ceilings meet, whose ceilings), from the first jobs that recorded both."""
    for flops, gbps, source in CEILINGS:
        for job in jobs:
            if job.metrics.get(flops) and job.metrics.get(gbps):
                return job.metrics[flops] * 1e12 / (job.metrics[gbps] * 1e9), source
    return None


def bound_of(jobs: Sequence[Job]) -> Bound:
    """The bound of one problem's jobs, from its exact jobs' intensity (an approximate backend counts its own
    formula's work, not the problem's)."""
    exact = [j for j in jobs if not is_approximate(j.tags) and intensity(j) is not None]
    measured = exact or [j for j in jobs if intensity(j) is not None]
    if not measured:
        return COMPUTE
    value = intensity(measured[0])
    found = ridge(jobs)
    if found is not None:
        point, source = found
        side = "below" if value < point else "at or above"
        return Bound(value < point, f"{value:.3g} FLOP/byte, {side} the ridge of {point:.3g} FLOP/byte ({source})")
    if all(j.params.get("shape.q_len") == "1" for j in jobs if "shape.q_len" in j.params) and any(
            "shape.q_len" in j.params for j in jobs):
        return Bound(True, f"a decode step (q_len 1, {value:.3g} FLOP/byte); no ceilings known")
    return Bound(False, f"{value:.3g} FLOP/byte; no ceilings known, and not a decode step")
