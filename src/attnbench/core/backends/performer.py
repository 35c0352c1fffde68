"""Performer's FAVOR+ (Choromanski et al., 2021): softmax attention approximated with positive random features.

φ(x) = exp(Wx − ‖x‖²/2) / √m on x = input·D^(-1/4), with m = `backend.features` orthogonal Gaussian rows W
drawn once per job (from `backend.seed`), so E[φ(q)·φ(k)] = exp(q·k/√D). The attention itself is linear
attention's (prefix sums when causal); approximate, like it.
"""

from __future__ import annotations

import math

import torch

from attnbench.core.backends import register_backend
from attnbench.core.backends.linear import Linear
from attnbench.core.errors import ConfigError
from attnbench.core.options import PerformerConfig


def orthogonal_gaussian(features: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """(features, dim): blocks of orthogonal rows, each rescaled to the norm of a Gaussian vector."""
    blocks = []
    for _ in range(math.ceil(features / dim)):
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        blocks.append(q.T)
    rows = torch.cat(blocks)[:features]
    norms = torch.randn(features, dim, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return rows * norms


@register_backend("performer")
class Performer(Linear):
    Config = PerformerConfig

    def validate(self):
        super().validate()
        if self.config.features < 1:
            raise ConfigError("backend.features", self.config.features, "a positive number of random features")

    def feature_map(self, problem, device):
        if getattr(self, "_projection", None) is None:  # one draw per job: build() and reference() share it
            generator = torch.Generator().manual_seed(self.config.seed)
            self._projection = orthogonal_gaussian(self.config.features, problem.head_dim, generator)
        projection, scale = self._projection, problem.head_dim**-0.25

        def phi(x: torch.Tensor, is_query: bool) -> torch.Tensor:
            x = x * scale
            logits = x @ projection.to(x).T - (x * x).sum(-1, keepdim=True) / 2  # (..., S, m)
            # Subtracting a constant cancels between numerator and denominator: per query row, or one for all the
            # keys of a head (a per-key constant would not cancel). It keeps exp() from overflowing.
            stabiliser = logits.amax(-1, keepdim=True) if is_query else logits.amax((-2, -1), keepdim=True)
            return torch.exp(logits - stabiliser.detach()) / math.sqrt(projection.shape[0])

        return phi

    def features(self, problem):
        return self.config.features

    def feature_flops(self, problem):
        """x·Wᵀ (2·D·m), ‖x‖² (2·D) and exp, subtraction and scaling of m values per row."""
        return 2 * problem.head_dim * self.config.features + 2 * problem.head_dim + 3 * self.config.features

    def tags(self):
        return {"performer.features": str(self.config.features)}
