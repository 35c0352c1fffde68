"""Models: what calls the backend. One module each, registered under its `model=` name.

A new model is this package's module (a `Model` subclass decorated `@register_model`, with a `Config`
dataclass) plus `conf/model/<name>.yaml`. A model that cannot route its attention through the chosen backend
says so in `supports`, and the job is `unsupported` rather than timed under a misleading label.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from attnbench.backends import Attend, Backend
from attnbench.config import Mode, plain
from attnbench.errors import ConfigError
from attnbench.problem import Problem
from attnbench.registry import Registry

MODELS: Registry[type["Model"]] = Registry("model", __name__)
# A linear layer's backward is two matmuls of the forward's size (input and weight gradients).
LINEAR_FLOP_FACTOR = {Mode.fwd: 1.0, Mode.bwd: 2.0, Mode.fwd_bwd: 3.0}


@dataclass
class ModelConfig:
    name: str = "attention"


class Model(ABC):
    """Something to time: builds its inputs on a device and exposes one forward call.

    Correctness is checked on a slice small enough for float64: `slice_inputs` cuts the inputs (and, applied to
    their gradients, the gradients), `slice_output` cuts the output the same way, and `reference(attend)` maps
    sliced float64 inputs to the sliced output, with its attention computed by `attend`.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = ModelConfig

    def __init__(self, config: Any, problem: Problem, backend: Backend, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.config, self.problem, self.backend = plain(config), problem, backend
        self.dtype, self.device = dtype, device

    @property
    def embed_dim(self) -> int:
        """A module's model width: its heads side by side."""
        return self.problem.heads * self.problem.head_dim

    def validate(self) -> None:
        """Field rules of this model; raise ConfigError. No allocation here."""
        dropout = getattr(self.config, "dropout", None)
        if dropout is not None and not 0.0 <= dropout < 1.0:
            raise ConfigError("model.dropout", dropout, "a probability in [0, 1)")

    def supports(self) -> str | None:
        """None if this model can run the problem through the backend, else why not. No allocation here."""
        return None

    @abstractmethod
    def build(self, attend: Attend) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
        """Allocate inputs (and weights) on the device; return the callable to time and its arguments."""

    def parameters(self) -> list[torch.Tensor]:
        """Weights that a training step differentiates, besides the inputs (after build())."""
        return []

    def flops(self, mode: Mode) -> int:
        """Useful floating-point operations of one call: the attention's, plus the model's own."""
        return self.problem.flops(mode)

    def min_bytes(self, mode: Mode) -> int:
        return self.problem.min_bytes(self.dtype.itemsize, mode)

    @abstractmethod
    def slice_inputs(self, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The part of the inputs the reference is computed on."""

    @abstractmethod
    def slice_output(self, out: torch.Tensor) -> torch.Tensor:
        """The part of the output that the sliced inputs determine."""

    @abstractmethod
    def reference(self, attend: Attend) -> Callable[..., torch.Tensor] | None:
        """A float64 version of the call on sliced inputs, attention computed by `attend`; None if there is
        nothing to compare with (dropout in training)."""

    def tags(self, profile_ops: list[str]) -> dict[str, str]:
        """What the run should say about how the model ran (e.g. nn.MultiheadAttention's fast path)."""
        return {}


register_model = MODELS.register
registered_models = MODELS.all
get_model = MODELS.get


def module_min_bytes(model: Model, module: torch.nn.Module, mode: Mode) -> int:
    """A module's input and output activations (B, S, E) and every weight, read or written once: x in, y out
    forward; dy, x in, dx out and each weight read and its gradient written backward."""
    p, size = model.problem, model.dtype.itemsize
    activations = p.batch * p.seq_len * model.embed_dim * size
    weights = sum(w.numel() for w in module.parameters()) * size
    forward, backward = 2 * activations + weights, 3 * activations + 2 * weights
    return {Mode.fwd: forward, Mode.bwd: backward, Mode.fwd_bwd: forward + backward}[mode]


def self_attention_only(model: Model) -> str | None:
    """Modules that attend a sequence to itself have one length."""
    p = model.problem
    if p.q_len != p.seq_len:
        return f"model={model.name} attends a sequence to itself: shape.q_len ({p.q_len}) must equal shape.seq_len ({p.seq_len})"
    return None


def sdpa_only(model: Model, module: str) -> str | None:
    """Modules that call F.scaled_dot_product_attention inside PyTorch can only be forced onto its kernels."""
    if not model.backend.sdpa:
        return (f"model={model.name}: {module} calls PyTorch's scaled_dot_product_attention itself, so it cannot "
                f"route through backend={model.backend.name}; use model=attention or causal_self_attention")
    if model.problem.kv_heads != model.problem.heads:
        return f"model={model.name}: {module} has no grouped-query heads (shape.kv_heads must equal shape.heads)"
    return self_attention_only(model)
