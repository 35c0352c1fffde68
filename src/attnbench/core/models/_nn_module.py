"""What nn.MultiheadAttention and nn.TransformerEncoderLayer share: PyTorch modules that call SDPA themselves.

They take x (B, S, E) with E = heads × head_dim, attend it to itself, and can only be forced onto an SDPA kernel
(through the backend's `sdpa_kernel` context). Their masks follow nn's convention: True where a score is
*dropped*; causal passes the `is_causal` hint with a causal mask, as PyTorch asks. Whether PyTorch took the
module's fused inference fast path is read from the profile and recorded.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from typing import ClassVar

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.core.models import LINEAR_FLOP_FACTOR, Model, module_min_bytes, sdpa_only


class NnAttentionModule(Model):
    module_name: ClassVar[str]  # as the reason and the tags name it
    fast_path_op: ClassVar[str]  # the aten op of the module's fused inference path
    linear_flops_per_token: ClassVar[int]  # FLOPs of its linear layers per token, in units of E²

    def supports(self):
        return sdpa_only(self, self.module_name)

    @abstractmethod
    def make_module(self) -> nn.Module:
        """The PyTorch module, built with the problem's sizes and this model's fields."""

    @abstractmethod
    def call(self, module: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        """One forward: self-attention of x, with nn's mask (True where a score is dropped) or None."""

    def build(self, attend):
        p = self.problem
        self.module = self.make_module().to(device=self.device, dtype=self.dtype).train(self.config.training)
        mask, causal = self._mask()
        x = torch.randn(p.batch, p.seq_len, self.embed_dim, device=self.device, dtype=self.dtype)  # (B, S, E)
        x = x * p.input_scale
        module = self.module
        return (lambda x: self.call(module, x, mask, causal)), (x,)

    def _mask(self) -> tuple[torch.Tensor | None, bool]:
        mask = self.problem.mask
        if mask.name == "none":
            return None, False
        dropped = ~mask.dense(self.device)  # (S, S), True where a score is dropped
        return dropped, mask.name == "causal"

    def parameters(self):
        return list(self.module.parameters())

    def flops(self, mode):
        p = self.problem
        linear = 2 * p.batch * p.seq_len * self.linear_flops_per_token * self.embed_dim**2
        return self.plus_attention(int(linear * LINEAR_FLOP_FACTOR[mode]), mode)

    def min_bytes(self, mode):
        return module_min_bytes(self, self.module, mode)

    def reference(self, attend):
        if self.config.training and self.config.dropout > 0:
            return None
        module = copy.deepcopy(self.module).to(torch.float64).eval()
        mask, causal = self._mask()

        def math_module(x, rows):  # every row: the module attends its whole sequence
            with sdpa_kernel(SDPBackend.MATH):  # the module calls SDPA itself: float64 needs the math kernel
                return self.call(module, x, mask, causal)

        return math_module

    def tags(self, profile_ops):
        fast = any(self.fast_path_op in op for op in profile_ops)
        return {"nn.fast_path": f"yes ({self.fast_path_op})" if fast else "no"}
