"""The bare attention call on random q (B, H, Sq, D), k and v (B, Hkv, S, D): one backend, nothing around it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnbench.models import Model, ModelConfig, register_model

# The reference is computed on the first batch element and this many key/value heads (with their query heads):
# two, so that a kernel pairing query heads with the wrong key/value head is caught.
REFERENCE_KV_HEADS = 2


@dataclass
class AttentionConfig(ModelConfig):
    name: str = "attention"


@register_model("attention")
class Attention(Model):
    Config = AttentionConfig

    def build(self, attend):
        p = self.problem
        q = torch.randn(p.q_shape, device=self.device, dtype=self.dtype)  # (B, H, Sq, D)
        k, v = (torch.randn(p.kv_shape, device=self.device, dtype=self.dtype) for _ in range(2))  # (B, Hkv, S, D)
        return attend, (q, k, v)

    def _heads(self) -> tuple[int, int]:
        kv_heads = min(REFERENCE_KV_HEADS, self.problem.kv_heads)
        return kv_heads * self.problem.group, kv_heads

    def slice_inputs(self, args):
        q_heads, kv_heads = self._heads()
        q, k, v = args
        return q[:1, :q_heads], k[:1, :kv_heads], v[:1, :kv_heads]

    def slice_output(self, out):
        return out[:1, : self._heads()[0]]

    def reference(self, attend):
        return attend
