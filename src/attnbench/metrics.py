"""Derived metrics: work done, throughput and error against a reference."""

from __future__ import annotations

import math

import torch


def attention_flops(batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, causal: bool) -> int:
    """Forward FLOPs of softmax(Q·Kᵀ)·V: two matmuls of 2·Sq·Sk·D each per (batch, head).

    Causal attention skips (about) half of the score matrix, so it counts half.
    """
    flops = 4 * batch * heads * q_len * kv_len * head_dim
    return flops // 2 if causal else flops


def tflops_per_s(flops: int, seconds: float) -> float:
    return flops / seconds / 1e12


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Max absolute and relative error of `out` against a float64 reference of the same shape."""
    diff = (out.detach().to(torch.float64) - ref).abs()
    max_abs = diff.max().item()
    scale = ref.abs().max().item()
    return {"max_abs_err": max_abs, "max_rel_err": max_abs / scale if scale > 0 else max_abs}


def all_finite(out: torch.Tensor) -> bool:
    return bool(torch.isfinite(out).all().item())


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
