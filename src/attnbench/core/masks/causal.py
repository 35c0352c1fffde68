"""Causal: a query sees its own position and every earlier one (bottom-right aligned when q_len < seq_len)."""

from __future__ import annotations

from attnbench.core.masks import Mask, register_mask


@register_mask("causal")
class Causal(Mask):
    def keep(self, q_idx, kv_idx):
        return q_idx + self.offset >= kv_idx

    def row_counts(self):
        return self.positions() + 1

    def keys_read(self):
        return self.seq_len  # the last query sees every key
