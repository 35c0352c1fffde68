"""Throughput from the work and traffic a job recorded and its headline time (µs)."""

from __future__ import annotations

from attnbench.core.metrics import register_metric, tflops_per_s
from attnbench.core.record import Record


@register_metric("tflops")
def tflops(record: Record) -> float | None:
    """Useful TFLOP/s: the call's FLOPs (softmax attention's useful ones, or an approximate backend's own) over its
    headline time. None where the backend counts no FLOPs of its own."""
    m = record.metrics
    return tflops_per_s(m["gflop"] * 1e9, m["median_us"] / 1e6) if "gflop" in m and m.get("median_us") else None


@register_metric("gbps")
def gbps(record: Record) -> float | None:
    """GB/s over the minimum bytes a call must move (docs: Metrics)."""
    m = record.metrics
    return m["gbyte"] / m["median_us"] * 1e6 if "gbyte" in m and m.get("median_us") else None


@register_metric("arith_intensity")
def arith_intensity(record: Record) -> float | None:
    """FLOPs per byte of minimum traffic: below the device's ridge point, a call is memory-bound."""
    m = record.metrics
    return m["gflop"] / m["gbyte"] if "gflop" in m and m.get("gbyte") else None
