"""softmax(Q·Kᵀ·scale + mask)·V in plain PyTorch: the slow baseline every fused kernel is measured against.

It materialises the (Sq, S) scores of every head, so its memory grows as S²; grouped-query heads are broadcast,
not copied. Its scores and softmax are in the input dtype, as in nanoGPT's manual attention: in bfloat16 its error is
about 2.5× a fused kernel's on normal inputs and 20× on large logits (docs/correctness.md).
"""

from __future__ import annotations

import torch

from attnbench.core.backends import ALL_MASKS, Backend, register_backend


@register_backend("naive")
class Naive(Backend):
    native_masks = ALL_MASKS  # any mask, as a dense boolean tensor
    scores_in_input_dtype = True  # as nanoGPT's manual attention does: 2.5× a fused kernel's error in bfloat16

    def build(self, problem, device, dtype):
        keep = None if problem.mask.name == "none" else problem.mask.dense(device)  # (Sq, S)
        scale = problem.head_dim**-0.5

        def attend(q, k, v):
            batch, heads, q_len, head_dim = q.shape
            kv_heads = k.shape[1]
            q = q.view(batch, kv_heads, heads // kv_heads, q_len, head_dim)  # (B, Hkv, G, Sq, D)
            scores = q @ k.unsqueeze(2).transpose(-2, -1) * scale  # (B, Hkv, G, Sq, S)
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            out = torch.softmax(scores, dim=-1) @ v.unsqueeze(2)  # (B, Hkv, G, Sq, D)
            return out.view(batch, heads, q_len, head_dim)

        return attend
