"""No mask: every query sees every key."""

from __future__ import annotations

import torch

from attnbench.core.masks import Mask, register_mask


@register_mask("none")
class NoMask(Mask):
    def keep(self, q_idx, kv_idx):
        return torch.ones_like(q_idx + kv_idx, dtype=torch.bool)

    def row_counts(self):
        return torch.full((self.q_len,), self.seq_len, dtype=torch.int64)

    def keys_read(self):
        return self.seq_len
