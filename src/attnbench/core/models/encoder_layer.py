"""nn.TransformerEncoderLayer(batch_first=True): self-attention and a feed-forward block of 4·E, post-norm."""

from __future__ import annotations

import torch.nn as nn

from attnbench.core.errors import ConfigError
from attnbench.core.models import register_model
from attnbench.core.models._nn_module import NnAttentionModule
from attnbench.core.options import EncoderLayerConfig


@register_model("encoder_layer")
class EncoderLayer(NnAttentionModule):
    Config = EncoderLayerConfig
    module_name = "nn.TransformerEncoderLayer"
    fast_path_op = "_transformer_encoder_layer_fwd"

    def validate(self):
        super().validate()
        if self.config.feedforward < 1:
            raise ConfigError("model.feedforward", self.config.feedforward, "a positive multiple of E")

    @property
    def linear_flops_per_token(self):
        return 4 + 2 * self.config.feedforward  # attention projections, then E → F·E → E

    def make_module(self):
        p, c = self.problem, self.config
        return nn.TransformerEncoderLayer(self.embed_dim, p.heads, dim_feedforward=c.feedforward * self.embed_dim,
                                          dropout=c.dropout, bias=c.bias, batch_first=True)

    def call(self, module, x, mask, causal):
        return module(x, src_mask=mask, is_causal=causal)
