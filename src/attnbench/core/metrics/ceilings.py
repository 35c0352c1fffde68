"""Achieved throughput as a share of the device's ceilings: measured (a matmul, a copy) and the datasheet's."""

from __future__ import annotations

from attnbench.core.metrics import register_metric
from attnbench.core.metrics.throughput import gbps, tflops
from attnbench.core.record import Record

SHARES = {"pct_device_peak_tflops": ("device_peak_tflops", tflops), "pct_device_peak_gbps": ("device_peak_gbps", gbps),
          "pct_datasheet_tflops": ("datasheet_tflops", tflops), "pct_datasheet_gbps": ("datasheet_gbps", gbps)}


def _share(name: str):
    ceiling, achieved = SHARES[name]

    def share(record: Record) -> float | None:
        value, limit = achieved(record), record.metrics.get(ceiling)
        return 100 * value / limit if value is not None and limit else None

    share.__doc__ = f"{achieved.__name__} as a percentage of {ceiling}"
    return register_metric(name)(share)


for _name in SHARES:
    _share(_name)
