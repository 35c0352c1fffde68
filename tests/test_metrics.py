"""Metrics are derived from a job's Record, one registered function each: a new one needs no edit to the job."""

from __future__ import annotations

import pytest

from attnbench.core.metrics import METRICS, derived, register_metric
from attnbench.core.record import Record
from conftest import FAST_TIMING, run_config


def test_throughput_and_shares_come_from_the_recorded_work_time_and_ceilings():
    record = Record("ok", metrics={"median_us": 100.0, "gflop": 10.0, "gbyte": 0.5, "device_peak_tflops": 700.0,
                                   "datasheet_gbps": 4800.0})
    found = derived(record)
    assert found["tflops"] == pytest.approx(100.0)  # 10 GFLOP in 100 µs
    assert found["gbps"] == pytest.approx(5000.0) and found["arith_intensity"] == pytest.approx(20.0)
    assert found["pct_device_peak_tflops"] == pytest.approx(100 * 100 / 700)
    assert found["pct_datasheet_gbps"] == pytest.approx(100 * 5000 / 4800)
    assert "pct_device_peak_gbps" not in found  # no such ceiling recorded: nothing said
    assert "tflops" not in derived(Record("ok", metrics={"median_us": 100.0, "gbyte": 0.5}))  # no FLOPs counted


@pytest.fixture
def per_head_metric():
    @register_metric("us_per_query_head")
    def us_per_query_head(record: Record) -> float | None:
        heads = record.tags.get("problem", "").split()[1].removeprefix("H").split("/")[0]
        return record.metrics["median_us"] / int(heads) if "median_us" in record.metrics else None

    yield
    METRICS.classes.pop("us_per_query_head")


def test_a_registered_metric_is_recorded_by_every_job_with_no_edit_to_the_job(compose_cfg, per_head_metric):
    result = run_config(compose_cfg("shape=tiny", "device=cpu", "backend=math", *FAST_TIMING))
    assert result.status == "ok", result.reason
    assert result.metrics["us_per_query_head"] == pytest.approx(result.metrics["median_us"] / 2)  # tiny: H2
