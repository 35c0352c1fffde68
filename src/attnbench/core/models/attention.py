"""The bare attention call on random q (B, H, Sq, D), k and v (B, Hkv, S, D): one backend, nothing around it."""

from __future__ import annotations

import torch

from attnbench.core.models import CheckBlock, Model, Piece, register_model
from attnbench.core.options import AttentionConfig


@register_model("attention")
class Attention(Model):
    Config = AttentionConfig
    samples_rows = True
    input_count = 3
    own_layers = False

    def build(self, attend):
        p = self.problem
        q = self._random(p.q_shape) * p.input_scale  # (B, H, Sq, D)
        k = self._random(p.kv_shape) * p.input_scale  # (B, Hkv, S, D)
        v = self._random(p.kv_shape)
        return attend, (q, k, v)

    def _random(self, shape):
        """(B, H, S, D) values; for a sequence-major backend, a view of (B, S, H, D) memory (converted untimed)."""
        if not self.backend.sequence_major:
            return torch.randn(shape, device=self.device, dtype=self.dtype)
        b, h, s, d = shape
        return torch.randn((b, s, h, d), device=self.device, dtype=self.dtype).transpose(1, 2)

    def output_shape(self):
        return self.problem.q_shape

    def check_blocks(self, rows, budget):
        """Blocks of whole batch elements where they fit the budget, else of key/value heads (each with its query
        heads) of one batch element; inside a block, pieces of query rows."""
        p = self.problem
        rows = rows or [slice(0, p.q_len)]
        checked = sum(r.stop - r.start for r in rows)
        per_pair_row = p.group * p.seq_len  # scores of one key/value head's query heads, per query row
        rows_per_piece = max(1, budget // per_pair_row)
        pairs = max(1, budget // (per_pair_row * checked)) if rows_per_piece >= checked else 1
        if pairs >= p.kv_heads:  # whole batch elements
            blocks = [(slice(b, b + pairs // p.kv_heads), slice(None), slice(None))
                      for b in range(0, p.batch, pairs // p.kv_heads)]
        else:
            blocks = [(slice(b, b + 1), slice(h * p.group, (h + pairs) * p.group), slice(h, h + pairs))
                      for b in range(p.batch) for h in range(0, p.kv_heads, pairs)]
        for batch, q_heads, kv_heads in blocks:
            pieces = tuple(Piece(slice(start, min(start + rows_per_piece, r.stop)),
                                 (batch, q_heads, slice(start, min(start + rows_per_piece, r.stop))))
                           for r in rows for start in range(r.start, r.stop, rows_per_piece))
            q_index = (batch, q_heads, slice(None))
            kv_index = (batch, kv_heads, slice(None))
            yield CheckBlock(inputs=(q_index, kv_index, kv_index), pieces=pieces)

    def reference(self, attend):
        def rows_of(q, k, v, rows):
            return attend(q[:, :, rows], k, v, rows=rows)

        return rows_of
