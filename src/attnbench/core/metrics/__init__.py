"""Metrics derived from a job's Record: one function each, registered under the name it is recorded as.

A metric is a function `Record -> float | None` (None: it says nothing about this job), decorated
`@register_metric("name")` in a module of this package, like tritonbench's `@register_metric`. The job records
what it measured — the headline time (`median_us`), the work (`gflop`), the minimum traffic (`gbyte`) and the
device's ceilings — and then every registered metric of its Record (`derived`), so a new figure needs one small
module here and no edit to the job.
"""

from __future__ import annotations

from typing import Callable

import torch

from attnbench.core.devices import device_name
from attnbench.core.peak import datasheet
from attnbench.core.record import Record
from attnbench.core.registry import Registry
from attnbench.core.spec import Mode

Metric = Callable[[Record], "float | None"]
METRICS: Registry[Metric] = Registry("metric", __name__)
register_metric = METRICS.register


def derived(record: Record) -> dict[str, float]:
    """Every registered metric that says something about this record."""
    found = {}
    for name, metric in sorted(METRICS.all().items()):
        value = metric(record)
        if value is not None:
            found[name] = float(value)
    return found


def tflops_per_s(flops: int, seconds: float) -> float:
    return flops / seconds / 1e12


def work(model, mode: Mode) -> dict[str, float]:
    """What one call must do, as the metrics read it: `gflop` (None-free: absent where the backend counts no FLOPs
    of its own) and `gbyte`, the minimum bytes it must move."""
    flops = model.flops(mode)
    return ({"gflop": flops / 1e9} if flops is not None else {}) | {"gbyte": model.min_bytes(mode) / 1e9}


def ceilings(device: torch.device, dtype: torch.dtype, measured: dict[str, float]) -> dict[str, float]:
    """The device's ceilings: measured (device_peak_*) and, for cards attnbench knows, the datasheet's."""
    return measured | datasheet(device_name(device), dtype)
