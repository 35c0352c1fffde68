"""Attention backends: one implementation each, registered under the name `backend=` picks.

A backend is a `Backend` subclass decorated `@register_backend`, with a `Config` dataclass: its own fields, declared
in attnbench.core.options, which Hydra reads without importing torch (a plugin's lives in the plugin).
It declares what it can run (`supports`, checked before anything is allocated), builds the `attend(q, k, v)`
callable for a problem (`build`; a library with a layout of its own returns a `LayoutCall`, so that the bare
attention call times the library's call alone), and names the kernel that really ran from a profile (`dispatch`).

Backends come from the modules of this package and from any installed distribution that declares an entry
point in the group `attnbench.backends` (the value: a Backend subclass, registered under its `name`), so a
package adds backends with no edit here. `examples/attnbench-example-backend` is one.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, ClassVar

import torch

from attnbench.core.errors import ConfigError
from attnbench.core.options import BACKEND_PLUGINS, BackendConfig  # BackendConfig: here too, for plugins to extend
from attnbench.core.problem import Problem
from attnbench.core.registry import Registry
from attnbench.core.spec import Mode
from attnbench.core.timing.profiling import Profile, compiled_region

log = logging.getLogger(__name__)

ALL_MASKS = None  # `native_masks` of a backend that runs every mask by itself

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LayoutCall:
    """An attend for a library with a tensor layout of its own, in three parts: `enter` turns the (B, H, S, D)
    q, k, v into the library's inputs (views, no copy), `call` is the library's call on them, `leave` views its
    output as (B, H, Sq, D). Called whole it is an ordinary `Attend` (what a module calls); the bare attention job
    runs `enter` once, outside the timing, and times `call` alone: the call a user of the library writes."""

    enter: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]
    call: Callable[..., torch.Tensor]
    leave: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.leave(self.call(*self.enter(q, k, v)))
BACKENDS: Registry[type["Backend"]] = Registry("backend", __name__)
_FROM_PLUGINS: set[str] = set()  # names registered from entry points: they bring no YAML in conf/backend/
_SHADOWED: set[str] = set()  # plugins skipped because a backend of theirs had the name already (warned once)
_UNUSABLE: dict[str, str] = {}  # plugins that failed to load, by name: why


@dataclass
class Dispatch:
    """What a call ran, from its profile, and what the backend promised to run."""

    ran: str  # e.g. "flash", "efficient (dense mask)", "flex (fused)"
    accepts: tuple[str, ...] | None = None  # kernels that keep the promise; None: any (PyTorch picks)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def fallback(self) -> bool:
        return self.accepts is not None and self.ran.split(" (")[0] not in self.accepts


class Backend(ABC):
    name: ClassVar[str]
    Config: ClassVar[type] = BackendConfig
    # Approximate backends (linear attention) are not judged against exact softmax attention: their error is
    # logged and tagged, and their own float64 formula (`reference`) is what they must match.
    approximate: ClassVar[bool] = False
    # Tolerances that judge it (attnbench.core.correctness.TOLERANCE) where none of the built-in classes fits: an
    # approximate backend with no float64 formula of its own (`reference` None) is judged against softmax with them.
    tolerance_class: ClassVar[str | None] = None
    # Rounds its scores (QKᵀ) to the input dtype, as eager model code does, instead of keeping them in float32 as
    # fused kernels do: judged by the looser `eager` tolerances (attnbench.core.correctness).
    scores_in_input_dtype: ClassVar[bool] = False
    # Masks it runs natively; ALL_MASKS for every mask. Others need a dense boolean mask (`dense_masks`).
    native_masks: ClassVar[frozenset[str] | None] = frozenset({"none"})
    dense_masks: ClassVar[bool] = False
    # A kernel of F.scaled_dot_product_attention: modules that call SDPA themselves (nn.MultiheadAttention)
    # can be forced onto it through `context()`.
    sdpa: ClassVar[bool] = False
    # Takes sequence-major tensors (B, S, H, D), as FlashAttention and FlashInfer do: the attention model allocates
    # its inputs that way, so the free transpose of the (B, H, S, D) views it passes is contiguous, never a copy.
    sequence_major: ClassVar[bool] = False
    # Reads a paged KV cache (shape.page_size > 0); a backend that does not is unsupported for such a problem.
    paged_kv: ClassVar[bool] = False
    # Compiles its kernel for the shapes at the first call (a JIT, CuTe DSL): that call is also its `compile_s`.
    compiles_on_first_call: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config  # its Config dataclass (from the JobSpec): cheap to read inside compiled code

    def validate(self) -> None:
        """Rules on this backend's own fields; raise ConfigError (the job is an `error`). No allocation here."""

    def supports(self, problem: Problem, device: torch.device, dtype: torch.dtype, mode: Mode) -> str | None:
        """None if it can run this, else the reason why not. Called before anything is allocated."""
        return self._mask_support(problem)

    @abstractmethod
    def build(self, problem: Problem, device: torch.device, dtype: torch.dtype) -> Attend:
        """The attention call for this problem: q (B, H, Sq, D), k and v (B, Hkv, S, D) → (B, H, Sq, D).
        Anything built once per problem (masks, random features, compiled kernels) is built here, untimed."""

    def context(self) -> contextlib.AbstractContextManager:
        """Entered around every call (and compilation): e.g. forcing one SDPA kernel."""
        return contextlib.nullcontext()

    def dispatch(self, profile: Profile) -> Dispatch:
        """Which kernel ran, from the profiler's op and kernel names. A backend written in plain PyTorch ops
        promises no particular kernel: it says whether Inductor compiled them (the `kernels` tag names them)."""
        return Dispatch(ran="Inductor-compiled ops" if compiled_region(profile.ops) else "eager PyTorch ops")

    def explain_failure(self, exc: BaseException, warned: list[str]) -> str | None:
        """If the first call's exception means "this backend cannot run these inputs", say why (the job is then
        `unsupported`); `warned` holds PyTorch's C++ warnings from that call. None: a real error."""
        return None

    def flops(self, problem: Problem, mode: Mode) -> int | None:
        """Floating-point operations of one attention call as this backend computes it. Exact backends compute
        softmax attention: the problem's useful FLOPs. An approximate one counts its own formula's, or None."""
        return None if self.approximate else problem.flops(mode)

    def reference(self, problem: Problem) -> Attend | None:
        """Approximate backends: a float64 version of their own formula, for the check, called as
        attnbench.core.correctness.ReferenceAttention is (`rows=`: the problem's query rows that q holds).
        Exact ones: None."""
        return None

    def tags(self) -> dict[str, str]:
        """What a reader of the run needs to know about how this backend was set up."""
        return {}

    def uses_dense_mask(self, problem: Problem) -> bool:
        return self.native_masks is not ALL_MASKS and problem.mask.name not in self.native_masks

    def _mask_support(self, problem: Problem) -> str | None:
        if self.uses_dense_mask(problem) and not self.dense_masks:
            native = ", ".join(sorted(self.native_masks))
            return f"backend={self.name} runs mask={native} only; mask={problem.mask.name} is not one of them"
        return None


register_backend = BACKENDS.register


def registered_backends() -> dict[str, type[Backend]]:
    """Backends of this package and of installed plugins (entry point group `attnbench.backends`)."""
    found = BACKENDS.all()
    for entry_point in entry_points(group=BACKEND_PLUGINS):
        if entry_point.name in found:
            if entry_point.name not in _FROM_PLUGINS | _SHADOWED:
                _SHADOWED.add(entry_point.name)
                log.warning("backend plugin %s (%s) is skipped: attnbench has a backend of that name",
                            entry_point.name, entry_point.value)
            continue
        try:
            cls = entry_point.load()
        except KeyboardInterrupt:  # the user's Ctrl-C while it loads
            raise
        except BaseException as e:  # noqa: BLE001 - a broken plugin (sys.exit too) must not take the others down
            _unusable(entry_point, f"could not be loaded: {e}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, Backend) and issubclass(cls.Config, BackendConfig)):
            _unusable(entry_point, "is not a Backend subclass with a Config extending BackendConfig")
            continue
        found[entry_point.name] = register_backend(entry_point.name)(cls)  # the name `backend=` takes
        _FROM_PLUGINS.add(entry_point.name)
    return found


def _unusable(entry_point, why: str) -> None:
    reason = f"backend plugin {entry_point.name} ({entry_point.value}) {why}"
    if _UNUSABLE.get(entry_point.name) != reason:  # each lookup tries it again: said once
        log.warning("%s", reason)
    _UNUSABLE[entry_point.name] = reason


def plugin_backend(name: str) -> type[Backend]:
    """The backend an installed plugin adds as `backend=<name>`, loaded now; ConfigError saying why it cannot be."""
    found = registered_backends()
    if name in _FROM_PLUGINS:
        return found[name]
    raise ConfigError("backend", name, f"a usable plugin backend; {_UNUSABLE.get(name, 'no installed plugin adds it')}")


def get_backend(name: str) -> type[Backend]:
    registered_backends()  # plugins too
    return BACKENDS.get(name)
