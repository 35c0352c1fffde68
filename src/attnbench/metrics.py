"""Derived metrics: work done, bytes moved, throughput, and error against a reference."""

from __future__ import annotations

import torch

from attnbench.config import Mode

# Attention backward recomputes the scores and does four matmuls to the forward's two: 2.5× the
# forward's FLOPs (FlashAttention's convention), so a training step is 3.5×.
ATTENTION_FLOP_FACTOR = {Mode.fwd: 1.0, Mode.bwd: 2.5, Mode.fwd_bwd: 3.5}
# A linear layer's backward is two matmuls of the forward's size (input and weight gradients).
LINEAR_FLOP_FACTOR = {Mode.fwd: 1.0, Mode.bwd: 2.0, Mode.fwd_bwd: 3.0}
# Tensors of (B, H, S, D) that a fused kernel must at least read or write once:
# forward reads Q, K, V and writes O; backward reads Q, K, V, O, dO and writes dQ, dK, dV.
ATTENTION_TENSORS_MOVED = {Mode.fwd: 4, Mode.bwd: 8, Mode.fwd_bwd: 12}


def attention_flops(batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, causal: bool,
                    mode: Mode = Mode.fwd) -> int:
    """FLOPs of softmax(Q·Kᵀ)·V: two matmuls of 2·Sq·Sk·D each per (batch, head) in the forward.

    Causal attention skips (about) half of the score matrix, so it counts half.
    """
    flops = 4 * batch * heads * q_len * kv_len * head_dim
    flops = flops // 2 if causal else flops
    return int(flops * ATTENTION_FLOP_FACTOR[mode])


def attention_min_bytes(batch: int, heads: int, seq_len: int, head_dim: int, element_size: int,
                        mode: Mode = Mode.fwd) -> int:
    """Bytes a fused kernel moves at the least (self-attention, Sq = Sk, as many K/V heads as Q heads)."""
    return ATTENTION_TENSORS_MOVED[mode] * batch * heads * seq_len * head_dim * element_size


def tflops_per_s(flops: int, seconds: float) -> float:
    return flops / seconds / 1e12


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Max absolute and relative error of `out` against a float64 reference of the same shape."""
    diff = (out.detach().to(torch.float64) - ref.detach()).abs()
    max_abs = diff.max().item()
    scale = ref.detach().abs().max().item()
    return {"max_abs_err": max_abs, "max_rel_err": max_abs / scale if scale > 0 else max_abs}


def all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all().item()) for t in tensors)
