"""Third-party attention libraries (FlashAttention 2/3/4, FlashInfer, xFormers, SageAttention): what the backends
that call them directly share.

Each library is imported lazily, on the first job that needs it, so that attnbench installs and runs without any
of them; a library that is missing, or that imports but cannot work here (a build for another CUDA or torch), makes
its jobs `unsupported` with the library's own words and the install line (docs/backends.md). Most take
sequence-major tensors (B, S, H, D): their backends set `sequence_major`, the attention model then allocates its
inputs that way, and the (B, H, S, D) views the job passes convert back with a free transpose, never a copy. Their
`build` returns a `LayoutCall`: the bare attention job converts once and times the library's call alone.
Each backend is a `LibraryBackend` that names its library and kernels and adds only what its kernels do differently.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, ClassVar

import torch

from attnbench.core.backends import Backend, Dispatch, LayoutCall
from attnbench.core.errors import Unsupported
from attnbench.core.problem import Problem

HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Library:
    module: str  # what the backend imports
    distribution: str  # what pip installs
    extra: str | None  # attnbench's extra that installs it (pyproject.toml), None: built by the user
    hint: str = ""  # how to get it where no extra can (a source build)

    def install(self) -> str:
        if self.extra:
            return f"pip install 'attnbench[{self.extra}]'" + (f" {self.hint}" if self.hint else "")
        return self.hint or f"install {self.distribution}"

    def missing(self, backend: str) -> str | None:
        """Why it cannot be imported, or None: found without importing it (supports() must stay cheap)."""
        try:
            found = importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a parent package that is missing or broken
            found = False
        return None if found else (f"backend={backend}: {self.distribution} is not installed (no module "
                                   f"{self.module!r}): {self.install()}")

    def load(self) -> ModuleType:
        """The module; a failure to import is the library's own message, as Unsupported."""
        try:
            return importlib.import_module(self.module)
        except Exception as e:  # noqa: BLE001 - a broken build (missing .so, wrong CUDA): a reason, not a crash
            raise Unsupported(f"{self.distribution} is installed but does not import here: "
                              f"{type(e).__name__}: {first_line(e)}") from e


class LibraryBackend(Backend):
    """A backend calling one library's kernels directly: the checks, refusals, kernel names and version tag every
    such backend shares; a subclass names its library and adds `build` and the limits of its own kernels."""

    library: ClassVar[Library]
    package: ClassVar[str]  # where its code lives (dotted): an exception raised there is its own check refusing
    refusals: ClassVar[tuple[type[BaseException], ...]] = (AssertionError, NotImplementedError, ValueError)
    kernel_words: ClassVar[tuple[str, ...]]  # words in its kernels' names, as the profiler lists them
    kernel_family: ClassVar[str]  # what a profile without them says was not seen: "(no FlashAttention kernel seen)"
    native_masks = frozenset({"none", "causal", "sliding_window"})  # as a bottom-right window: see window()
    sequence_major = True

    def supports(self, problem, device, dtype, mode):
        return (self.library.missing(self.name) or cuda_and_half(self.name, device, dtype)
                or self._mask_support(problem) or self.kernel_limits(problem, device, dtype, mode))

    def kernel_limits(self, problem, device, dtype, mode) -> str | None:
        """What its kernels cannot run past the checks above (GPU, head dim, mode): a reason, or None."""
        return None

    def explain_failure(self, exc, warned):
        if isinstance(exc, self.refusals) and raised_by(exc, self.package):
            return f"backend={self.name}: {self.refusal(exc)}"
        return None

    def refusal(self, exc: BaseException) -> str:
        """The library's own message, as the reason words it."""
        return f"{self.package} refuses these inputs: {first_line(exc)}"

    def dispatch(self, profile):
        found = kernels_named(profile.kernels, *self.kernel_words)
        ran = self.name if found else f"{self.name} (no {self.kernel_family} kernel seen)"
        return Dispatch(ran=ran, accepts=(self.name,), tags={f"{self.name}.kernels": "; ".join(found)})

    def tags(self):
        return {f"{self.name}.version": version_of(self.library.distribution)}


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def sequence_major_call(call: Callable[..., torch.Tensor]) -> LayoutCall:
    """`call` on sequence-major q, k, v returning a sequence-major output, as a LayoutCall."""
    return LayoutCall(enter=lambda q, k, v: (sequence_major(q), sequence_major(k), sequence_major(v)), call=call,
                      leave=head_major)


def sequence_major(t: torch.Tensor) -> torch.Tensor:
    """(B, H, S, D) → (B, S, H, D): a view; contiguous when the tensor was allocated sequence-major."""
    return t.transpose(1, 2)


def head_major(t: torch.Tensor) -> torch.Tensor:
    """(B, S, H, D) → (B, H, S, D): the layout the job expects back, as a view."""
    return t.transpose(1, 2)


def window(problem: Problem) -> tuple[int, int] | None:
    """The mask as FlashAttention's (left, right) window, bottom-right aligned as every attnbench mask is: keys a
    query sees before and after its own position; -1 is unbounded. None: the mask is not a window."""
    name = problem.mask.name
    if name == "none":
        return -1, -1
    if name == "causal":
        return -1, 0
    if name == "sliding_window":
        return problem.mask.config.window - 1, 0
    return None


def cuda_and_half(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cuda":
        return f"backend={name} runs on CUDA only; device is {device.type}"
    if dtype not in HALF:
        return f"backend={name} takes float16 or bfloat16, not {str(dtype).removeprefix('torch.')}"
    return None


def capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def kernels_named(kernels, *words: str) -> list[str]:
    """The profile's kernels whose name contains one of the words (case-insensitive)."""
    return sorted(k for k in kernels if any(w in k.lower() for w in words))


def raised_by(exc: BaseException, package: str) -> bool:
    """Whether the exception was raised inside the package's own code (its own check refusing the inputs)."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    path = "" if last is None else last.tb_frame.f_code.co_filename.replace("\\", "/")
    package = package.replace(".", "/")
    if "CUDA error" in str(exc) or "illegal" in str(exc):  # the device failed: an error, whoever raised it
        return False
    return f"/{package}/" in path or path.endswith(f"/{package}.py")


def version_of(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"
