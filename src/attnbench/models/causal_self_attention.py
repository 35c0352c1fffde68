"""The article's nanoGPT-style CausalSelfAttention module, fixed.

The article's copy used an undefined `block_size` and hard-coded `.to("mps")`; here the module is
device-agnostic, applies dropout only in training, and is run in eval mode unless `model.training=true`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.config import Mode
from attnbench.errors import ConfigError
from attnbench.metrics import LINEAR_FLOP_FACTOR, attention_flops
from attnbench.models import Workload, register


class CausalSelfAttention(nn.Module):
    def __init__(self, num_heads: int, embed_dim: int, bias: bool, dropout: float, is_causal: bool) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.c_attn = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.num_heads, self.embed_dim, self.dropout, self.is_causal = num_heads, embed_dim, dropout, is_causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, embedding dim
        q, k, v = self.c_attn(x).split(self.embed_dim, dim=2)
        q = q.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=self.is_causal
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


@dataclass
class CausalSelfAttentionParams:
    name: str = "causal_self_attention"
    bias: bool = False
    dropout: float = 0.1  # as in the article; only active when training
    training: bool = False


@register("causal_self_attention")
class CausalSelfAttentionWorkload(Workload):
    Params = CausalSelfAttentionParams

    @property
    def embed_dim(self) -> int:
        return self.shape.heads * self.shape.head_dim

    def validate(self) -> None:
        if not 0.0 <= self.params.dropout < 1.0:
            raise ConfigError("model.dropout", self.params.dropout, "a probability in [0, 1)")

    def build(self):
        s = self.shape
        module = CausalSelfAttention(s.heads, self.embed_dim, self.params.bias, self.params.dropout, self.causal)
        module = module.to(device=self.device, dtype=self.dtype).train(self.params.training)
        x = torch.randn(s.batch, s.seq_len, self.embed_dim, device=self.device, dtype=self.dtype)  # (B, T, C)
        self.module = module
        return module, (x,)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.module.parameters())

    def flops(self, mode: Mode) -> int:
        s, c = self.shape, self.embed_dim
        projections = 2 * s.batch * s.seq_len * c * (3 * c) + 2 * s.batch * s.seq_len * c * c
        attention = attention_flops(s.batch, s.heads, s.seq_len, s.seq_len, s.head_dim, self.causal, mode)
        return int(projections * LINEAR_FLOP_FACTOR[mode]) + attention

    def min_bytes(self, mode: Mode) -> int:
        # x in, y out (and dy in, dx out backward), plus every weight read (and its gradient written)
        s, c, size = self.shape, self.embed_dim, self.dtype.itemsize
        activations = s.batch * s.seq_len * c * size
        weights = sum(p.numel() for p in self.module.parameters()) * size
        forward, backward = 2 * activations + weights, 3 * activations + 2 * weights
        return {Mode.fwd: forward, Mode.bwd: backward, Mode.fwd_bwd: forward + backward}[mode]

    def slice_inputs(self, args):
        return (args[0][:1],)  # one sequence: every output row of it depends on it alone

    def slice_output(self, out):
        return out[:1]

    def reference(self):
        if self.params.training and self.params.dropout > 0:
            return None  # dropout draws differ between the two runs: there is nothing to compare
        reference_module = copy.deepcopy(self.module).to(torch.float64)

        def math_module(x):
            with sdpa_kernel(SDPBackend.MATH):
                return reference_module(x)

        return math_module
