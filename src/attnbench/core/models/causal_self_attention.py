"""The article's nanoGPT-style CausalSelfAttention module, its attention call routed through the chosen backend.

The article's copy used an undefined `block_size` and hard-coded `.to("mps")`; here the module is
device-agnostic, applies dropout only in training, and is run in eval mode unless `model.training=true`. With
shape.kv_heads < shape.heads its projection makes fewer key/value heads (grouped-query attention). The mask comes
from the `mask` group (the article's is `mask=causal`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from attnbench.core.models import (
    LINEAR_FLOP_FACTOR,
    Model,
    module_min_bytes,
    register_model,
    self_attention_only,
)
from attnbench.core.options import CausalSelfAttentionConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, heads: int, kv_heads: int, head_dim: int, bias: bool, dropout: float, attend) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        embed_dim = heads * head_dim
        self.c_attn = nn.Linear(embed_dim, (heads + 2 * kv_heads) * head_dim, bias=bias)  # q, k, v at once
        self.c_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.attend = attend  # attention through the benchmarked backend: (q, k, v) → y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, embedding dim
        kv_dim = self.kv_heads * self.head_dim
        q, k, v = self.c_attn(x).split([C, kv_dim, kv_dim], dim=2)
        q = q.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        y = self.attend(q, k, v)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


@register_model("causal_self_attention")
class CausalSelfAttentionModel(Model):
    Config = CausalSelfAttentionConfig

    def supports(self):
        return self_attention_only(self)

    def _module(self, attend) -> CausalSelfAttention:
        p = self.problem
        return CausalSelfAttention(p.heads, p.kv_heads, p.head_dim, self.config.bias, self.config.dropout, attend)

    def build(self, attend):
        p = self.problem
        self.module = self._module(attend).to(device=self.device, dtype=self.dtype).train(self.config.training)
        x = torch.randn(p.batch, p.seq_len, self.embed_dim, device=self.device, dtype=self.dtype)  # (B, S, E)
        x = x * p.input_scale
        return self.module, (x,)

    def parameters(self):
        return list(self.module.parameters())

    def flops(self, mode):
        p, c = self.problem, self.embed_dim
        qkv_out = (p.heads + 2 * p.kv_heads) * p.head_dim
        projections = 2 * p.batch * p.seq_len * c * (qkv_out + c)
        return self.plus_attention(int(projections * LINEAR_FLOP_FACTOR[mode]), mode)

    def min_bytes(self, mode):
        return module_min_bytes(self, self.module, mode)

    def reference(self, attend):
        if self.config.training and self.config.dropout > 0:
            return None  # dropout draws differ between the two runs: there is nothing to compare
        reference_module = self._module(attend).to(device=self.device, dtype=torch.float64).eval()
        reference_module.load_state_dict(self.module.state_dict())
        return lambda x, rows: reference_module(x)  # every row: the module attends its whole sequence

