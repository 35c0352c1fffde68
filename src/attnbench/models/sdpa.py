"""The raw `F.scaled_dot_product_attention(q, k, v)` call on random inputs: one kernel, nothing around it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.config import Mode
from attnbench.metrics import attention_flops, attention_min_bytes
from attnbench.models import Workload, register

# The reference is computed on this many (batch, head) pairs: enough to catch a wrong kernel,
# small enough that float64 math stays cheap for long sequences.
REFERENCE_HEADS = 2


@dataclass
class SdpaParams:
    name: str = "sdpa"


@register("sdpa")
class Sdpa(Workload):
    Params = SdpaParams

    def build(self):
        s = self.shape
        q, k, v = (
            torch.randn(s.batch, s.heads, s.seq_len, s.head_dim, device=self.device, dtype=self.dtype)
            for _ in range(3)
        )  # (B, H, S, D)
        causal = self.causal

        def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        return attention, (q, k, v)

    def flops(self, mode: Mode) -> int:
        s = self.shape
        return attention_flops(s.batch, s.heads, s.seq_len, s.seq_len, s.head_dim, self.causal, mode)

    def min_bytes(self, mode: Mode) -> int:
        s = self.shape
        return attention_min_bytes(s.batch, s.heads, s.seq_len, s.head_dim, self.dtype.itemsize, mode)

    def slice_inputs(self, args):
        return tuple(t[:1, :REFERENCE_HEADS] for t in args)

    def slice_output(self, out):
        return out[:1, :REFERENCE_HEADS]

    def reference(self):
        causal = self.causal

        def math_attention(q, k, v):
            with sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        return math_attention
