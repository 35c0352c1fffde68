"""One job, in-process, on tiny CPU shapes: statuses, metrics, the backend that really ran."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from omegaconf import OmegaConf

from attnbench.job import run_job
from attnbench.models import _REGISTRY, Workload, register
from conftest import FAST_TIMING

TINY = ["device=cpu", "shape=tiny", *FAST_TIMING]


@pytest.fixture
def job(compose_cfg):
    def _job(*overrides: str, model: str | None = None) -> dict:
        cfg = compose_cfg(*TINY, *overrides)
        if model is not None:
            OmegaConf.update(cfg, "model.name", model)
        return run_job(cfg)

    return _job


@pytest.mark.parametrize("backend", ["math", "flash"])
def test_a_forced_backend_is_the_one_that_ran(job, backend):
    result = job(f"backend={backend}")
    assert result["status"] == "ok", result["reason"]
    assert result["tags"]["sdpa.kernel"] == backend


def test_ok_job_reports_positive_latency_throughput_and_a_small_error(job):
    result = job("dtype=float32")
    m = result["metrics"]
    for key in ("median_us", "wall_median_us", "wall_p10_us", "wall_p90_us", "wall_mean_us", "wall_min_us",
                "wall_count", "tflops", "gflop", "first_call_s"):
        assert m[key] > 0, key
    assert m["wall_p10_us"] <= m["median_us"] <= m["wall_p90_us"]
    assert m["median_us"] == m["wall_median_us"] and result["tags"]["timing.headline"] == "wall"
    assert 0 <= m["max_abs_err"] < 1e-5 and "compile_s" not in m


def test_efficient_on_cpu_is_unsupported_with_pytorchs_reason(job):
    result = job("backend=efficient")
    assert result["status"] == "unsupported"
    assert "efficient" in result["reason"] and "No viable backend" in result["reason"]
    assert not result["metrics"]


def test_efficient_under_compile_is_unsupported_too(job):
    result = job("backend=efficient", "compile=true")
    assert result["status"] == "unsupported" and "No viable backend" in result["reason"]
    assert "FakeTensor" not in result["reason"]  # Dynamo's wrapper is peeled off


def test_compiled_job_really_compiles_and_reports_compile_time_apart(job):
    result = job("compile=true", "backend=math", "dtype=float32")
    assert result["status"] == "ok", result["reason"]
    m = result["metrics"]
    assert m["compile_s"] > 0 and m["dynamo_graphs"] >= 1
    assert m["compile_s"] * 1e6 > m["median_us"]  # compilation is not in the steady-state numbers
    assert m["max_abs_err"] < 1e-4


def test_each_job_starts_from_a_clean_compiler(job):
    first = job("compile=true", "dtype=float32")
    second = job("compile=true", "dtype=float32")
    assert first["metrics"]["dynamo_graphs"] == second["metrics"]["dynamo_graphs"] >= 1


def test_causal_self_attention_module_runs_and_matches_its_float64_reference(job):
    result = job("model=causal_self_attention", "causal=true", "dtype=float32")
    assert result["status"] == "ok", result["reason"]
    assert result["metrics"]["max_abs_err"] < 1e-4
    # projections (8·B·T·C²) plus half of the attention score work, B 2, T 16, C 16
    assert result["metrics"]["gflop"] * 1e9 == pytest.approx(8 * 2 * 16 * 16**2 + 4 * 2 * 2 * 16 * 16 * 8 // 2)


def test_a_bad_config_is_an_error_naming_the_field(job):
    result = job("shape.seq_len=0")
    assert result["status"] == "error" and "shape.seq_len" in result["reason"]


def test_a_device_that_is_absent_is_unsupported(job):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = job("device=cuda")
    assert result["status"] == "unsupported" and "CUDA" in result["reason"]


@dataclass
class _Params:
    name: str = "test"


@pytest.fixture
def test_model():
    """Register a throw-away workload for one test."""
    added = []

    def _add(name, build):
        @register(name)
        class _Test(Workload):
            Params = _Params

            def build(self):
                return build(self)

            def flops(self):
                return 1

            def reference(self, args, out):
                return None

        added.append(name)
        return name

    yield _add
    for name in added:
        _REGISTRY.pop(name, None)


def test_nan_output_is_wrong(job, test_model):
    name = test_model("nan_output", lambda w: (lambda x: x * float("nan"), (torch.ones(4),)))
    result = job(model=name)
    assert result["status"] == "wrong" and "NaN" in result["reason"]


def test_an_unexpected_exception_is_an_error_with_its_traceback(job, test_model):
    def broken(w):
        def fn():
            raise KeyError("boom")

        return fn, ()

    result = job(model=test_model("broken", broken))
    assert result["status"] == "error" and "boom" in result["reason"]
    assert "Traceback" in result["traceback"] and "KeyError" in result["traceback"]


def test_recompiling_while_timed_marks_the_job_invalid(job, test_model):
    def shape_shifter(w):
        calls = [0]

        def fn(x):
            calls[0] += 1
            return (x[: calls[0] % 7 + 1] * 2).sum()

        return fn, (torch.arange(8.0),)

    # Slices of a new length each call: Dynamo keeps compiling new graphs (until its cache limit).
    result = job("compile=true", "timing.warmup_s=0", model=test_model("shape_shifter", shape_shifter))
    assert result["status"] == "invalid" and "recompiled" in result["reason"]
