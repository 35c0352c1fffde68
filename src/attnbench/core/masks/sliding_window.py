"""Causal sliding window: a query sees the last `window` positions, its own included (Mistral-style local attention)."""

from __future__ import annotations

from attnbench.core.masks import Mask, register_mask
from attnbench.core.options import SlidingWindowConfig


@register_mask("sliding_window")
class SlidingWindow(Mask):
    Config = SlidingWindowConfig

    def validate(self):
        self._require("window", self.config.window >= 1, "a positive number of keys")

    def keep(self, q_idx, kv_idx):
        distance = q_idx + self.offset - kv_idx
        return (distance >= 0) & (distance < self.config.window)

    def row_counts(self):
        return (self.positions() + 1).clamp(max=self.config.window)

    def keys_read(self):
        """From the first query's window to the last query: a decode step reads its window, not the cache."""
        return min(self.seq_len, self.q_len + self.config.window - 1)

    def describe(self):
        return f"sliding_window({self.config.window})"
