"""The raw `F.scaled_dot_product_attention(q, k, v)` call on random inputs: one kernel, nothing around it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.metrics import attention_flops
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

    def flops(self) -> int:
        s = self.shape
        return attention_flops(s.batch, s.heads, s.seq_len, s.seq_len, s.head_dim, self.causal)

    def reference(self, args, out):
        q, k, v = (t[:1, :REFERENCE_HEADS].to(torch.float64) for t in args)
        with sdpa_kernel(SDPBackend.MATH):
            ref = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return ref, out[:1, :REFERENCE_HEADS]
