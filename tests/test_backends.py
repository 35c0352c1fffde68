"""Backends on the CPU: the registry and its plugins, every backend × mask × model, and the verdicts that keep a
wrong kernel or a silent fallback from being recorded as `ok`."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.core.backends import BACKENDS, register_backend, registered_backends
from attnbench.core.backends.sdpa import Flash, Sdpa
from attnbench.core.masks import registered_masks
from attnbench.core.models import registered_models
from conftest import CONF, REPO, run_config, run_script

# Nothing to time here: one sample each, so the whole matrix stays quick.
ONE_SAMPLE = ["device=cpu", "timing.warmup_s=0", "timing.min_time_s=0", "timing.min_reps=1", "timing.max_reps=1"]
# Small enough for the CPU, not so small that every mask is trivial: 2 documents, a window of 8, a prefix of 8.
SMALL = ["shape=tiny", "shape.seq_len=32", "shape.heads=4", "shape.kv_heads=2", "dtype=float32"]
MASK_FIELDS = {"sliding_window": ["mask.window=8"], "document": ["mask.documents=2"], "prefix_lm": ["mask.prefix=8"]}
BUILT_IN = ["default", "math", "flash", "efficient", "cudnn", "flash3", "flash4", "flex", "flex_flash", "naive",
            "linear", "performer", "fa4", "fa3", "fa2", "flashinfer", "xformers", "sage"]
EXACT_ON_CPU = ["default", "math", "flash", "flex", "naive"]


def _our_models() -> list[str]:
    """attnbench's models: other test modules register models of their own (one of them takes its process down),
    and which of those are registered at collection depends on the order the test files are given in."""
    return sorted(name for name, cls in registered_models().items() if cls.__module__.startswith("attnbench."))


def test_the_built_in_backends_each_have_a_config_file():
    assert set(BUILT_IN) <= set(registered_backends())
    assert {p.stem for p in (CONF / "backend").glob("*.yaml")} == set(BUILT_IN)
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} == set(_our_models())
    assert {p.stem for p in (CONF / "mask").glob("*.yaml")} == set(registered_masks())


def _masks(backend: str, model: str) -> list[str]:
    """Every mask, except for flex in the CausalSelfAttention module. Flex compiles a kernel per mask (seconds
    each on a CPU): each mask's kernel is checked under the bare call (model=attention, every mask), and the module
    calls flex the same way whatever the mask, so one mask (its own, causal) checks flex inside the module."""
    if (backend, model) == ("flex", "causal_self_attention"):
        return ["causal"]
    return sorted(registered_masks())


def _matrix_marks(backend: str, model: str) -> list:
    """flex compiles (Inductor, seconds a mask): `make test-long`. `make test-fast` keeps, under every mask, each
    exact backend that runs on a CPU bare and each model calling math; the other backends' options are composed by
    test_config, the approximate ones run by the tests below, the library ones refused by test_kernel_libraries."""
    if backend == "flex":
        return [pytest.mark.long]
    return [] if (model == "attention" and backend in EXACT_ON_CPU) or backend == "math" else [pytest.mark.slow]


@pytest.mark.parametrize("backend, model", [pytest.param(b, m, marks=_matrix_marks(b, m))
                                            for b in BUILT_IN for m in _our_models()])
def test_every_backend_mask_and_model_runs_or_says_why_not(compose_cfg, model, backend):
    for mask in _masks(backend, model):
        cfg = compose_cfg(*ONE_SAMPLE, *SMALL, f"model={model}", f"backend={backend}", f"mask={mask}",
                          *MASK_FIELDS.get(mask, []))
        result = run_config(cfg)
        where = f"{backend} × {mask} × {model}: {result.status} {result.reason}"
        assert result.status in ("ok", "unsupported", "fallback"), where
        if result.status == "unsupported":
            assert len(result.reason) > 20, where
            continue
        assert result.tags["kernel"], where  # what ran, whatever it was
        if result.status == "fallback":
            assert result.tags["kernel"] in result.reason, where
        if result.tags["check"] == "exact":
            assert result.metrics["max_rel_err"] < 1e-4, where
        else:
            assert result.tags["check"] == "approximate" and result.metrics["self_max_rel_err"] < 1e-4


GQA_SHAPES = {
    "gqa": ["shape.heads=8", "shape.kv_heads=2"],
    "mqa_decode": ["shape.heads=8", "shape.kv_heads=1", "shape.q_len=1", "shape.seq_len=40"],  # one decode step
    "chunked_prefill": ["shape.heads=4", "shape.kv_heads=2", "shape.q_len=8"],  # the last 8 of 32 positions
}
GQA_MASKS = ["none", "causal", "sliding_window"]
# Every shape × mask for the backends that run in milliseconds. Flex compiles each case (seconds on a CPU): three
# cases that between them take each shape and each mask once, an offset mask in both shorter-query shapes (the
# query positions must line up with the last keys: causal for a chunk, a window for one decode step), and no mask
# (no BlockMask at all) under GQA. Flex under each mask at full length with GQA heads: the matrix test above.
FLEX_GQA_CASES = [("gqa", "none"), ("mqa_decode", "sliding_window"), ("chunked_prefill", "causal")]
GQA_CASES = [(backend, shape, mask) for backend in EXACT_ON_CPU if backend != "flex"
             for shape in GQA_SHAPES for mask in GQA_MASKS] + [("flex", shape, mask) for shape, mask in FLEX_GQA_CASES]


# `make test-fast` takes math under every shape and mask, and each other backend but flex (which compiles each case:
# seconds) under one.
FAST_GQA_CASES = [("math", shape, mask) for shape in GQA_SHAPES for mask in GQA_MASKS] + [
    (backend, "gqa", "causal") for backend in EXACT_ON_CPU if backend not in ("math", "flex")]


@pytest.mark.parametrize("backend, shape, mask", [
    pytest.param(*case, marks=[] if case in FAST_GQA_CASES else [pytest.mark.slow], id="-".join(case))
    for case in GQA_CASES])
def test_grouped_query_and_decode_outputs_equal_the_float64_reference(compose_cfg, backend, shape, mask):
    shape = GQA_SHAPES[shape]
    result = run_config(compose_cfg(*ONE_SAMPLE, *SMALL, *shape, f"backend={backend}", f"mask={mask}",
                                 *MASK_FIELDS.get(mask, [])))
    assert result.status == "ok", result.reason
    assert result.tags["check"] == "exact" and result.metrics["max_rel_err"] < 1e-5


@pytest.fixture
def planted():
    """Register a backend for one test."""
    added = []

    def _plant(name: str, cls):
        register_backend(name)(cls)
        added.append(name)
        return name

    yield _plant
    for name in added:
        BACKENDS.classes.pop(name, None)


class OffByScale(Sdpa):
    """A kernel with a bug: it forgets the 1/√D scale."""

    def build(self, problem, device, dtype):
        def attend(q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0, enable_gqa=True)

        return attend


class OneElementOff(Sdpa):
    """A kernel with a localised bug: one output element of every head is off by 0.003% of the largest output."""

    def build(self, problem, device, dtype):
        def attend(q, k, v):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True).clone()
            out[..., -1, 0] += 3e-5 * out.abs().max()
            return out

        return attend


class FlashThatRunsMath(Flash):
    """Promises flash, silently runs math: what a dispatcher fallback looks like."""

    def context(self):
        return sdpa_kernel(SDPBackend.MATH)


def _run_planted(compose_cfg, name: str) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_cfg(*ONE_SAMPLE, *SMALL)
    OmegaConf.update(cfg, "backend", {"name": name}, merge=False)
    return run_config(cfg)


def test_a_wrong_kernel_is_wrong_not_ok(compose_cfg, planted):
    result = _run_planted(compose_cfg, planted("off_by_scale", OffByScale))
    assert result.status == "wrong", result.reason
    assert "tolerance" in result.reason and result.metrics["max_rel_err"] > 1e-4
    assert result.metrics["median_us"] > 0  # still timed: a wrong kernel's speed is worth seeing, flagged


@pytest.mark.slow  # 4096 positions against float64 (~2 s)
def test_a_few_elements_far_off_are_wrong_even_when_the_norm_hides_them(compose_cfg, planted):
    from omegaconf import OmegaConf

    from attnbench.core.correctness import TOLERANCE

    cfg = compose_cfg(*ONE_SAMPLE, *SMALL, "shape.seq_len=4096")  # float32
    OmegaConf.update(cfg, "backend", {"name": planted("one_element_off", OneElementOff)}, merge=False)
    result = run_config(cfg)
    limits = TOLERANCE[("fused", "normal", torch.float32)]
    assert result.metrics["rel_l2_err"] < limits.rel_l2_err  # the norm alone would pass it
    assert result.status == "wrong" and "max_rel_err" in result.reason, result.reason


def test_a_silent_fallback_is_fallback_with_both_names(compose_cfg, planted):
    result = _run_planted(compose_cfg, planted("flash_that_runs_math", FlashThatRunsMath))
    assert result.status == "fallback", result.reason
    assert "flash" in result.reason and "math" in result.reason
    assert result.tags["kernel"] == "math"


def test_a_flex_that_ran_unfused_is_a_fallback(compose_cfg, monkeypatch):
    """Uncompiled flex materialises the scores: its profile must not pass for the fused kernel."""
    import attnbench.core.backends.flex as flex_backend

    monkeypatch.setattr(flex_backend.torch, "compile", lambda fn, **kwargs: fn)
    result = run_config(compose_cfg(*ONE_SAMPLE, *SMALL, "backend=flex", "mask=causal"))
    assert result.status == "fallback" and "unfused" in result.reason


def test_nn_modules_are_unsupported_for_backends_they_cannot_call(compose_cfg):
    result = run_config(compose_cfg(*ONE_SAMPLE, *SMALL, "shape.kv_heads=4", "model=multihead_attention",
                                 "backend=flex"))
    assert result.status == "unsupported"
    assert "scaled_dot_product_attention" in result.reason and "backend=flex" in result.reason


def test_approximate_backends_are_tagged_and_judged_against_their_own_formula(compose_cfg):
    result = run_config(compose_cfg(*ONE_SAMPLE, *SMALL, "backend=performer", "mask=causal"))
    assert result.status == "ok" and result.tags["check"] == "approximate"
    m = result.metrics
    assert m["max_rel_err"] > 1e-3 > 1e-5 > m["self_max_rel_err"]  # far from softmax, exact to its own formula


@pytest.mark.slow
def test_an_installed_plugin_package_adds_a_backend(tmp_path, store, compose_cfg):
    site, package = tmp_path / "site", tmp_path / "attnbench-example-backend"
    shutil.copytree(REPO / "examples" / "attnbench-example-backend", package)  # the build leaves files beside it
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True, capture_output=True)
    env = {"PYTHONPATH": str(site)}
    proc = run_script("backend=chunked", "backend.chunk=5", "mask=causal", "shape=tiny", "device=cpu",
                      "dtype=float32", *ONE_SAMPLE, store=store, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("attnbench").experiment_id])
    assert run.data.params["backend.name"] == "chunked" and run.data.params["backend.chunk"] == "5"
    assert run.data.tags["status"] == "ok" and float(run.data.metrics["max_rel_err"]) < 1e-5
    # Without the package (not on this process's path), the same option does not exist: the config that run.py
    # composes has no backend=chunked.
    with pytest.raises(ConfigCompositionException, match="chunked"):
        compose_cfg("backend=chunked", "shape=tiny", "device=cpu")


class _PluginGaveUp(BaseException):
    pass


@pytest.mark.parametrize("failure", [ImportError("no module named nowhere"), SystemExit("nowhere: exit 3"),
                                     _PluginGaveUp("nowhere gave up")], ids=lambda e: type(e).__name__)
def test_a_broken_plugin_does_not_take_the_others_down(monkeypatch, caplog, failure):
    import attnbench.core.backends as backends

    class Broken:
        name, value = "broken_plugin", "nowhere:Nothing"

        def load(self):
            raise failure

    monkeypatch.setattr(backends, "entry_points", lambda group: [Broken()])
    found = registered_backends()
    assert "broken_plugin" not in found and "flash" in found
    assert "broken_plugin" in caplog.text and "nowhere" in caplog.text


@pytest.mark.slow
def test_a_plugin_that_exits_at_import_leaves_every_command_working(tmp_path, store):
    site = tmp_path / "site"  # an installed distribution whose backend module calls sys.exit when imported
    (site / "exits_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "exits_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: exits-plugin\n"
                                                                  "Version: 0.1\n")
    (site / "exits_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[attnbench.backends]\nexits = exits_plugin:Backend\n")
    (site / "exits_plugin.py").write_text("import sys\nsys.exit(3)\n")
    env = {"PYTHONPATH": str(site)}
    proc = run_script("backend=math", "shape=tiny", "device=cpu", *ONE_SAMPLE, store=store, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The job loads every backend: it says which one it could not (the command itself loads a plugin when chosen).
    job_log = (tmp_path / "outputs" / "run.log").read_text()
    assert "backend plugin exits (exits_plugin:Backend) could not be loaded" in job_log
    chosen = run_script("backend=exits", store=store, cwd=tmp_path, env=env)
    assert chosen.returncode == 1
    assert "backend='exits' is not valid: expected a usable plugin backend; backend plugin exits " in chosen.stderr


@pytest.mark.parametrize("backend", ["linear", "performer"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("mode", ["fwd", pytest.param("fwd_bwd", marks=pytest.mark.slow)])  # fast: forward's overflow
def test_linear_attentions_hold_in_half_precision_at_thousands_of_positions(compose_cfg, backend, dtype, mode):
    # float16 tops out at 65504: φ(q)·Σφ(k) passes it at ~700 positions of D 64, which zeroed rows silently
    result = run_config(compose_cfg(*ONE_SAMPLE, "shape=tiny", "shape.batch=1", "shape.heads=1", "shape.seq_len=2048",
                                 "shape.head_dim=64", f"dtype={dtype}", f"mode={mode}", f"backend={backend}",
                                 "mask=causal"))
    assert result.status == "ok", result.reason
    assert result.metrics["self_rel_l2_err"] < 1e-2


def test_a_query_that_sees_one_key_is_judged_on_all_gradients_together(compose_cfg):
    # seq_len 1: the gradient of q is exactly zero, so an error relative to it alone would be 0 / 0
    result = run_config(compose_cfg(*ONE_SAMPLE, *SMALL, "shape.seq_len=1", "mode=fwd_bwd", "backend=linear",
                                 "mask=causal"))
    assert result.status == "ok", result.reason


@pytest.mark.parametrize("field, value", [("backend.chunk", 0), ("backend.features", 0)])
def test_a_bad_backend_field_is_an_error_naming_it(compose_cfg, field, value):
    backend = "performer" if field == "backend.features" else "linear"
    result = run_config(compose_cfg(*ONE_SAMPLE, *SMALL, f"backend={backend}", f"{field}={value}"))
    assert result.status == "error" and field in result.reason and "expected" in result.reason


def test_flex_with_a_head_dim_below_16_is_unsupported_on_cuda_before_anything_compiles(compose_cfg):
    # On an H200, shape=tiny (head_dim 8) ended in an Inductor error ("embedding dimension ... must be at least
    # 16") after compiling, as status `error`; the CPU kernels take it.
    from attnbench.core.problem import Problem
    from attnbench.harness.config import Mode

    flex = registered_backends()["flex"](compose_cfg("backend=flex").backend)
    narrow, wide = (Problem(2, 2, 2, 16, 16, head_dim, mask=None) for head_dim in (8, 16))
    reason = flex.supports(narrow, torch.device("cuda"), torch.bfloat16, Mode.fwd)
    assert "head_dim >= 16" in reason and "shape.head_dim=8" in reason
    assert flex.supports(narrow, torch.device("cpu"), torch.float32, Mode.fwd) is None
    assert flex.supports(wide, torch.device("cuda"), torch.bfloat16, Mode.fwd) is None


def test_flex_kernel_backend_is_checked_and_only_auto_runs_on_the_cpu(compose_cfg):
    bad = run_config(compose_cfg(*ONE_SAMPLE, *SMALL, "backend=flex", "backend.kernel_backend=TRITN"))
    assert bad.status == "error" and "backend.kernel_backend" in bad.reason
    cpu = run_config(compose_cfg(*ONE_SAMPLE, *SMALL, "backend=flex", "backend.kernel_backend=TRITON"))
    assert cpu.status == "unsupported" and "CUDA" in cpu.reason


def test_a_chunked_prefill_on_the_cpu_builds_its_causal_mask_once(compose_cfg):
    result = run_config(compose_cfg(*ONE_SAMPLE, *SMALL, "shape.q_len=8", "backend=math", "mask=causal"))
    assert result.status == "ok" and result.tags["kernel"] == "math (dense mask)"


def test_a_plugin_with_a_config_that_is_not_a_backend_config_is_skipped(monkeypatch, caplog):
    import attnbench.core.backends as backends

    class Strange(backends.Backend):
        Config = type("Config", (), {})  # takes no `name`: storing it would crash every command

        def build(self, problem, device, dtype):
            raise AssertionError("never built")

    class EntryPoint:
        name, value = "strange", "somewhere:Strange"

        def load(self):
            return Strange

    monkeypatch.setattr(backends, "entry_points", lambda group: [EntryPoint()])
    assert "strange" not in registered_backends() and "Config" in caplog.text
