"""The backends that call third-party kernels directly (fa4, fa3, fa2, flashinfer, xformers, sage): without their
libraries, `unsupported` with the install line; with a stand-in of each library (tests/kernel_standins.py, torch on
the CPU), the calling convention — layout, grouped heads, masks, page tables — gives the float64 reference's answer."""

from __future__ import annotations

import pytest
import torch

import kernel_standins as standins
from attnbench.core import correctness
from attnbench.core.backends import get_backend
from attnbench.core.correctness import ReferenceAttention
from attnbench.core.masks import get_mask
from attnbench.core.models import get_model
from attnbench.core.problem import Problem
from attnbench.core.spec import Mode, Shape
from conftest import FAST_TIMING, run_config

THIRD_PARTY = ("fa4", "fa3", "fa2", "flashinfer", "xformers", "sage")
EXTRAS = {"fa4": "attnbench[fa4]", "flashinfer": "attnbench[flashinfer]", "xformers": "attnbench[xformers]",
          "sage": "attnbench[sage]", "fa2": "pip install flash-attn --no-build-isolation",
          "fa3": "cd hopper && python setup.py install"}
CPU = torch.device("cpu")


def problem(mask="causal", batch=2, heads=4, kv_heads=2, seq_len=48, q_len=None, head_dim=16, window=8,
            page_size=0) -> Problem:
    shape = Shape(batch, heads, kv_heads, seq_len, q_len or seq_len, head_dim, page_size)
    config = get_mask(mask).Config(name=mask, **({"window": window} if mask == "sliding_window" else {}))
    return Problem.from_config(shape, get_mask(mask)(config, shape.q_len, shape.seq_len))


def error_against_float64(backend_name: str, p: Problem, dtype=torch.float32) -> float:
    """The backend's output, built and called as a job does (inputs from the attention model), against float64."""
    backend = get_backend(backend_name)(get_backend(backend_name).Config(name=backend_name))
    model = get_model("attention")(get_model("attention").Config(name="attention"), p, backend, dtype, CPU)
    attend = backend.build(p, CPU, dtype)
    fn, (q, k, v) = model.build(attend)
    out = fn(q, k, v)
    assert out.shape == p.q_shape and out.dtype == dtype
    expected = ReferenceAttention(p)(q.double(), k.double(), v.double())
    return float((out.double() - expected).norm() / expected.norm())


@pytest.mark.parametrize("name", THIRD_PARTY)
def test_without_its_library_a_backend_is_unsupported_with_the_install_line(compose_cfg, name):
    record = run_config(compose_cfg(f"backend={name}", "shape=tiny", "device=cpu", *FAST_TIMING))
    assert record.status == "unsupported", record.reason
    assert record.reason.startswith(f"backend={name}: ") and "is not installed" in record.reason
    assert EXTRAS[name] in record.reason


@pytest.fixture
def fa4(monkeypatch):
    root, cute, interface = standins.flash_attn_cute()
    standins.install(monkeypatch, root, cute, interface)
    return cute


@pytest.mark.parametrize("mask, q_len", [("none", None), ("causal", None), ("causal", 16), ("causal", 1),
                                         ("sliding_window", None), ("sliding_window", 1)])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_fa4_layout_heads_and_masks_give_the_reference(fa4, mask, q_len, heads, kv_heads):
    p = problem(mask, heads=heads, kv_heads=kv_heads, q_len=q_len)
    assert error_against_float64("fa4", p) < 1e-6
    assert fa4.calls[-1]["kv_heads"] == kv_heads  # grouped heads by count: keys and values are not expanded


def test_fa4_passes_a_causal_mask_as_its_flag_and_a_window_as_left_0(fa4):
    error_against_float64("fa4", problem("causal"))
    error_against_float64("fa4", problem("sliding_window", window=8))
    assert [(c["causal"], c["window_size"]) for c in fa4.calls] == [(True, (None, None)), (False, (7, 0))]


def test_fa4_reads_its_head_dim_rule_from_the_library(fa4):
    backend = get_backend("fa4")(get_backend("fa4").Config(name="fa4"))
    assert backend._head_dim_support(problem(head_dim=64), 9, torch.bfloat16) is None
    reason = backend._head_dim_support(problem(head_dim=12), 9, torch.bfloat16)
    assert reason == "backend=fa4: (head_dim, head_dim_v)=(12, 12) is not supported on SM90."


def test_fa4_refusals_raised_inside_the_library_are_unsupported_others_are_errors(fa4):
    backend = get_backend("fa4")(get_backend("fa4").Config(name="fa4"))

    def raise_in(filename, exc):
        code = compile("raise exc", filename, "exec")
        try:
            exec(code, {"exc": exc})
        except Exception as e:  # noqa: BLE001 - the test's own exception, with its traceback
            return e

    inside = raise_in("/site/flash_attn/cute/interface.py", AssertionError("Unsupported compute capability"))
    assert backend.explain_failure(inside, []) == (
        "backend=fa4: flash_attn.cute refuses these inputs: Unsupported compute capability")
    assert backend.explain_failure(raise_in("/site/attnbench/x.py", AssertionError("a bug")), []) is None
    crash = raise_in("/site/flash_attn/cute/interface.py", RuntimeError("CUDA error: an illegal memory access"))
    assert backend.explain_failure(crash, []) is None


@pytest.mark.parametrize("name, modules", [("fa2", standins.flash_attn_2), ("fa3", lambda: (standins.flash_attn_3(),))])
@pytest.mark.parametrize("mask, q_len", [("causal", None), ("causal", 16), ("sliding_window", None), ("none", 1)])
def test_fa2_and_fa3_layout_heads_and_masks_give_the_reference(monkeypatch, name, modules, mask, q_len):
    standins.install(monkeypatch, *modules())
    assert error_against_float64(name, problem(mask, q_len=q_len)) < 1e-6


@pytest.mark.parametrize("batch, q_len, page_size, api", [
    (1, None, 0, "single_prefill"), (2, None, 0, "batch_prefill_ragged"), (2, 16, 0, "batch_prefill_ragged"),
    (1, 1, 0, "single_decode"), (2, 1, 0, "batch_decode_paged(page_size=16)"),
    (2, 1, 16, "batch_decode_paged(page_size=16)"), (3, 1, 8, "batch_decode_paged(page_size=8)")])
@pytest.mark.parametrize("mask", ["causal", "sliding_window"])
def test_flashinfer_apis_and_page_tables_give_the_reference(monkeypatch, batch, q_len, page_size, api, mask):
    standins.install(monkeypatch, standins.flashinfer())
    p = problem(mask, batch=batch, q_len=q_len, page_size=page_size)
    assert error_against_float64("flashinfer", p) < 1e-6
    backend = get_backend("flashinfer")(get_backend("flashinfer").Config(name="flashinfer"))
    backend.build(p, CPU, torch.float32)
    assert backend.tags()["flashinfer.api"] == api


def test_a_paged_cache_is_refused_by_backends_that_read_a_contiguous_one_and_must_be_whole_pages(compose_cfg):
    record = run_config(compose_cfg("backend=math", "shape=tiny", "shape.q_len=1", "shape.page_size=4", "device=cpu",
                                    *FAST_TIMING))
    assert record.status == "unsupported" and "reads a contiguous KV cache; shape.page_size=4" in record.reason
    # tiny's 64 positions are not whole pages of 24
    from attnbench.core.validation import _cache_support

    backend = get_backend("flashinfer")(get_backend("flashinfer").Config(name="flashinfer"))
    assert "must divide shape.seq_len=48" in _cache_support(backend, problem(q_len=1, page_size=20))


def test_flashinfer_page_table_lists_each_sequences_pages_in_order():
    from attnbench.core.backends.flashinfer import page_table

    indptr, indices, last = page_table(batch=2, per_sequence=3, page_size=16, device=CPU)
    assert indptr.tolist() == [0, 3, 6] and indices.tolist() == [0, 1, 2, 3, 4, 5] and last.tolist() == [16, 16]
    assert {t.dtype for t in (indptr, indices, last)} == {torch.int32}


@pytest.mark.parametrize("mask, q_len", [("none", None), ("causal", None), ("causal", 16), ("sliding_window", 1)])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_xformers_layout_grouped_heads_and_biases_give_the_reference(monkeypatch, mask, q_len, heads, kv_heads):
    standins.install(monkeypatch, *standins.xformers())
    assert error_against_float64("xformers", problem(mask, heads=heads, kv_heads=kv_heads, q_len=q_len)) < 1e-6


def test_xformers_without_its_cpp_operators_is_unsupported_with_its_own_message(monkeypatch):
    from attnbench.core.backends.xformers import cpp_ops_problem

    error = Exception("xFormers can't load C++/CUDA extensions. xFormers was built for:\n"
                      "    PyTorch 2.10.0+cu128 with CUDA 1208 (you have 2.11.0+cu130)")
    standins.install(monkeypatch, *standins.xformers(cpp_library_error=error))
    assert cpp_ops_problem() == ("backend=xformers: xFormers can't load C++/CUDA extensions. xFormers was built "
                                 "for: PyTorch 2.10.0+cu128 with CUDA 1208 (you have 2.11.0+cu130)")
    standins.install(monkeypatch, *standins.xformers())
    assert cpp_ops_problem() is None


@pytest.mark.parametrize("mask, heads, kv_heads", [("none", 4, 4), ("causal", 4, 2)])
def test_sage_layout_and_causal_mask_give_the_reference(monkeypatch, mask, heads, kv_heads):
    standins.install(monkeypatch, standins.sageattention())
    assert error_against_float64("sage", problem(mask, heads=heads, kv_heads=kv_heads)) < 1e-6


def test_sage_refuses_what_its_top_left_causal_mask_would_get_wrong(monkeypatch):
    standins.install(monkeypatch, standins.sageattention())
    sage = get_backend("sage")(get_backend("sage").Config(name="sage"))
    cuda = torch.device("cuda")  # supports() allocates nothing: the device is only compared
    reason = sage.supports(problem("causal", q_len=1, head_dim=64), cuda, torch.float16, Mode.fwd)
    assert reason and "aligns its causal mask top-left" in reason
    assert sage.supports(problem("causal", head_dim=64), cuda, torch.float16, Mode.fwd) is None
    assert "no backward" in sage.supports(problem("causal", head_dim=64), cuda, torch.float16, Mode.fwd_bwd)


def test_sage_is_approximate_and_judged_against_softmax_with_its_own_tolerances():
    from attnbench.core.correctness import TOLERANCE

    sage = get_backend("sage")
    assert sage.approximate and sage.tolerance_class == "quantized"
    assert sage(sage.Config(name="sage")).reference(problem()) is None  # no formula of its own: softmax
    assert {("quantized", "normal", torch.float16), ("quantized", "normal", torch.bfloat16)} <= set(TOLERANCE)


def test_flashinfer_reads_a_contiguous_cache_as_pages_of_16_or_one_page_where_16_does_not_divide(monkeypatch):
    standins.install(monkeypatch, standins.flashinfer())
    for seq_len, page in ((48, 16), (40, 40)):
        p = problem("causal", q_len=1, seq_len=seq_len)
        assert error_against_float64("flashinfer", p) < 1e-6
        backend = get_backend("flashinfer")(get_backend("flashinfer").Config(name="flashinfer"))
        backend.build(p, CPU, torch.float32)
        assert backend.tags()["flashinfer.api"] == f"batch_decode_paged(page_size={page})"


def test_a_failure_inside_torchs_fa4_glue_makes_flash4_unsupported_naming_both_versions():
    flash4 = get_backend("flash4")(get_backend("flash4").Config(name="flash4"))
    code = compile("out, lse = (1, 2, 3, 4, 5)", "/venv/torch/nn/attention/_fa4.py", "exec")
    try:
        exec(code, {})
    except ValueError as e:
        reason = flash4.explain_failure(e, [])
    assert reason.startswith(f"backend=flash4: torch {torch.__version__}'s FA4 route does not work with flash-attn-4 ")
    assert "ValueError: too many values to unpack" in reason
    assert flash4.explain_failure(ValueError("elsewhere"), []) is None


@pytest.mark.parametrize("broken", [False, True])
def test_a_broken_sage_is_wrong_under_its_own_tolerance(monkeypatch, broken):
    from attnbench.core.correctness import check

    sage_module = standins.sageattention()
    if broken:  # a kernel that drops its causal mask
        working = sage_module.sageattn
        sage_module.sageattn = lambda q, k, v, is_causal=False, **kwargs: working(q, k, v, is_causal=False, **kwargs)
    standins.install(monkeypatch, sage_module)
    p = problem("causal", head_dim=64)
    sage = get_backend("sage")(get_backend("sage").Config(name="sage"))
    model = get_model("attention")(get_model("attention").Config(name="attention"), p, sage, torch.bfloat16, CPU)
    fn, args = model.build(sage.build(p, CPU, torch.bfloat16))
    verdict = check(model, sage, Mode.fwd, args, fn(*args))
    assert verdict.tags["check"] == "approximate"
    assert bool(verdict.wrong) is broken, verdict.wrong
    if broken:
        assert "against float64 softmax attention" in verdict.wrong


@pytest.fixture
def on_cpu():
    """Run a library backend as a whole job on the CPU, where its stand-in computes: its CUDA rule left out."""
    from attnbench.core.backends import BACKENDS, Backend, register_backend

    added = []

    def as_cpu_job(name: str) -> str:
        added.append(f"{name}_on_cpu")
        register_backend(added[-1])(type(f"{name}OnCpu", (get_backend(name),), {"supports": Backend.supports}))
        return added[-1]

    yield as_cpu_job
    for name in added:
        BACKENDS.classes.pop(name)


def job_with(compose_cfg, backend: str, *overrides: str):
    from omegaconf import OmegaConf

    cfg = compose_cfg("shape=tiny", "device=cpu", "dtype=float32", *FAST_TIMING, *overrides)
    OmegaConf.update(cfg, "backend", {"name": backend}, merge=False)
    return run_config(cfg)


def remember_inputs(monkeypatch, library, function: str) -> list[torch.Tensor]:
    """Wrap library.function (or a wrapper class's method) to keep the query tensor of every call: kept alive, so
    that two calls given two tensor objects are told apart."""
    seen, call = [], getattr(library, function)

    def remembering(*args, **kwargs):
        seen.append(next(a for a in args if isinstance(a, torch.Tensor)))
        return call(*args, **kwargs)

    monkeypatch.setattr(library, function, remembering)
    return seen


@pytest.mark.parametrize("mask", ["none", "causal"])
def test_a_fa4_job_times_the_library_call_alone_on_inputs_converted_once(compose_cfg, fa4, on_cpu, monkeypatch, mask):
    seen = remember_inputs(monkeypatch, fa4, "flash_attn_func")
    record = job_with(compose_cfg, on_cpu("fa4"), f"mask={mask}")
    assert record.status == "ok" and record.tags["check"] == "exact", record.reason
    assert len(seen) > 10 and all(q is seen[0] for q in seen)  # every call, timed or not: the same sequence-major q
    assert seen[0].is_contiguous() and seen[0].shape == (2, 16, 2, 8)


@pytest.mark.parametrize("coverage", ["full", "sampled"])
def test_a_fa4_training_job_checks_its_gradients_through_the_library_layout(compose_cfg, fa4, on_cpu, monkeypatch,
                                                                            coverage):
    if coverage == "sampled":  # a backward of its own through the sampled rows, given in the library's layout
        monkeypatch.setitem(correctness.FULL_CHECK_FLOPS, "cpu", 1e3)
    record = job_with(compose_cfg, on_cpu("fa4"), "mask=causal", "mode=fwd_bwd")
    assert record.status == "ok" and record.tags["check"] == "exact", record.reason
    assert record.tags["check.coverage"].startswith(coverage)
    assert record.metrics["grad_rel_l2_err"] < 1e-6


def test_a_fa4_whose_output_is_wrong_in_its_own_layout_is_wrong(compose_cfg, fa4, on_cpu, monkeypatch):
    call = fa4.flash_attn_func
    monkeypatch.setattr(fa4, "flash_attn_func", lambda q, k, v, **kw: (call(q, k, v, **kw)[0].flip(1), None))
    record = job_with(compose_cfg, on_cpu("fa4"), "mask=causal")
    assert record.status == "wrong" and "float64 softmax attention" in record.reason


@pytest.mark.parametrize("extra, wrapper, function", [
    (["shape.q_len=1", "shape.page_size=4"], "BatchDecodeWithPagedKVCacheWrapper", "run"),
    ([], "BatchPrefillWithRaggedKVCacheWrapper", "run"),
    (["shape.batch=1"], None, "single_prefill_with_kv_cache"),
    (["shape.batch=1", "shape.q_len=1"], None, "single_decode_with_kv_cache")])
def test_a_flashinfer_job_times_the_library_call_alone(compose_cfg, on_cpu, monkeypatch, extra, wrapper, function):
    library = standins.flashinfer()
    standins.install(monkeypatch, library)
    seen = remember_inputs(monkeypatch, getattr(library, wrapper) if wrapper else library, function)
    record = job_with(compose_cfg, on_cpu("flashinfer"), "mask=causal", *extra)
    assert record.status == "ok" and record.tags["check"] == "exact", record.reason
    assert len(seen) > 10 and all(q is seen[0] for q in seen)


def test_a_gradient_enters_the_librarys_layout_whatever_the_outputs_strides(monkeypatch):
    """xFormers' grouped output (B, M, G, H/G, K) in another memory order: `leave`'s reshape then copies, and a
    gradient written through that copy never reached the library's layout (a sampled check's own backward ran on
    uninitialised memory: poisoned here with NaN, so that it shows every time)."""
    from attnbench.core.job import Step

    empty_like = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda t, **kwargs: empty_like(t, **kwargs).fill_(float("nan")))
    out = torch.randn(2, 16, 2, 2, 8).permute(0, 3, 2, 1, 4).contiguous().permute(0, 3, 2, 1, 4)  # (B, M, G, H/G, K)
    step = Step(forward=lambda: out, args=(), wrt=[], out=out,
                leave=lambda o: o.reshape(o.shape[0], o.shape[1], 4, 8).transpose(1, 2))  # as xFormers' backend's
    grad = torch.randn(2, 4, 16, 8)
    assert torch.equal(step.leave(step.entered(grad)), grad)
