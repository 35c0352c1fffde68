"""Prefix LM: the first `prefix` positions are seen by every query (bidirectional), the rest causally."""

from __future__ import annotations

from attnbench.core.masks import Mask, register_mask
from attnbench.core.options import PrefixLMConfig


@register_mask("prefix_lm")
class PrefixLM(Mask):
    Config = PrefixLMConfig

    def validate(self):
        self._require("prefix", self.config.prefix >= 0, "a length >= 0 (at seq_len or more, every key is seen)")

    def keep(self, q_idx, kv_idx):
        return (kv_idx < self.config.prefix) | (q_idx + self.offset >= kv_idx)

    def row_counts(self):
        return (self.positions() + 1).clamp(min=self.config.prefix, max=self.seq_len)

    def keys_read(self):
        return self.seq_len  # the last query sees every key

    def describe(self):
        return f"prefix_lm({self.config.prefix})"
