"""Pure functions: the statistics, params for MLflow, the kernel-name mapping, the case key."""

from __future__ import annotations

import statistics

import pytest
import torch

from attnbench.core.backends.sdpa import is_no_kernel_error, kernel_family
from attnbench.core.correctness import compare
from attnbench.core.metrics import tflops_per_s
from attnbench.core.timing.stats import Stats
from attnbench.store.tracking.store import MAX_PARAM_VALUE, chunks, flatten, safe_name


def test_tflops_per_s():
    assert tflops_per_s(2_000_000_000_000, 0.5) == pytest.approx(4.0)


def test_stats_from_known_samples():
    samples = [10.0, 20.0, 30.0, 40.0, 100.0]
    s = Stats.from_samples(samples)
    assert s.median_us == 30.0 and s.mean_us == 40.0 and s.min_us == 10.0 and s.max_us == 100.0
    assert s.count == 5
    assert s.std_us == pytest.approx(statistics.stdev(samples))
    assert s.cv == pytest.approx(statistics.stdev(samples) / 40.0)
    # numpy.percentile's default (linear) interpolation: p10 between 10 and 20, p90 between 40 and 100
    assert s.p10_us == pytest.approx(14.0) and s.p90_us == pytest.approx(76.0)


def test_stats_of_one_sample_and_of_none():
    s = Stats.from_samples([5.0])
    assert (s.median_us, s.p10_us, s.p90_us, s.std_us, s.count) == (5.0, 5.0, 5.0, 0.0, 1)
    with pytest.raises(ValueError):
        Stats.from_samples([])


def test_stats_as_metrics_names_carry_the_method():
    metrics = Stats.from_samples([1.0, 2.0, 3.0]).as_metrics("events")
    assert metrics["events_median_us"] == 2.0 and metrics["events_count"] == 3
    assert all(k.startswith("events_") for k in metrics)


def test_compare_reports_max_abs_and_relative_error():
    ref = torch.tensor([1.0, -4.0, 2.0], dtype=torch.float64)
    out = torch.tensor([1.5, -4.0, 2.0], dtype=torch.float16)
    err = compare(out, ref)
    assert err["max_abs_err"] == pytest.approx(0.5) and err["max_rel_err"] == pytest.approx(0.5 / 4.0)
    assert err["rel_l2_err"] == pytest.approx(0.5 / (1 + 16 + 4) ** 0.5)


def test_flatten_nests_with_dots_and_stringifies_like_hydra():
    flat = flatten({"shape": {"batch": 2, "heads": 4}, "compile": True, "dtype": "float16", "x": None,
                    "sizes": [1, 2]})
    assert flat == {"shape.batch": "2", "shape.heads": "4", "compile": "true", "dtype": "float16",
                    "x": "null", "sizes": "[1, 2]"}


def test_flatten_respects_mlflow_limits():
    flat = flatten({"note": "x" * 10_000, "a(b)": {"c=d,e@f": 1}})
    assert len(flat["note"]) == MAX_PARAM_VALUE and flat["note"].endswith("...")
    assert list(flat)[1] == "a_b_.c_d_e_f"
    assert safe_name("backend.name/ok-1 2") == "backend.name/ok-1 2"


def test_chunks_keep_batches_within_the_limit():
    assert [len(c) for c in chunks(list(range(250)), 100)] == [100, 100, 50]


@pytest.mark.parametrize(
    "ops, kernels, family",
    [
        (["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu"], [], "flash"),
        (["aten::_scaled_dot_product_attention_math", "aten::bmm", "aten::_softmax"], [], "math"),
        (["aten::_scaled_dot_product_efficient_attention"], ["fmha_cutlassF_f16_aligned_64x64_rf_sm80"], "efficient"),
        (["aten::_scaled_dot_product_cudnn_attention"], [], "cudnn"),
        ([], ["cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3"], "cudnn"),
        ([], ["void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<32>>"], "flash"),
        (["Torch-Compiled Region: 0/0", "aten::mm"], ["triton_per_fused__softmax_0"], "decomposed"),
        (["aten::_native_multi_head_attention", "aten::bmm", "aten::_masked_softmax"], [], "unfused"),
        (["aten::flash_attn_3::fwd"], [], "flash"),
    ],
)
def test_kernel_family_from_profiler_names(ops, kernels, family):
    assert kernel_family(ops, kernels) == family


def test_no_kernel_errors_are_recognised_through_wrapping():
    inner = RuntimeError("No available kernel. Aborting execution.")
    try:
        try:
            raise inner
        except RuntimeError as e:
            raise ValueError("Dynamo failed while tracing") from e
    except ValueError as outer:
        assert is_no_kernel_error(outer)
    assert not is_no_kernel_error(RuntimeError("CUDA error: an illegal memory access"))


def test_recorded_warnings_survive_the_exception_they_explain():
    import warnings

    from attnbench.core.pytorch_warnings import recorded_warnings

    with pytest.raises(RuntimeError):
        with recorded_warnings() as warned:
            warnings.warn("Flash attention kernel not used because: (Triggered internally at /x/sdp_utils.cpp:9.)")
            warnings.warn("dynamo_pgo force disabled by torch.compiler.config.force_disable_caches")
            raise RuntimeError("No available kernel. Aborting execution.")
    assert warned == ["Flash attention kernel not used because:"]


def test_a_relative_sqlite_store_gets_an_absolute_artifact_folder(tmp_path, monkeypatch):
    from attnbench.store.tracking.store import artifact_location

    monkeypatch.chdir(tmp_path)
    assert artifact_location(None, "sqlite:///mlflow.db") == (tmp_path / "artifacts").as_uri()
    assert artifact_location(None, "http://server:5000") is None


def test_a_case_ignores_timing_and_tracking_but_not_what_is_measured(compose_cfg):
    from attnbench.harness.case import case_key

    base = case_key(compose_cfg("shape=tiny"))
    assert case_key(compose_cfg("shape=tiny", "timing.min_reps=99", "tracking.experiment=other")) == base
    for changed in ("backend=flash", "shape.seq_len=32", "dtype=float32", "compile=true", "seed=1", "mode=bwd",
                    "mask=causal", "shape.kv_heads=1", "model=causal_self_attention"):
        assert case_key(compose_cfg("shape=tiny", changed)) != base, changed
    assert case_key(compose_cfg("shape=tiny", return_hydra_config=True)) == base  # Hydra's node is not a case


def test_a_copy_on_another_host_is_told_its_commit(monkeypatch, tmp_path):
    from attnbench.core import environment

    environment.git_commit.cache_clear()
    monkeypatch.setenv("ATTNBENCH_GIT_COMMIT", "abc1234")
    assert environment.git_commit(tmp_path) == "abc1234"  # even where a .git (of another commit) would answer
    monkeypatch.delenv("ATTNBENCH_GIT_COMMIT")
    environment.git_commit.cache_clear()
    assert environment.git_commit(tmp_path) == "unknown"  # no .git, nothing told
    environment.git_commit.cache_clear()


def test_a_call_whose_events_far_exceed_its_kernels_is_launch_bound():
    from attnbench.core.job import _launch_bound

    assert _launch_bound({"events_median_us": 136.0, "kernel_us": 28.0, "wall_median_us": 122.0}) == (
        "events 136.0 µs against 28.0 µs of kernels, 122.0 µs per call in a Python loop (wall): launch-bound")
    assert _launch_bound({"events_median_us": 125.0, "kernel_us": 121.9}) is None  # kernel-bound: they agree
    assert _launch_bound({"wall_median_us": 50.0}) is None  # the CPU: no kernels to compare with
