"""A job's output (and input gradients) against a float64 math-backend reference on a slice."""

from __future__ import annotations

import torch

from attnbench.metrics import all_finite, compare
from attnbench.models import Workload


def check(workload: Workload, args: tuple, out: torch.Tensor, grads: tuple | None = None,
          grad_out: torch.Tensor | None = None) -> tuple[dict[str, float], str | None]:
    """Error metrics, and the reason the result is wrong (non-finite values) or None."""
    produced = (out, *(grads or ()))
    if not all_finite(*produced):
        where = "output" if not all_finite(out) else "gradients"
        return {}, f"the {where} contain NaN or Inf"
    reference = workload.reference()
    if reference is None:
        return {}, None
    training = grads is not None
    inputs = [t.detach().to(torch.float64).requires_grad_(training) for t in workload.slice_inputs(args)]
    with torch.enable_grad() if training else torch.no_grad():
        ref_out = reference(*inputs)
    metrics = compare(workload.slice_output(out), ref_out)
    if training:
        ref_grads = torch.autograd.grad(ref_out, inputs, workload.slice_output(grad_out).to(torch.float64))
        errors = [compare(g, r) for g, r in zip(workload.slice_inputs(grads[: len(args)]), ref_grads)]
        metrics["grad_max_abs_err"] = max(e["max_abs_err"] for e in errors)
        metrics["grad_max_rel_err"] = max(e["max_rel_err"] for e in errors)
    return metrics, None
