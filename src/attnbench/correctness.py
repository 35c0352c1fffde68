"""Is the output right? The job's output (and input gradients) against a float64 reference, judged per dtype.

The reference is exact softmax attention in float64 (PyTorch's math kernel with the problem's dense mask, a
block of query rows at a time) on a slice of the inputs. Exact backends must land within the dtype's tolerance
or the job is `wrong`. Approximate backends (linear attention) are not softmax attention: their error against it
is logged and tagged `approximate`, and they are judged against their own formula in float64 instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.backends import Attend, Backend
from attnbench.models import Model
from attnbench.problem import Problem

# ‖out − ref‖ / ‖ref‖ allowed, by dtype. Half precision rounds each element to ~1e-3 (bf16: ~4e-3); float32 lands
# near 1e-7 (TF32 would give ~3e-4, and is off by default). The norm-wise error is judged because it does not blow
# up where outputs are small averages (a decode step over a long cache); a few elements far off are caught by the
# pointwise max_rel_err (max |out − ref| / max |ref|), allowed POINTWISE_FACTOR times more. Gradients get twice
# as much room.
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float32: 1e-4, torch.float64: 1e-10}
POINTWISE_FACTOR = 4
GRADIENT_FACTOR = 2
REFERENCE_ROWS = 1024  # query rows per block of the reference: bounds its (rows, S) float64 scores


@dataclass
class Verdict:
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    wrong: str | None = None  # why the result is wrong, or None


def reference_attention(problem: Problem) -> Attend:
    """Exact softmax attention in float64 on (sliced) q, k, v, with the problem's mask, bottom-right aligned."""
    mask = problem.mask

    def attend(q, k, v):
        keep = None if mask.name == "none" else mask.dense(q.device)
        rows = []
        with sdpa_kernel(SDPBackend.MATH):  # also inside a job that forces another kernel: float64 needs math
            for start in range(0, q.shape[2], REFERENCE_ROWS):
                block = slice(start, start + REFERENCE_ROWS)
                rows.append(F.scaled_dot_product_attention(
                    q[:, :, block], k, v, attn_mask=None if keep is None else keep[block],
                    enable_gqa=q.shape[1] != k.shape[1]))
        return torch.cat(rows, dim=2)

    return attend


def check(model: Model, backend: Backend, args: tuple, out: torch.Tensor, grads: tuple | None = None,
          grad_out: torch.Tensor | None = None) -> Verdict:
    produced = (out, *(grads or ()))
    if not all(bool(torch.isfinite(t).all()) for t in produced):
        where = "output" if not bool(torch.isfinite(out).all()) else "gradients"
        return Verdict(wrong=f"the {where} contain NaN or Inf")
    exact = _against(model, reference_attention(model.problem), args, out, grads, grad_out)
    if exact is None:
        return Verdict(tags={"check": "skipped: dropout draws differ between the job and the reference"})
    tolerance = TOLERANCE[model.dtype]
    verdict = Verdict(metrics=exact | {"tolerance": tolerance})
    if backend.approximate:  # judged against its own formula; its distance from softmax is information
        verdict.tags["check"] = "approximate"
        own = _against(model, backend.reference(model.problem), args, out, grads, grad_out)
        verdict.metrics |= {f"self_{k}": v for k, v in own.items()}
        verdict.wrong = _over(own, tolerance, "its own formula in float64")
    else:
        verdict.tags["check"] = "exact"
        verdict.wrong = _over(exact, tolerance, "float64 softmax attention")
    return verdict


def _over(errors: dict[str, float], tolerance: float, against: str) -> str | None:
    limits = {"rel_l2_err": tolerance, "max_rel_err": POINTWISE_FACTOR * tolerance,
              "grad_rel_l2_err": GRADIENT_FACTOR * tolerance,
              "grad_max_rel_err": GRADIENT_FACTOR * POINTWISE_FACTOR * tolerance}
    for metric, limit in limits.items():
        if errors.get(metric, 0.0) > limit:
            return f"{metric} {errors[metric]:.3g} against {against} is over the tolerance {limit:g}"
    return None


def _against(model: Model, attend: Attend, args, out, grads, grad_out) -> dict[str, float] | None:
    """Errors of the output (and input gradients) against model.reference(attend) on the sliced inputs."""
    reference = model.reference(attend)
    if reference is None:
        return None
    training = grads is not None
    inputs = [t.detach().to(torch.float64).requires_grad_(training) for t in model.slice_inputs(args)]
    with torch.enable_grad() if training else torch.no_grad():
        ref_out = reference(*inputs)
    metrics = compare(model.slice_output(out), ref_out)
    if training:
        ref_grads = torch.autograd.grad(ref_out, inputs, model.slice_output(grad_out).to(torch.float64))
        # All input gradients as one vector: one of them can be exactly zero (a query that sees one key has no
        # gradient), and an error relative to zero says nothing.
        produced = torch.cat([g.detach().to(torch.float64).flatten() for g in model.slice_inputs(grads[: len(args)])])
        expected = torch.cat([r.flatten() for r in ref_grads])
        metrics |= {f"grad_{key}": value for key, value in compare(produced, expected).items()}
    return metrics


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Errors of `out` against a float64 reference of the same shape: max absolute, max absolute over max |ref|,
    and norm-wise ‖out − ref‖ / ‖ref‖."""
    diff = out.detach().to(torch.float64) - ref.detach()
    max_abs = diff.abs().max().item()
    scale, norm = ref.detach().abs().max().item(), ref.detach().norm().item()
    return {"max_abs_err": max_abs, "max_rel_err": max_abs / scale if scale > 0 else max_abs,
            "rel_l2_err": diff.norm().item() / norm if norm > 0 else diff.norm().item()}
