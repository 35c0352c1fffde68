"""Workloads: one module per attention implementation, each registered under its `model=` name.

A new model is this module's sibling (a `Workload` subclass decorated with `@register`) plus
`conf/model/<name>.yaml`. Submodules are imported on demand, so nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import torch

from attnbench.config import Mode, ShapeConfig

_REGISTRY: dict[str, type["Workload"]] = {}


class Workload(ABC):
    """Something to time: builds its inputs on a device and exposes one forward call.

    Correctness is checked on a slice small enough for float64: `slice_inputs` cuts the inputs (and, applied
    to their gradients, the gradients), `slice_output` cuts the output the same way, and `reference` returns
    a float64 math-backend function that maps sliced inputs to the sliced output.
    """

    name: ClassVar[str]
    Params: ClassVar[type]  # dataclass schema of conf/model/<name>.yaml

    def __init__(self, params: Any, shape: ShapeConfig, dtype: torch.dtype, device: torch.device,
                 causal: bool) -> None:
        self.params, self.shape, self.dtype, self.device, self.causal = params, shape, dtype, device, causal

    def validate(self) -> None:
        """Cross-field rules of this model; raise attnbench.errors.ConfigError. No allocation here."""

    @abstractmethod
    def build(self) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
        """Allocate inputs (and weights) on the device; return the callable to time and its arguments."""

    def parameters(self) -> list[torch.Tensor]:
        """Weights that a training step differentiates, besides the inputs (after build())."""
        return []

    @abstractmethod
    def flops(self, mode: Mode) -> int:
        """Floating-point operations of one call in this mode."""

    @abstractmethod
    def min_bytes(self, mode: Mode) -> int:
        """Bytes one call must at least read and write in this mode."""

    @abstractmethod
    def slice_inputs(self, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The part of the inputs the reference is computed on."""

    @abstractmethod
    def slice_output(self, out: torch.Tensor) -> torch.Tensor:
        """The part of the output that the sliced inputs determine."""

    @abstractmethod
    def reference(self) -> Callable[..., torch.Tensor] | None:
        """A float64 math-backend version of the call, or None when there is nothing to compare with."""


def register(name: str) -> Callable[[type[Workload]], type[Workload]]:
    def decorate(cls: type[Workload]) -> type[Workload]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def registered_models() -> dict[str, type[Workload]]:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(_REGISTRY)


def get_workload(name: str) -> type[Workload]:
    models = registered_models()
    if name not in models:
        from attnbench.errors import ConfigError

        raise ConfigError("model.name", name, f"one of {sorted(models)}")
    return models[name]
