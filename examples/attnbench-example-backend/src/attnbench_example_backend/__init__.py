"""Exact attention, `chunk` query rows at a time: the smallest useful attnbench backend plugin."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.core.backends import ALL_MASKS, Backend, BackendConfig


@dataclass
class ChunkedConfig(BackendConfig):
    name: str = "chunked"
    chunk: int = 256  # query rows per block


class Chunked(Backend):
    Config = ChunkedConfig
    native_masks = ALL_MASKS  # a block of rows of the dense mask at a time

    def supports(self, problem, device, dtype, mode):
        if self.config.chunk < 1:
            return f"backend.chunk={self.config.chunk}: a positive number of rows is needed"
        return None

    def build(self, problem, device, dtype):
        keep = None if problem.mask.name == "none" else problem.mask.dense(device)
        chunk, gqa = self.config.chunk, problem.kv_heads != problem.heads

        def attend(q, k, v):
            blocks = []
            with sdpa_kernel(SDPBackend.MATH):
                for start in range(0, q.shape[2], chunk):
                    rows = slice(start, start + chunk)
                    mask = None if keep is None else keep[rows]
                    blocks.append(F.scaled_dot_product_attention(q[:, :, rows], k, v, attn_mask=mask, enable_gqa=gqa))
            return torch.cat(blocks, dim=2)

        return attend
