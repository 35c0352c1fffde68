"""Derived metrics: throughput from a model's work and traffic, against the device's ceilings."""

from __future__ import annotations

import torch

from attnbench.core.devices import device_name
from attnbench.core.peak import datasheet
from attnbench.core.spec import Mode


def tflops_per_s(flops: int, seconds: float) -> float:
    return flops / seconds / 1e12


def throughput(model, mode: Mode, seconds: float, peaks: dict[str, float], device: torch.device) -> dict[str, float]:
    """Useful TFLOP/s, GB/s over the minimum bytes, intensity, and each as a share of the ceilings known. (Not
    the time itself: seconds * 1e6 can differ from the measured median in its last digit.)"""
    flops, nbytes = model.flops(mode), model.min_bytes(mode)
    metrics = {"gbps": nbytes / seconds / 1e9}
    if flops is not None:  # an approximate backend that counts no FLOPs of its own gets no TFLOP/s
        metrics |= {"gflop": flops / 1e9, "tflops": tflops_per_s(flops, seconds), "arith_intensity": flops / nbytes}
    ceilings = peaks | datasheet(device_name(device), model.dtype)
    metrics |= ceilings
    for ceiling, achieved in (("device_peak_tflops", "tflops"), ("device_peak_gbps", "gbps"),
                              ("datasheet_tflops", "tflops"), ("datasheet_gbps", "gbps")):
        if ceiling in ceilings and achieved in metrics:
            metrics[f"pct_{ceiling}"] = 100 * metrics[achieved] / ceilings[ceiling]
    return metrics
