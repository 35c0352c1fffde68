"""The whole answer is judged: every element of the output and of each input gradient against float64 (or a recorded
sample of rows that covers every batch element and head), and the output's dtype, shape and device first."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from attnbench.core import correctness
from attnbench.core.backends import registered_backends
from attnbench.core.correctness import check, rows_to_check
from attnbench.core.masks import get_mask
from attnbench.core.models import get_model
from attnbench.core.problem import Problem
from attnbench.harness.config import Mode
from conftest import FAST_TIMING, FIXTURES, NEVER_CONTENDED, run_script


def _problem(batch=3, heads=4, kv_heads=2, q_len=40, seq_len=40, head_dim=8, mask="causal") -> Problem:
    mask_cls = get_mask(mask)
    return Problem(batch, heads, kv_heads, q_len, seq_len, head_dim, mask_cls(mask_cls.Config(), q_len, seq_len))


def _setup(problem: Problem, model: str = "attention", backend: str = "math", dtype=torch.float32):
    backend = registered_backends()[backend](registered_backends()[backend].Config())
    model_cls = get_model(model)
    model = model_cls(model_cls.Config(), problem, backend, dtype, torch.device("cpu"))
    return model, backend


def _answer(model, backend, mode: Mode, corrupt=None, corrupt_grads=None):
    """The model's output (and, training, its input gradients) through the backend, with a fault planted."""
    torch.manual_seed(0)
    fn, args = model.build(backend.build(model.problem, model.device, model.dtype))
    training = mode is not Mode.fwd
    args = tuple(a.requires_grad_(training) for a in args)
    with torch.set_grad_enabled(training):
        out = fn(*args)
        grad_out = torch.randn_like(out) if training else None
        grads = torch.autograd.grad(out, args, grad_out, retain_graph=True) if training else None
    graph = out
    backward = (lambda g: _grads(corrupt_grads, torch.autograd.grad(graph, args, g, retain_graph=True))) \
        if training else None
    out = out.detach().clone()
    if corrupt is not None:
        corrupt(out)
    return args, out, _grads(corrupt_grads, grads), grad_out, backward


def _grads(corrupt_grads, grads):
    if grads is None or corrupt_grads is None:
        return grads
    grads = tuple(g.detach().clone() for g in grads)
    corrupt_grads(grads)
    return grads


def _scale(index):
    def corrupt(t):
        t[index] *= 1.05

    return corrupt


FAULTS = {  # each outside what a check of batch 0 and the first two key/value heads would see
    "last batch element": _scale((-1,)),
    "last query head": _scale((slice(None), -1)),
    "heads swapped": lambda t: t.copy_(t[:, [0, 1, 3, 2]]),
    "last query row": _scale((slice(None), slice(None), -1)),
    "one element": _scale((2, 3, 17, 5)),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_anywhere_in_the_output_is_wrong(fault):
    model, backend = _setup(_problem())
    args, out, grads, grad_out, backward = _answer(model, backend, Mode.fwd, corrupt=FAULTS[fault])
    verdict = check(model, backend, Mode.fwd, args, out)
    assert verdict.wrong and "against float64 softmax attention" in verdict.wrong, fault
    clean = check(model, backend, Mode.fwd, *_answer(model, backend, Mode.fwd)[:2])
    assert clean.wrong is None and clean.tags["check.coverage"].startswith("full")


@pytest.mark.parametrize("which", [0, 1, 2])  # dq, dk, dv of the last batch element's last key/value head
def test_a_fault_in_any_input_gradient_is_wrong(which):
    model, backend = _setup(_problem())
    fault = _scale((-1, -1))

    def corrupt(grads):
        fault(grads[which])

    verdict = check(model, backend, Mode.fwd_bwd, *_answer(model, backend, Mode.fwd_bwd, corrupt_grads=corrupt))
    assert verdict.wrong and verdict.wrong.startswith("grad_"), verdict.wrong


@pytest.mark.parametrize("change, expected", [
    (lambda out: out.to(torch.float64), "the output's dtype is float64; the job asked for float32"),
    (lambda out: out[:, :, :-1], "the output's shape is (3, 4, 39, 8); the job asked for (3, 4, 40, 8)"),
    (lambda out: out.to(torch.device("meta")), "the output's device is meta; the job asked for cpu"),
])
def test_an_output_that_is_not_what_the_job_asked_for_is_wrong(change, expected):
    model, backend = _setup(_problem())
    args, out, *_ = _answer(model, backend, Mode.fwd)
    assert check(model, backend, Mode.fwd, args, change(out)).wrong == expected


def test_the_check_blocks_cover_every_element_once():
    for problem, budget in [(_problem(), 10**9), (_problem(), 100), (_problem(batch=2, heads=8, kv_heads=1), 300),
                            (_problem(q_len=1, seq_len=64), 50)]:
        model, _ = _setup(problem)
        seen = torch.zeros(problem.q_shape, dtype=torch.int64)
        for block in model.check_blocks(None, budget):
            for piece in block.pieces:
                seen[piece.output] += 1
        assert bool((seen == 1).all()), (problem.describe(), budget)


def test_past_its_budget_the_check_samples_rows_of_every_batch_element_and_head_and_says_so(monkeypatch):
    problem = _problem(batch=2, q_len=512, seq_len=512)
    model, backend = _setup(problem)
    monkeypatch.setitem(correctness.FULL_CHECK_FLOPS, "cpu", problem.flops(Mode.fwd_bwd) / 8)
    rows, coverage = rows_to_check(model, Mode.fwd_bwd)
    assert rows[0].start == 0 and rows[-1].stop == 512 and len(rows) == 3  # start, middle, end
    assert coverage.startswith("sampled: query rows 0–") and "of every batch element and head" in coverage
    # A fault in a sampled row of the last batch element's last head is caught; the gradients are compared whole.
    middle = rows[1].start
    args, out, grads, grad_out, backward = _answer(model, backend, Mode.fwd_bwd, corrupt=_scale((-1, -1, middle)))
    verdict = check(model, backend, Mode.fwd_bwd, args, out, grads, grad_out, backward)
    assert verdict.wrong and verdict.tags["check.coverage"] == coverage
    clean = check(model, backend, Mode.fwd_bwd, *_answer(model, backend, Mode.fwd_bwd))
    assert clean.wrong is None and clean.tags["check.coverage"] == coverage and "dK and dV entire" in coverage
    broken_dk = check(model, backend, Mode.fwd_bwd, *_answer(model, backend, Mode.fwd_bwd,
                                                             corrupt_grads=lambda g: g[1][-1].mul_(1.05)))
    assert broken_dk.wrong and broken_dk.wrong.startswith("grad_")


def test_a_module_is_checked_whole_through_every_batch_element():
    model, backend = _setup(_problem(batch=3, kv_heads=4, q_len=16, seq_len=16), model="causal_self_attention")
    verdict = check(model, backend, Mode.fwd, *_answer(model, backend, Mode.fwd, corrupt=_scale((-1, -1)))[:2])
    assert verdict.wrong and "float64" in verdict.wrong


PLUGIN_FAULTS = ["none", "last_batch", "last_heads", "swapped_heads", "last_row", "float64", "last_batch_grad"]


@pytest.fixture(scope="module")
def corrupting_sweep(tmp_path_factory) -> dict[str, dict]:
    """The corrupting plugin (tests/fixtures/corrupting-backend), installed through its entry point, once per fault:
    result.json of each job by fault."""
    tmp = tmp_path_factory.mktemp("corrupting")
    site, package = tmp / "site", tmp / "corrupting-backend"
    shutil.copytree(FIXTURES / "corrupting-backend", package)  # the build leaves files beside it
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True, capture_output=True)
    store = tmp / "mlruns"
    store.mkdir()
    proc = run_script("-m", "backend=corrupting", f"backend.fault={','.join(PLUGIN_FAULTS)}", "shape=tiny",
                      "shape.heads=4", "device=cpu", "dtype=bfloat16", "mode=fwd_bwd", *FAST_TIMING,
                      NEVER_CONTENDED, store=store, cwd=tmp, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [json.loads(path.read_text()) for path in (tmp / "multirun").glob("*/result.json")]
    return {r["params"]["backend.fault"]: r for r in found}


@pytest.mark.slow
def test_a_plugin_wrong_outside_batch_zero_or_the_first_heads_is_wrong(corrupting_sweep):
    assert corrupting_sweep["none"]["status"] == "ok", corrupting_sweep["none"]["reason"]
    for fault in PLUGIN_FAULTS[1:]:
        result = corrupting_sweep[fault]
        assert result["status"] == "wrong", (fault, result["reason"])
    assert corrupting_sweep["last_batch_grad"]["reason"].startswith("grad_")
    assert corrupting_sweep["float64"]["reason"] == "the output's dtype is float64; the job asked for bfloat16"
