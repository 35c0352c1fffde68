"""On a CUDA device: every backend runs where it should, and the kernel that ran is the one asked for."""

from __future__ import annotations

import pytest
import torch

from conftest import FAST_TIMING, run_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
SEED = ["device=cuda", "shape=seed_sdpa", *FAST_TIMING]


@pytest.mark.parametrize("backend", ["math", "flash", "efficient", "cudnn"])
def test_every_forced_backend_runs_its_own_kernel_on_the_seed_shape(compose_cfg, backend):
    result = run_config(compose_cfg(*SEED, f"backend={backend}"))
    assert result.status == "ok", result.reason
    assert result.tags["sdpa.kernel"] == backend
    m = result.metrics
    assert m["events_median_us"] > 0 and m["wall_median_us"] > 0 and m["peak_mem_mib"] > 0
    assert m["max_rel_err"] < 1e-2  # fp16 against a float64 reference


def test_default_dispatch_records_which_kernel_it_picked(compose_cfg):
    result = run_config(compose_cfg(*SEED, "backend=default"))
    assert result.status == "ok"
    assert result.tags["sdpa.kernel"] in ("flash", "efficient", "cudnn")
    assert result.tags["kernels"]


def test_math_needs_far_more_memory_than_a_fused_kernel(compose_cfg):
    math = run_config(compose_cfg(*SEED, "backend=math")).metrics["peak_mem_mib"]
    flash = run_config(compose_cfg(*SEED, "backend=flash")).metrics["peak_mem_mib"]
    assert math > 4 * flash


def test_flash_refuses_float32_before_allocating(compose_cfg):
    result = run_config(compose_cfg(*SEED, "backend=flash", "dtype=float32"))
    assert result.status == "unsupported" and "float16 or bfloat16" in result.reason


def test_a_kernel_that_cannot_take_the_inputs_is_unsupported_with_pytorchs_reasons(compose_cfg):
    # grouped-query heads are beyond memory-efficient attention: PyTorch refuses at the first call and says why
    result = run_config(compose_cfg(*SEED, "backend=efficient", "shape.kv_heads=8"))
    assert result.status == "unsupported", result.reason
    assert "No available kernel" in result.reason and "num_heads" in result.reason  # warnings kept too


SMALL = ["device=cuda", "shape=long_context", "shape.seq_len=1024", "shape.batch=2", "dtype=bfloat16", *FAST_TIMING]
SDPA = ["default", "math", "flash", "efficient", "cudnn"]


@pytest.mark.parametrize("mask", ["causal", "sliding_window", "document", "prefix_lm"])
def test_flex_runs_its_fused_kernel_on_every_mask(compose_cfg, mask):
    result = run_config(compose_cfg(*SMALL, "backend=flex", f"mask={mask}"))
    assert result.status == "ok", result.reason
    assert result.tags["kernel"] == "flex fused" and result.metrics["max_rel_err"] < 1e-2
    assert "triton_tem_fused_flex_attention" in result.tags["flex.kernel"]
    assert float(result.tags.get("flex.block_sparsity_pct", 0)) > 0


@pytest.mark.parametrize("backend", [*SDPA, "flex", "naive"])
@pytest.mark.parametrize("shape", [["shape.kv_heads=4"], ["shape.kv_heads=2", "shape.q_len=1"],
                                   ["shape.q_len=128"]], ids=["gqa", "decode", "chunked_prefill"])
def test_gqa_and_decode_are_right_or_refused_never_wrong(compose_cfg, backend, shape):
    result = run_config(compose_cfg(*SMALL, f"backend={backend}", "mask=causal", *shape))
    grouped = any(s.startswith("shape.kv_heads") for s in shape)
    if backend == "efficient" and grouped:  # PyTorch 2.11/2.13: memory-efficient attention takes no GQA
        assert result.status == "unsupported" and "num_heads" in result.reason
        return
    assert result.status == "ok", result.reason
    assert result.metrics["rel_l2_err"] < 1e-2 and result.tags["check"] == "exact"


@pytest.mark.parametrize("backend", ["efficient", "cudnn", "default", "math"])
def test_sdpa_with_a_dense_mask_says_so(compose_cfg, backend):
    result = run_config(compose_cfg(*SMALL, f"backend={backend}", "mask=sliding_window"))
    assert result.status == "ok", result.reason
    assert result.tags["sdpa.kernel"].endswith("(dense mask)")


def test_flash_cannot_take_a_dense_mask(compose_cfg):
    result = run_config(compose_cfg(*SMALL, "backend=flash", "mask=document"))
    assert result.status == "unsupported" and "mask" in result.reason


@pytest.mark.parametrize("model", ["multihead_attention", "encoder_layer"])
def test_nn_modules_record_their_fast_path_and_kernel(compose_cfg, model):
    result = run_config(compose_cfg(*SMALL, "shape.kv_heads=16", f"model={model}", "backend=default", "mask=none"))
    assert result.status == "ok", result.reason
    assert result.tags["nn.fast_path"].startswith("yes") and result.tags["kernel"]


@pytest.mark.parametrize("backend", ["linear", "performer"])
def test_linear_attentions_run_on_cuda_exact_to_their_own_formula(compose_cfg, backend):
    result = run_config(compose_cfg(*SMALL, f"backend={backend}", "mask=causal"))
    assert result.status == "ok" and result.tags["check"] == "approximate"
    assert result.metrics["self_max_rel_err"] < 1e-2


def test_reduce_overhead_compiles_with_cuda_graphs_and_stays_correct(compose_cfg):
    result = run_config(compose_cfg(*SEED, "backend=flash", "compile=true", "compile_mode=reduce-overhead"))
    assert result.status == "ok", result.reason
    assert result.metrics["max_rel_err"] < 1e-2


def test_compiled_jobs_in_one_process_each_compile_their_own_backend(compose_cfg):
    """Inductor's caches do not key on the SDPA flags: without cold compiles, flash would reuse math's graph."""
    math = run_config(compose_cfg(*SEED, "backend=math", "compile=true"))
    flash = run_config(compose_cfg(*SEED, "backend=flash", "compile=true"))
    assert math.status == flash.status == "ok"
    assert math.tags["sdpa.kernel"] == "decomposed" and flash.tags["sdpa.kernel"] == "flash"
    assert flash.metrics["peak_mem_mib"] < math.metrics["peak_mem_mib"] / 4


@pytest.mark.parametrize("method", ["cuda_graph", "profiler"])
def test_launch_free_methods_agree_with_events_on_a_kernel_bound_call(compose_cfg, method):
    events = run_config(compose_cfg(*SEED, "backend=flash", "timing.method=events")).metrics["events_median_us"]
    result = run_config(compose_cfg(*SEED, "backend=flash", f"timing.method={method}"))
    assert result.status == "ok", result.reason
    assert result.tags["timing.headline"] == method
    assert abs(result.metrics[f"{method}_median_us"] / events - 1) < 0.1


def test_on_a_launch_bound_module_graph_replay_beats_the_host_and_kernels_bound_it(compose_cfg):
    base = ["device=cuda", "model=causal_self_attention", "shape=seed_causal_self_attention", "mask=causal",
            *FAST_TIMING]
    graph = run_config(compose_cfg(*base, "timing.method=cuda_graph")).metrics["cuda_graph_median_us"]
    wall = run_config(compose_cfg(*base, "timing.method=wall")).metrics["wall_median_us"]
    kernels = run_config(compose_cfg(*base, "timing.method=profiler")).metrics["profiler_median_us"]
    assert kernels <= 1.1 * graph and graph < wall


@pytest.mark.parametrize("backend", ["flash", "efficient", "cudnn"])
def test_training_step_on_fused_backends_with_correct_gradients(compose_cfg, backend):
    result = run_config(compose_cfg(*SEED, f"backend={backend}", "mode=fwd_bwd"))
    assert result.status == "ok", result.reason
    assert result.tags["sdpa.kernel"] == backend
    assert result.metrics["grad_max_rel_err"] < 2e-2 and result.metrics["max_rel_err"] < 1e-2


def test_device_ceilings_are_measured_and_quoted(compose_cfg):
    m = run_config(compose_cfg(*SEED, "backend=cudnn")).metrics
    assert m["device_peak_tflops"] > 50 and m["device_peak_gbps"] > 500
    assert 0 < m["pct_device_peak_tflops"] < 100
    if "datasheet_tflops" in m:
        assert m["device_peak_tflops"] < 1.05 * m["datasheet_tflops"]


def test_a_launch_bound_module_is_tagged_and_a_kernel_bound_call_is_not(compose_cfg):
    module = run_config(compose_cfg("device=cuda", "model=causal_self_attention", "shape=seed_causal_self_attention",
                                 "mask=causal", *FAST_TIMING))
    m = module.metrics
    assert module.status == "ok" and 0 < m["kernel_us"] < m["events_median_us"]
    assert "launch-bound" in module.tags["launch_bound"]  # eager, small: the host sets the pace
    kernel_bound = run_config(compose_cfg(*SEED, "backend=flash"))
    assert "launch_bound" not in kernel_bound.tags
    assert kernel_bound.metrics["kernel_us"] == pytest.approx(kernel_bound.metrics["events_median_us"], rel=0.15)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_the_gpus_launcher_gives_each_worker_its_own_gpu(tmp_path, store):
    from attnbench.store.results import read_all
    from conftest import run_script

    done = run_script("-m", "hydra/launcher=gpus", "device=cuda", "shape=tiny", *FAST_TIMING, "seed=range(8)",
                      store=store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_all(tmp_path / "multirun")
    assert len(records) == 8 and {r.status for r in records} == {"ok"}
    by_gpu: dict[str, list] = {}
    for r in records:
        assert r.tags["placement.cuda_visible_devices"] == r.tags["placement.gpu_uuid"]  # pinned to it
        by_gpu.setdefault(r.tags["placement.gpu_uuid"], []).append((r.started_ms, r.ended_ms))
    assert len(by_gpu) > 1  # the jobs were spread over the GPUs
    for spans in by_gpu.values():  # one job at a time on each GPU
        spans.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))


def test_a_cuda_job_records_the_gpu_clock_power_and_who_else_used_the_card(compose_cfg):
    pytest.importorskip("pynvml", reason="the clocks are read through NVML (nvidia-ml-py)")
    result = run_config(compose_cfg(*SEED, "backend=flash"))
    m = result.metrics
    assert result.status == "ok", result.reason
    assert 0 < m["gpu_sm_clock_min_mhz"] <= m["gpu_sm_clock_start_mhz"] <= m["gpu_max_sm_clock_mhz"]
    assert m["gpu_power_w"] > 0 and m["gpu_temperature_c"] > 0
    assert "threads.intra_op" in result.tags and "cpu_wait_share" in m


def test_a_large_shape_is_checked_on_a_recorded_sample_of_every_batch_element_and_head(compose_cfg):
    result = run_config(compose_cfg("device=cuda", "shape=long_context", "shape.seq_len=16384", "mask=causal",
                                 "dtype=bfloat16", "backend=flash", *FAST_TIMING))
    assert result.status == "ok", result.reason
    coverage = result.tags["check.coverage"]
    assert coverage.startswith("sampled: query rows 0–") and "of 16384, of every batch element and head" in coverage
    full = run_config(compose_cfg(*SEED, "backend=flash", "mode=fwd_bwd"))
    assert full.tags["check.coverage"] == "full: every element of the output and of each input gradient"
