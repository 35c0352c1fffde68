"""On a CUDA device: every backend runs where it should, and the kernel that ran is the one asked for."""

from __future__ import annotations

import pytest
import torch

from attnbench.job import run_job
from conftest import FAST_TIMING

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
SEED = ["device=cuda", "shape=seed_sdpa", *FAST_TIMING]


@pytest.mark.parametrize("backend", ["math", "flash", "efficient", "cudnn"])
def test_every_forced_backend_runs_its_own_kernel_on_the_seed_shape(compose_cfg, backend):
    result = run_job(compose_cfg(*SEED, f"backend={backend}"))
    assert result["status"] == "ok", result["reason"]
    assert result["tags"]["sdpa.kernel"] == backend
    m = result["metrics"]
    assert m["events_median_us"] > 0 and m["wall_median_us"] > 0 and m["peak_mem_mib"] > 0
    assert m["max_rel_err"] < 1e-2  # fp16 against a float64 reference


def test_default_dispatch_records_which_kernel_it_picked(compose_cfg):
    result = run_job(compose_cfg(*SEED, "backend=default"))
    assert result["status"] == "ok"
    assert result["tags"]["sdpa.kernel"] in ("flash", "efficient", "cudnn")
    assert result["tags"]["kernels"]


def test_math_needs_far_more_memory_than_a_fused_kernel(compose_cfg):
    math = run_job(compose_cfg(*SEED, "backend=math"))["metrics"]["peak_mem_mib"]
    flash = run_job(compose_cfg(*SEED, "backend=flash"))["metrics"]["peak_mem_mib"]
    assert math > 4 * flash


def test_flash_refuses_float32_with_pytorchs_reasons(compose_cfg):
    result = run_job(compose_cfg(*SEED, "backend=flash", "dtype=float32"))
    assert result["status"] == "unsupported"
    assert "No available kernel" in result["reason"] and "|" in result["reason"]  # warnings kept too


def test_reduce_overhead_compiles_with_cuda_graphs_and_stays_correct(compose_cfg):
    result = run_job(compose_cfg(*SEED, "backend=flash", "compile=true", "compile_mode=reduce-overhead"))
    assert result["status"] == "ok", result["reason"]
    assert result["metrics"]["max_rel_err"] < 1e-2


def test_compiled_jobs_in_one_process_each_compile_their_own_backend(compose_cfg):
    """Inductor's caches do not key on the SDPA flags: without cold compiles, flash would reuse math's graph."""
    math = run_job(compose_cfg(*SEED, "backend=math", "compile=true"))
    flash = run_job(compose_cfg(*SEED, "backend=flash", "compile=true"))
    assert math["status"] == flash["status"] == "ok"
    assert math["tags"]["sdpa.kernel"] == "decomposed" and flash["tags"]["sdpa.kernel"] == "flash"
    assert flash["metrics"]["peak_mem_mib"] < math["metrics"]["peak_mem_mib"] / 4
