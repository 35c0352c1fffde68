"""The attention problem a job solves: sizes (`shape` group) and mask (`mask` group), and the work it implies.

FLOPs and minimum bytes are computed here and only here. FLOPs count the score elements the mask keeps,
exactly (`Mask.kept`): a causal mask keeps S·(S+1)/2 of S² (the diagonal included), not "half"; a sliding
window, documents and a prefix keep what their rule says. That is *useful* work: a kernel that computes masked
blocks anyway does more, and its `tflops` reads lower.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.errors import ConfigError
from attnbench.core.masks import Mask
from attnbench.core.spec import Mode, Shape

# Attention backward recomputes the scores and does four matmuls to the forward's two: 2.5× the
# forward's FLOPs (FlashAttention's convention), so a training step is 3.5×.
ATTENTION_FLOP_FACTOR = {Mode.fwd: 1.0, Mode.bwd: 2.5, Mode.fwd_bwd: 3.5}
# Tensors a fused kernel must at least read or write once, by whether they have query rows (Q, O and their
# gradients) or key rows (K, V and theirs). Forward: Q, K, V read, O written. Backward: Q, K, V, O, dO read,
# dQ, dK, dV written.
QUERY_SIDE_TENSORS = {Mode.fwd: 2, Mode.bwd: 4, Mode.fwd_bwd: 6}
KEY_SIDE_TENSORS = {Mode.fwd: 2, Mode.bwd: 4, Mode.fwd_bwd: 6}
LARGE_LOGIT_SCALE = 3.0  # q·k grows as its square: logits of std 9 instead of 1


@dataclass(frozen=True)
class Problem:
    batch: int
    heads: int  # query heads
    kv_heads: int  # key/value heads: fewer than `heads` is GQA (1 is MQA)
    q_len: int  # queries: the last q_len positions of the sequence (1: one decode step)
    seq_len: int  # keys and values (the KV cache when q_len < seq_len)
    head_dim: int
    mask: Mask
    inputs: str = "normal"  # how q, k, v are drawn: normal | large_logits (config.Inputs)
    page_size: int = 0  # the KV cache read in pages of page_size positions (shape.page_size); 0: contiguous

    @classmethod
    def from_config(cls, shape: Shape, mask: Mask, inputs: str = "normal") -> "Problem":
        for key in ("batch", "heads", "kv_heads", "seq_len", "q_len", "head_dim"):
            if not getattr(shape, key) > 0:
                raise ConfigError(f"shape.{key}", getattr(shape, key), "a positive int")
        if shape.heads % shape.kv_heads:
            raise ConfigError("shape.kv_heads", shape.kv_heads, f"a divisor of shape.heads ({shape.heads})")
        if shape.page_size < 0:
            raise ConfigError("shape.page_size", shape.page_size, "a number of positions per page, or 0 (contiguous)")
        if shape.q_len > shape.seq_len:
            raise ConfigError("shape.q_len", shape.q_len, f"at most shape.seq_len ({shape.seq_len})")
        mask.validate()
        return cls(shape.batch, shape.heads, shape.kv_heads, shape.q_len, shape.seq_len, shape.head_dim, mask, inputs,
                   shape.page_size)

    @property
    def input_scale(self) -> float:
        """What q and k (a module's x) are multiplied by after N(0, 1): large logits are 9× larger."""
        return LARGE_LOGIT_SCALE if self.inputs == "large_logits" else 1.0

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.heads // self.kv_heads

    @property
    def q_shape(self) -> tuple[int, int, int, int]:
        return self.batch, self.heads, self.q_len, self.head_dim  # (B, H, Sq, D)

    @property
    def kv_shape(self) -> tuple[int, int, int, int]:
        return self.batch, self.kv_heads, self.seq_len, self.head_dim  # (B, Hkv, S, D)

    def flops(self, mode: Mode = Mode.fwd) -> int:
        """Useful FLOPs: QKᵀ and PV are 2·D FLOPs per kept score each, per query head."""
        forward = 4 * self.batch * self.heads * self.head_dim * self.mask.kept()
        return int(forward * ATTENTION_FLOP_FACTOR[mode])

    def min_bytes(self, element_size: int, mode: Mode = Mode.fwd) -> int:
        """Bytes a kernel must move at least: each tensor once; of K and V only the positions the mask lets some
        query see (a sliding-window decode step reads its window, not the whole cache)."""
        query_side = self.batch * self.heads * self.q_len * self.head_dim
        key_side = self.batch * self.kv_heads * self.mask.keys_read() * self.head_dim
        return (QUERY_SIDE_TENSORS[mode] * query_side + KEY_SIDE_TENSORS[mode] * key_side) * element_size

    def describe(self) -> str:
        heads = f"H{self.heads}" + (f"/{self.kv_heads}" if self.kv_heads != self.heads else "")
        q = f" Q{self.q_len}" if self.q_len != self.seq_len else ""
        inputs = "" if self.inputs == "normal" else f" {self.inputs.replace('_', ' ')}"
        paged = f" paged({self.page_size})" if self.page_size else ""
        return f"B{self.batch} {heads} S{self.seq_len}{q} D{self.head_dim} {self.mask.describe()}{paged}{inputs}"
