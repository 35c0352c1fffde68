"""Models: what calls the backend. One module each, registered under its `model=` name.

A new model is this package's module (a `Model` subclass decorated `@register_model`) plus `conf/model/<name>.yaml`;
its `Config` dataclass is declared in attnbench.core.options (read without torch). A model that cannot route its
attention through the chosen backend says so in `supports`, and the job is `unsupported` rather than timed under a
misleading label.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import torch

from attnbench.core.backends import Attend, Backend
from attnbench.core.errors import ConfigError
from attnbench.core.options import ModelConfig
from attnbench.core.problem import Problem
from attnbench.core.registry import Registry
from attnbench.core.spec import Mode

MODELS: Registry[type["Model"]] = Registry("model", __name__)
# A linear layer's backward is two matmuls of the forward's size (input and weight gradients).
LINEAR_FLOP_FACTOR = {Mode.fwd: 1.0, Mode.bwd: 2.0, Mode.fwd_bwd: 3.0}


Index = tuple[slice, ...]


@dataclass(frozen=True)
class Piece:
    """Query rows the reference computes at once: which (`rows`, of the problem's), and where they sit in the
    output (`output`)."""

    rows: slice
    output: Index


@dataclass(frozen=True)
class CheckBlock:
    """One independent part of the correctness check (a few batch elements and heads): where it sits in each input
    (its gradients sit at the same place) and its pieces of query rows."""

    inputs: tuple[Index, ...]
    pieces: tuple[Piece, ...]


class Model(ABC):
    """Something to time: builds its inputs on a device and exposes one forward call.

    Correctness is checked against a float64 reference block by block (attnbench.core.correctness): `check_blocks`
    splits the inputs into independent parts (batch elements, here), and `reference(attend)` maps a part's inputs
    in float64 to its output, with its attention computed by `attend`.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = ModelConfig
    # Whether the check may take a sample of query rows (`check_blocks(rows=...)`) when the whole output would cost
    # too much in float64. A module attends its whole sequence at once: it is always checked whole.
    samples_rows: ClassVar[bool] = False
    input_count: ClassVar[int] = 1  # tensors `build` returns as the call's arguments
    own_layers: ClassVar[bool] = True  # layers of its own around the attention (which round too): `module` tolerances

    def __init__(self, config: Any, problem: Problem, backend: Backend, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.config, self.problem, self.backend = config, problem, backend
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

    def flops(self, mode: Mode) -> int | None:
        """Floating-point operations of one call: the attention's as its backend computes it (useful softmax FLOPs
        for an exact one), plus the model's own; None where the backend counts none."""
        return self.backend.flops(self.problem, mode)

    def plus_attention(self, own: int, mode: Mode) -> int | None:
        """A module's own FLOPs plus its attention's (None where its backend counts none)."""
        attention = self.backend.flops(self.problem, mode)
        return None if attention is None else own + attention

    def min_bytes(self, mode: Mode) -> int:
        return self.problem.min_bytes(self.dtype.itemsize, mode)

    def output_shape(self) -> tuple[int, ...] | None:
        """What one call must return: a module's (B, S, E) by default (None: any shape, for test stand-ins)."""
        p = self.problem
        return p.batch, p.seq_len, self.embed_dim

    def check_blocks(self, rows: list[slice] | None, budget: int) -> Iterator[CheckBlock]:
        """The check's independent parts, each holding at most about `budget` float64 attention scores: a few
        batch elements at a time, every row (a module's inputs and output are (B, S, ...))."""
        p = self.problem
        per_element = max(1, p.heads * p.q_len * p.seq_len)
        step = max(1, budget // per_element)
        for start in range(0, p.batch, step):
            batch = (slice(start, start + step),)
            yield CheckBlock(inputs=(batch,) * self.input_count, pieces=(Piece(slice(None), batch),))

    @abstractmethod
    def reference(self, attend: Attend) -> Callable[..., torch.Tensor] | None:
        """A float64 version of the call on one check block's inputs, attention computed by `attend`; it takes
        `rows=` (the piece's query rows) and returns their output. None if there is nothing to compare with
        (dropout in training)."""

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
