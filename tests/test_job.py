"""One job, in-process, on tiny CPU shapes: statuses, metrics, the backend that really ran."""

from __future__ import annotations

import pytest
import torch
from failing_workloads import StubModel
from omegaconf import OmegaConf

from attnbench.core.models import MODELS, register_model
from conftest import FAST_TIMING, run_config

TINY = ["device=cpu", "shape=tiny", *FAST_TIMING]


@pytest.fixture
def job(compose_cfg):
    def _job(*overrides: str, model: str | None = None) -> dict:
        cfg = compose_cfg(*TINY, *overrides)
        if model is not None:
            OmegaConf.update(cfg, "model.name", model)
        return run_config(cfg)

    return _job


@pytest.mark.parametrize("backend", ["math", "flash"])
def test_a_forced_backend_is_the_one_that_ran(job, backend):
    result = job(f"backend={backend}")
    assert result.status == "ok", result.reason
    assert result.tags["sdpa.kernel"] == backend


def test_ok_job_reports_positive_latency_throughput_and_a_small_error(job):
    result = job("dtype=float32")
    m = result.metrics
    for key in ("median_us", "wall_median_us", "wall_p10_us", "wall_p90_us", "wall_mean_us", "wall_min_us",
                "wall_count", "tflops", "gflop", "first_call_s"):
        assert m[key] > 0, key
    assert m["wall_p10_us"] <= m["median_us"] <= m["wall_p90_us"]
    assert m["median_us"] == m["wall_median_us"] and result.tags["timing.headline"] == "wall"
    assert 0 <= m["max_abs_err"] < 1e-5 and "compile_s" not in m


def test_a_job_says_where_its_time_went_phase_by_phase(job):
    m = job().metrics
    phases = {key: value for key, value in m.items() if key.startswith("phase_")}
    assert set(phases) == {"phase_plan_s", "phase_build_s", "phase_first_call_s", "phase_check_s",
                           "phase_verify_dispatch_s", "phase_time_s"}
    assert all(value >= 0 for value in phases.values())
    assert sum(phases.values()) <= m["job_s"]  # the phases lie inside the job, one after another
    assert phases["phase_time_s"] >= 0.01  # the warm-up (timing.warmup_s=0.01, at least) is in the `time` phase


def test_efficient_on_cpu_is_unsupported_before_anything_is_allocated(job, monkeypatch):
    monkeypatch.setattr(torch, "randn", lambda *a, **k: pytest.fail("allocated inputs for an unsupported job"))
    result = job("backend=efficient")
    assert result.status == "unsupported"
    assert "efficient" in result.reason and "CUDA only" in result.reason
    assert set(result.metrics) == {"job_s", "phase_plan_s"}  # refused while planned: nothing built or timed


@pytest.fixture
def efficient_without_its_declaration():
    """Forced efficient attention that does not declare its CUDA-only rule: PyTorch refuses it at the first call."""
    from attnbench.core.backends import BACKENDS, register_backend
    from attnbench.core.backends.sdpa import Efficient, Sdpa

    register_backend("undeclared_efficient")(type("UndeclaredEfficient", (Efficient,), {"supports": Sdpa.supports}))
    yield "undeclared_efficient"
    BACKENDS.classes.pop("undeclared_efficient")


@pytest.mark.parametrize("compiled", ["false", pytest.param("true", marks=pytest.mark.slow)])  # compiles
def test_a_kernel_pytorch_refuses_at_the_first_call_is_unsupported_with_pytorchs_reason(
        compose_cfg, efficient_without_its_declaration, compiled):
    cfg = compose_cfg(*TINY, f"compile={compiled}")
    OmegaConf.update(cfg, "backend", {"name": efficient_without_its_declaration}, merge=False)
    result = run_config(cfg)
    assert result.status == "unsupported" and "No viable backend" in result.reason
    assert "FakeTensor" not in result.reason  # Dynamo's wrapper is peeled off
    assert "force_disable_caches" not in result.reason  # compiler notices are not reasons


def test_compile_mode_without_compile_repeats_the_eager_job_and_is_skipped(job):
    result = job("compile=false", "compile_mode=max-autotune")
    assert result.status == "skipped" and "compile_mode" in result.reason
    assert set(result.metrics) == {"job_s", "phase_plan_s"}  # skipped while planned: nothing run


@pytest.mark.slow  # Inductor's first compile in a process: ~4 s on 2 cores (with its imports)
def test_compiled_job_really_compiles_and_reports_compile_time_apart(job):
    result = job("compile=true", "backend=math", "dtype=float32")
    assert result.status == "ok", result.reason
    m = result.metrics
    assert m["compile_s"] > 0 and m["dynamo_graphs"] >= 1
    assert m["compile_s"] * 1e6 > m["median_us"]  # compilation is not in the steady-state numbers
    assert m["max_abs_err"] < 1e-4


@pytest.mark.slow  # two compiles
def test_each_job_starts_from_a_clean_compiler(job):
    first = job("compile=true", "dtype=float32")
    second = job("compile=true", "dtype=float32")
    assert first.metrics["dynamo_graphs"] == second.metrics["dynamo_graphs"] >= 1


def test_causal_self_attention_module_runs_and_matches_its_float64_reference(job):
    result = job("model=causal_self_attention", "mask=causal", "dtype=float32")
    assert result.status == "ok", result.reason
    assert result.metrics["max_abs_err"] < 1e-4
    # projections (8·B·T·C²) plus the causal scores kept (T·(T+1)/2 per head, 4·D FLOPs each), B 2, T 16, C 16
    assert result.metrics["gflop"] * 1e9 == pytest.approx(8 * 2 * 16 * 16**2 + 4 * 2 * 2 * 8 * (16 * 17 // 2))


@pytest.mark.parametrize("model", ["attention", "causal_self_attention"])
@pytest.mark.parametrize("mode", ["bwd", "fwd_bwd"])
def test_training_modes_time_the_backward_and_check_input_gradients(job, model, mode):
    result = job(f"model={model}", f"mode={mode}", "dtype=float32", "mask=causal")
    assert result.status == "ok", result.reason
    m = result.metrics
    assert m["median_us"] > 0 and m["max_abs_err"] < 1e-4
    assert 0 <= m["grad_max_abs_err"] < 1e-4 and m["grad_max_rel_err"] < 1e-4


def test_training_multiplies_the_flops(job):
    fwd = job("mode=fwd", "dtype=float32").metrics
    bwd = job("mode=bwd", "dtype=float32").metrics
    both = job("mode=fwd_bwd", "dtype=float32").metrics
    assert bwd["gflop"] == pytest.approx(2.5 * fwd["gflop"]) and both["gflop"] == pytest.approx(3.5 * fwd["gflop"])


@pytest.mark.slow  # two compiles (~1 s each); eager training is checked above
@pytest.mark.parametrize("mode", ["bwd", "fwd_bwd"])
def test_compiled_training_modes_compile_forward_and_backward(job, mode):
    result = job("compile=true", f"mode={mode}", "dtype=float32")
    assert result.status == "ok", result.reason
    assert result.metrics["dynamo_graphs"] >= 1 and result.metrics["grad_max_abs_err"] < 1e-4


def test_bandwidth_and_intensity_follow_from_bytes_and_flops(job):
    m = job("dtype=float32").metrics
    # tiny: B 2, H 2, S 16, D 8, fp32: Q, K, V read and O written once
    nbytes = 4 * 2 * 2 * 16 * 8 * 4
    assert m["arith_intensity"] == pytest.approx(m["gflop"] * 1e9 / nbytes)
    assert m["gbps"] == pytest.approx(nbytes / (m["median_us"] / 1e6) / 1e9)
    assert not any(k.startswith(("device_peak", "pct_")) for k in m)  # no measured ceilings on a CPU


@pytest.mark.parametrize("method", ["events", "cuda_graph", "profiler"])
def test_gpu_timing_methods_are_unsupported_on_cpu(job, method):
    result = job(f"timing.method={method}")
    assert result.status == "unsupported" and method in result.reason


def test_a_high_coefficient_of_variation_is_tagged(job):
    assert "timing.unstable" in job("timing.cv_threshold=0").tags
    assert "timing.unstable" not in job("timing.cv_threshold=100").tags


def test_a_bad_config_is_an_error_naming_the_field(job):
    result = job("shape.seq_len=0")
    assert result.status == "error" and "shape.seq_len" in result.reason


def test_a_device_that_is_absent_is_unsupported(job):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = job("device=cuda")
    assert result.status == "unsupported" and "CUDA" in result.reason


@pytest.fixture
def test_model():
    """Register a throw-away model for one test."""
    added = []

    def _add(name, build):
        register_model(name)(type(f"Test_{name}", (StubModel,), {"build": lambda self, attend: build(self)}))
        added.append(name)
        return name

    yield _add
    for name in added:
        MODELS.classes.pop(name, None)


def test_nan_output_is_wrong(job, test_model):
    name = test_model("nan_output", lambda w: (lambda x: x * float("nan"), (torch.ones(4, dtype=w.dtype),)))
    result = job(model=name)
    assert result.status == "wrong" and "NaN" in result.reason


def test_an_unexpected_exception_is_an_error_with_its_traceback(job, test_model):
    def broken(w):
        def fn():
            raise KeyError("boom")

        return fn, ()

    result = job(model=test_model("broken", broken))
    assert result.status == "error" and "boom" in result.reason
    assert "Traceback" in result.traceback and "KeyError" in result.traceback


def test_running_out_of_memory_is_oom_and_not_an_error(job, test_model):
    def too_big(w):
        def fn(x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")

        return fn, (torch.ones(1),)

    result = job(model=test_model("too_big", too_big))
    assert result.status == "oom" and "64.00 GiB" in result.reason and result.traceback is None


def test_the_cpu_allocator_failing_is_oom_too(job, test_model):
    def too_big(w):
        def fn(x):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

        return fn, (torch.ones(1),)

    assert job(model=test_model("too_big_cpu", too_big)).status == "oom"


@pytest.mark.parametrize("backend", ["math", "flash"])
def test_backward_alone_still_names_the_backend_that_ran(job, backend):
    # math's backward runs only generic ops: the backend is read from the forward
    result = job(f"backend={backend}", "mode=bwd", "dtype=float32")
    assert result.status == "ok" and result.tags["sdpa.kernel"] == backend


@pytest.mark.slow  # compiles until Dynamo's cache limit
def test_recompiling_while_timed_marks_the_job_invalid(job, test_model):
    def shape_shifter(w):
        calls = [0]

        def fn(x):
            calls[0] += 1
            return (x[: calls[0] % 7 + 1] * 2).sum()

        return fn, (torch.arange(8.0, dtype=w.dtype),)

    # Slices of a new length each call: Dynamo keeps compiling new graphs (until its cache limit).
    result = job("compile=true", "timing.warmup_s=0", model=test_model("shape_shifter", shape_shifter))
    assert result.status == "invalid" and "recompiled" in result.reason
    assert "median_us" not in result.metrics  # nothing timed with the compiler in it is reported


def test_a_job_keeps_its_raw_samples_and_its_case(job):
    result = job("dtype=float32")
    assert len(result.samples["wall"]) == result.metrics["wall_count"] >= 3
    assert sorted(result.samples["wall"])[len(result.samples["wall"]) // 2] > 0
    assert len(result.tags["case"]) == 16


def test_the_headline_median_is_its_methods_median_to_the_last_digit(job, monkeypatch):
    # 62.077946495264776 µs / 1e6 * 1e6 is 62.07794649526478: the summary then showed a `wall` column beside an
    # identical-looking median (a real sweep's two samples averaged to it).
    import attnbench.core.timing.stats as stats

    monkeypatch.setattr(stats.statistics, "median", lambda samples: 62.077946495264776)
    metrics = job().metrics
    assert metrics["median_us"] == metrics["wall_median_us"] == 62.077946495264776
