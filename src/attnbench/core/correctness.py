"""Is the output right? The whole output (and every input gradient) against a float64 reference, judged per dtype.

The reference is exact softmax attention in float64 (PyTorch's math kernel with the problem's mask, bottom-right
aligned), computed block by block — a few batch elements and heads, a few query rows at a time — so its memory
stays bounded (`BLOCK_ELEMENTS` float64 scores) whatever the shape. Every element of the output is compared, and
every element of each input gradient, unless the float64 work would cost more than the device's budget
(`FULL_CHECK_FLOPS`): then a sample is checked — every batch element and head, query rows from the start, the
middle and the end of the sequence — and the `check.coverage` tag says which rows; the input gradients then come
from a second backward through those rows alone (dQ on them, dK and dV entire), so they are still compared whole.

Before any number: the output must have the dtype, shape and device the job asked for, and be finite; so must the
gradients. Exact backends must land within their dtype's tolerances (`TOLERANCE`, set from measured errors:
docs/correctness.md) or the job is `wrong`. Approximate backends (linear attention) do not compute softmax
attention: their error against it is logged and tagged, and they are judged against their own formula in float64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.core.backends import Backend
from attnbench.core.devices import synchronize
from attnbench.core.models import CheckBlock, Model
from attnbench.core.problem import Problem
from attnbench.core.spec import Mode


@dataclass(frozen=True)
class Limits:
    """The most each error may reach: norm-wise (‖out − ref‖ / ‖ref‖) and pointwise (max |out − ref| /
    max |ref|), of the output and of the input gradients taken together."""

    rel_l2_err: float
    max_rel_err: float
    grad_rel_l2_err: float
    grad_max_rel_err: float


# Each limit is TOLERANCE_MARGIN times the worst error measured (on an H200 and on a CPU, at the experiments' shapes:
# `python benchmarks/tolerances.py`, tables in docs/correctness.md), per input distribution, dtype and error class:
# - fused: the bare attention call through a kernel that keeps its softmax statistics in float32 (every SDPA kernel,
#   flex, a fused plugin);
# - eager: through a backend that rounds its scores to the input dtype, as eager model code does (naive);
# - module: a module around the attention (CausalSelfAttention, nn.MultiheadAttention, ...), whose own layers round;
# - approximate: an approximate backend against its own formula in float64.
TOLERANCE_MARGIN = 3
_LIMITS = {  # (class, inputs): {dtype: (rel_l2_err, max_rel_err, grad_rel_l2_err, grad_max_rel_err)}
    ("fused", "normal"): {"float16": (8.8e-4, 1.3e-3, 1.8e-3, 2.7e-3), "bfloat16": (6.9e-3, 9.8e-3, 1.4e-2, 2.4e-2),
                          "float32": (5.1e-6, 6.3e-6, 8.8e-6, 1.6e-5)},
    ("fused", "large_logits"): {"float16": (6.5e-4, 1.4e-3, 2.1e-3, 4.1e-3),
                                "bfloat16": (5.1e-3, 1.1e-2, 1.7e-2, 2.8e-2),
                                "float32": (7.6e-6, 2.4e-5, 1.9e-5, 4.3e-5)},
    ("eager", "normal"): {"float16": (2.4e-3, 4.4e-3, 2.4e-3, 3.6e-3), "bfloat16": (1.8e-2, 4.1e-2, 1.9e-2, 3.5e-2),
                          "float32": (3.6e-6, 5.3e-6, 5.6e-6, 1.1e-5)},
    ("eager", "large_logits"): {"float16": (1.4e-2, 3.4e-2, 1.6e-2, 3.7e-2), "bfloat16": (0.12, 0.27, 0.13, 0.21),
                                "float32": (6e-6, 2.3e-5, 9.3e-6, 1.9e-5)},
    ("module", "normal"): {"float16": (1.5e-3, 3.4e-3, 1e-2, 3.1e-2), "bfloat16": (1.2e-2, 2.4e-2, 3e-2, 5.7e-2),
                           "float32": (2.1e-6, 2.5e-6, 9.1e-4, 1.4e-2)},
    ("module", "large_logits"): {"float16": (3.3e-3, 5.1e-3, 1.2e-2, 3.9e-2),
                                 "bfloat16": (2.6e-2, 4.3e-2, 3.6e-2, 6.8e-2),
                                 "float32": (4.1e-6, 5.7e-6, 2.4e-4, 5.5e-3)},
    # Against their own formula. Large logits: linear attention's; Performer's random features overflow there (its
    # gradients land ~1 relative away from its own float64 formula even in float32), so it is `wrong`, rightly.
    ("approximate", "normal"): {"float16": (1.3e-3, 1.3e-3, 1.6e-3, 1.6e-3),
                                "bfloat16": (1.4e-2, 3e-2, 2.2e-2, 4e-2),
                                "float32": (8.9e-6, 2e-5, 2e-5, 2.1e-4)},
    ("approximate", "large_logits"): {"float16": (1.1e-3, 1.2e-3, 1.2e-3, 1.4e-3),
                                      "bfloat16": (1.2e-2, 1.5e-2, 1.4e-2, 2.2e-2),
                                      "float32": (2e-6, 3.1e-6, 1.7e-6, 2.2e-6)},
    # SageAttention (INT8 QKᵀ, float16 PV) against softmax attention itself, forward only (the gradient limits repeat
    # the output's). Measured on an H200 (B 4, H 16, S 4096, D 128, causal and none; B 1, H 32/8, S 8192):
    # rel_l2_err ≤ 0.0133, max_rel_err ≤ 0.0177 on normal inputs; 0.0439 and 0.172 on large logits (INT8 keeps
    # fewer of a large score's digits). docs/correctness.md.
    ("quantized", "normal"): {"float16": (3.9e-2, 5.3e-2, 3.9e-2, 5.3e-2), "bfloat16": (4e-2, 5.3e-2, 4e-2, 5.3e-2)},
    ("quantized", "large_logits"): {"float16": (0.13, 0.52, 0.13, 0.52), "bfloat16": (0.13, 0.38, 0.13, 0.38)},
}
TOLERANCE = {(kind, inputs, getattr(torch, dtype)): Limits(*limits)
             for (kind, inputs), by_dtype in _LIMITS.items() for dtype, limits in by_dtype.items()}
# Float64 FLOPs the reference may spend on the whole output before it checks a sample of rows instead: on an
# H200 the reference runs at ~5.5 TFLOP/s (its scores materialised in float64), so at most ~0.2 s; on two CPU
# cores ~1 s.
FULL_CHECK_FLOPS = {"cuda": 1e12, "cpu": 3e10}
DEFAULT_FULL_CHECK_FLOPS = 3e10
SAMPLE_REGIONS = 3  # start, middle and end of the query rows
MIN_SAMPLE_ROWS = 16  # per region
# Float64 scores the reference holds at once (plus the softmax's temporaries of the same size).
BLOCK_ELEMENTS = {"cuda": 2**27, "cpu": 2**22}
DEFAULT_BLOCK_ELEMENTS = 2**22

Backward = Callable[[torch.Tensor], tuple]  # a grad_out for the output → the gradients of the inputs


@dataclass
class Verdict:
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    wrong: str | None = None  # why the result is wrong, or None


class ReferenceAttention:
    """Exact softmax attention in float64 with the problem's mask: q (B, H, rows, D) are the query rows `rows` of
    the problem (all of them by default); k and v (B, Hkv, S, D)."""

    def __init__(self, problem: Problem) -> None:
        self.mask = problem.mask

    def __call__(self, q, k, v, rows: slice = slice(None)):
        start, stop, _ = rows.indices(self.mask.q_len)
        keep = None if self.mask.name == "none" else self.mask.dense_rows(start, stop, q.device)
        with sdpa_kernel(SDPBackend.MATH):  # also inside a job that forces another kernel: float64 needs math
            return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=q.shape[1] != k.shape[1])


def check(model: Model, backend: Backend, mode: Mode, args: tuple, out: torch.Tensor, grads: tuple | None = None,
          grad_out: torch.Tensor | None = None, backward: Backward | None = None) -> Verdict:
    """The verdict on a job's first call: `out` (and, in training, `grads` of `args` for `grad_out`). `backward`
    computes the inputs' gradients for another grad_out (for a sampled check)."""
    started = time.perf_counter()
    grads = None if grads is None else tuple(grads[: len(args)])
    found = _malformed(model, args, out, grads)
    if found:
        return Verdict(wrong=found)
    rows, coverage = rows_to_check(model, mode)
    if grads is not None and rows is not None:  # the gradients of the sampled rows alone, to compare whole
        grad_out = _only(model, rows, grad_out)
        grads = tuple(backward(grad_out)[: len(args)])
    exact = _against(model, ReferenceAttention(model.problem), rows, args, out, grads, grad_out)
    if exact is None:
        return Verdict(tags={"check": "skipped: dropout draws differ between the job and the reference"})
    limits = TOLERANCE[(error_class(model, backend), model.problem.inputs, model.dtype)]
    verdict = Verdict(metrics=exact | {"tolerance": limits.rel_l2_err}, tags={"check.coverage": coverage})
    if backend.approximate:  # judged against its own formula; its distance from softmax is information
        verdict.tags["check"] = "approximate"
        formula = backend.reference(model.problem)  # None: it approximates softmax itself, with its own tolerance
        own = exact if formula is None else _against(model, formula, rows, args, out, grads, grad_out)
        verdict.metrics |= {f"self_{k}": v for k, v in own.items()}
        against = "float64 softmax attention" if formula is None else "its own formula in float64"
        verdict.wrong = _over(own, limits, against)
    else:
        verdict.tags["check"] = "exact"
        verdict.wrong = _over(exact, limits, "float64 softmax attention")
    synchronize(model.device)
    verdict.metrics["check_s"] = time.perf_counter() - started
    return verdict


def error_class(model: Model, backend: Backend) -> str:
    """Which tolerances judge a job (TOLERANCE): its error comes from the attention kernel alone (fused, eager, or
    approximate against its own formula) or from a module's own layers too."""
    if backend.tolerance_class:
        return backend.tolerance_class
    if backend.approximate:  # in a module too: judged against its own formula, whose float64 form is sensitive
        return "approximate"
    if model.own_layers:
        return "module"
    return "eager" if backend.scores_in_input_dtype else "fused"


def _malformed(model: Model, args: tuple, out, grads: tuple | None) -> str | None:
    """What the job asked for, before any number: dtype, shape and device of the output and gradients; finite."""
    shape = model.output_shape()
    expected = (model.dtype, None if shape is None else tuple(shape), model.device.type)
    if not isinstance(out, torch.Tensor):
        return f"the output is a {type(out).__name__}, not a tensor"
    found = (out.dtype, tuple(out.shape), out.device.type)
    for what, want, got in zip(("dtype", "shape", "device"), expected, found):
        if want is not None and want != got:
            return f"the output's {what} is {_name(got)}; the job asked for {_name(want)}"
    for arg, grad in zip(args, grads or ()):
        if grad is None or grad.dtype != arg.dtype or grad.shape != arg.shape:
            got = "missing" if grad is None else f"{_name(grad.dtype)} {tuple(grad.shape)}"
            return f"an input gradient is {got}; its input is {_name(arg.dtype)} {tuple(arg.shape)}"
    if not bool(torch.isfinite(out).all()):
        return "the output contains NaN or Inf"
    if grads is not None and not all(bool(torch.isfinite(g).all()) for g in grads):
        return "the gradients contain NaN or Inf"
    return None


def _name(value) -> str:
    return str(value).removeprefix("torch.")


def rows_to_check(model: Model, mode: Mode) -> tuple[list[slice] | None, str]:
    """None (every row) when the float64 reference fits the device's budget, else a sample of query rows from
    the start, middle and end; and the coverage tag."""
    p = model.problem
    budget = FULL_CHECK_FLOPS.get(model.device.type, DEFAULT_FULL_CHECK_FLOPS)
    training = mode is not Mode.fwd
    cost = p.flops(Mode.fwd_bwd if training else Mode.fwd)
    if cost <= budget or not model.samples_rows:
        return None, "full: every element of the output" + (" and of each input gradient" if training else "")
    per_row = cost / p.q_len
    size = max(MIN_SAMPLE_ROWS, int(budget / per_row / SAMPLE_REGIONS))
    starts = (0, (p.q_len - size) // 2, p.q_len - size)
    rows: list[slice] = []
    for start in starts:
        if rows and start <= rows[-1].stop:  # regions that touch are one
            rows[-1] = slice(rows[-1].start, max(rows[-1].stop, start + size))
        else:
            rows.append(slice(start, start + size))
    spans = ", ".join(f"{r.start}–{r.stop - 1}" for r in rows)
    tag = (f"sampled: query rows {spans} of {p.q_len}, of every batch element and head (the whole output would "
           f"cost {cost / 1e9:.0f} GFLOP in float64)")
    if training:
        tag += "; input gradients from a backward through those rows: dQ on them, dK and dV entire"
    return rows, tag


def _only(model: Model, rows: list[slice], grad_out: torch.Tensor) -> torch.Tensor:
    """grad_out where the checked rows are, zero elsewhere."""
    kept = torch.zeros_like(grad_out)
    for block in model.check_blocks(rows, _block_elements(model)):
        for piece in block.pieces:
            kept[piece.output] = grad_out[piece.output]
    return kept


def _block_elements(model: Model) -> int:
    return BLOCK_ELEMENTS.get(model.device.type, DEFAULT_BLOCK_ELEMENTS)


def _over(errors: dict[str, float], limits: Limits, against: str) -> str | None:
    for metric, limit in vars(limits).items():
        if errors.get(metric, 0.0) > limit:
            return f"{metric} {errors[metric]:.3g} against {against} is over the tolerance {limit:g}"
    return None


class ErrorSum:
    """Errors of produced tensors against float64 references, accumulated over blocks."""

    def __init__(self) -> None:
        self.sq_diff = self.sq_ref = self.max_diff = self.max_ref = 0.0

    def add(self, produced: torch.Tensor, expected: torch.Tensor) -> None:
        diff = produced.detach().to(torch.float64) - expected.detach()
        expected = expected.detach()
        self.sq_diff += float(diff.square().sum())
        self.sq_ref += float(expected.square().sum())
        self.max_diff = max(self.max_diff, float(diff.abs().max()) if diff.numel() else 0.0)
        self.max_ref = max(self.max_ref, float(expected.abs().max()) if expected.numel() else 0.0)

    def metrics(self) -> dict[str, float]:
        """max |out − ref|, that over max |ref|, and ‖out − ref‖ / ‖ref‖."""
        norm, diff = self.sq_ref**0.5, self.sq_diff**0.5
        return {"max_abs_err": self.max_diff,
                "max_rel_err": self.max_diff / self.max_ref if self.max_ref > 0 else self.max_diff,
                "rel_l2_err": diff / norm if norm > 0 else diff}


def _against(model: Model, attend, rows: list[slice] | None, args, out, grads, grad_out) -> dict[str, float] | None:
    """Errors of the output (and the input gradients) against model.reference(attend), block by block."""
    reference = model.reference(attend)
    if reference is None:
        return None
    training = grads is not None
    outputs, gradients = ErrorSum(), ErrorSum()
    for block in model.check_blocks(rows, _block_elements(model)):
        inputs = [a[index].detach().to(torch.float64).requires_grad_(training) for a, index in
                  zip(args, block.inputs)]
        expected_grads = [torch.zeros_like(i) for i in inputs] if training else None
        for piece in block.pieces:
            with torch.enable_grad() if training else torch.no_grad():
                ref_out = reference(*inputs, rows=piece.rows)
            outputs.add(out[piece.output], ref_out)
            if training:
                # All input gradients as one vector: one of them can be exactly zero (a query that sees one key has
                # no gradient), and an error relative to zero says nothing.
                piece_grads = torch.autograd.grad(ref_out, inputs, grad_out[piece.output].to(torch.float64))
                for total, piece_grad in zip(expected_grads, piece_grads):
                    total += piece_grad
            del ref_out
        if training:
            for grad, index, expected in zip(grads, block.inputs, expected_grads):
                gradients.add(grad[index], expected)
    metrics = outputs.metrics()
    if training:
        metrics |= {f"grad_{key}": value for key, value in gradients.metrics().items()}
    return metrics


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Errors of `out` against a float64 reference of the same shape: max absolute, max absolute over max |ref|,
    and norm-wise ‖out − ref‖ / ‖ref‖."""
    errors = ErrorSum()
    errors.add(out, ref)
    return errors.metrics()


__all__ = ["CheckBlock", "Limits", "ReferenceAttention", "TOLERANCE", "Verdict", "check", "compare"]
