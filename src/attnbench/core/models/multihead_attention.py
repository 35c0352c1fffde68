"""nn.MultiheadAttention(batch_first=True) on x (B, S, E), self-attention, need_weights=False."""

from __future__ import annotations

import torch.nn as nn

from attnbench.core.models import register_model
from attnbench.core.models._nn_module import NnAttentionModule
from attnbench.core.options import MultiheadAttentionConfig


@register_model("multihead_attention")
class MultiheadAttention(NnAttentionModule):
    Config = MultiheadAttentionConfig
    module_name = "nn.MultiheadAttention"
    fast_path_op = "_native_multi_head_attention"
    linear_flops_per_token = 4  # q, k, v and output projections: 4·E² multiply-adds per token

    def make_module(self):
        p, c = self.problem, self.config
        return nn.MultiheadAttention(self.embed_dim, p.heads, dropout=c.dropout, bias=c.bias, batch_first=True)

    def call(self, module, x, mask, causal):
        return module(x, x, x, need_weights=False, attn_mask=mask, is_causal=causal)[0]
