"""SDPA backends: forcing one, recognising "this kernel cannot run here", and naming the kernel that ran."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterable, Iterator

from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.config import BackendName

SDPA_BACKENDS = {
    BackendName.math: SDPBackend.MATH,
    BackendName.flash: SDPBackend.FLASH_ATTENTION,
    BackendName.efficient: SDPBackend.EFFICIENT_ATTENTION,
    BackendName.cudnn: SDPBackend.CUDNN_ATTENTION,
}

# What PyTorch raises when the allowed backends cannot serve the call: "No available kernel. Aborting
# execution." on CUDA, "No viable backend for scaled_dot_product_attention was found." on CPU. Under
# torch.compile, Dynamo wraps the same message in a TorchRuntimeError while tracing.
NO_KERNEL_MARKERS = ("No available kernel", "No viable backend")
# The sentence itself, also where Dynamo quotes it: "...got RuntimeError('No viable backend for ...')".
_NO_KERNEL_SENTENCE = re.compile(r"(?:%s)[^'\"\n]*" % "|".join(NO_KERNEL_MARKERS))


def forced_backend(name: BackendName) -> contextlib.AbstractContextManager:
    """`default` leaves PyTorch's dispatch alone; any other name allows that one kernel only."""
    return contextlib.nullcontext() if name is BackendName.default else sdpa_kernel(SDPA_BACKENDS[name])


def is_no_kernel_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if any(marker in str(seen) for marker in NO_KERNEL_MARKERS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# PyTorch appends the C++ source location to warnings raised in C++: noise in a reason.
_TRIGGERED_AT = re.compile(r"\s*\(Triggered internally at [^)]*\)\.?")


def no_kernel_message(exc: BaseException) -> str:
    """PyTorch's own sentence, without Dynamo's wrapping around it."""
    found = _NO_KERNEL_SENTENCE.search(str(exc))
    return (found.group(0) if found else (str(exc).splitlines() or [""])[0]).strip()


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[str]]:
    """Collect PyTorch's C++ warnings raised inside the block, e.g. "Flash attention kernel not used
    because: ...", the only place it says *why* a forced kernel could not run."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield messages
        finally:  # the warnings matter most when the block raises "No available kernel"
            seen = set()
            for w in caught:
                # Only PyTorch's own C++ warnings (the dispatcher's reasons carry the source location);
                # torch.compile's notices, e.g. about disabled caches, say nothing about the kernel.
                if not _TRIGGERED_AT.search(str(w.message)):
                    continue
                text = _TRIGGERED_AT.sub("", str(w.message)).strip()
                if text not in seen:
                    seen.add(text)
                    messages.append(text)


# Profiler op and kernel names of each backend. aten op names are the same on every device and in eager
# and compiled code (Inductor calls the fused kernels as extern ops); CUDA kernel names are the fallback.
_FAMILY_BY_OP = (
    ("_scaled_dot_product_flash_attention", "flash"),
    ("_scaled_dot_product_efficient_attention", "efficient"),
    ("_scaled_dot_product_cudnn_attention", "cudnn"),
    ("_scaled_dot_product_attention_math", "math"),
    ("_scaled_dot_product_fused_attention_overrideable", "overrideable"),
)
# cuDNN first: its kernel names also contain "flash" (e.g. cudnn_generated_fort_native_sdpa_sm90_flash_fprop_...).
# Memory-efficient attention's kernels are fmha_cutlassF_* / fmha_cutlassB_*; a bare "cutlass" would also match
# cuBLAS's cutlass_80_* GEMMs, which the math backend runs.
_FAMILY_BY_KERNEL = (("cudnn", "cudnn"), ("flash", "flash"), ("fmha", "efficient"))


def kernel_family(op_names: Iterable[str], kernel_names: Iterable[str] = ()) -> str:
    """The SDPA backend that ran, from the names a profiler saw; 'decomposed' when none of the fused or
    math ops ran (Inductor inlined the math backend into its own kernels)."""
    ops = list(op_names)
    for marker, family in _FAMILY_BY_OP:
        if any(marker in op for op in ops):
            return family
    kernels = [k.lower() for k in kernel_names]
    for marker, family in _FAMILY_BY_KERNEL:
        if any(marker in k for k in kernels):
            return family
    return "decomposed"
