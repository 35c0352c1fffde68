"""FlashAttention-3 and -4 behind SDPA's flash kernel, through torch.nn.attention's implementation registry.

`activate_flash_attention_impl("FA3"|"FA4")` swaps the kernel SDPA's flash backend calls, where the torch build
offers that registry and the package behind the implementation is installed; otherwise the job is `unsupported`
and says which of the two is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util

import torch
import torch.nn.attention as attention

from attnbench.core.backends import register_backend
from attnbench.core.backends.libraries import first_line, raised_by, version_of
from attnbench.core.backends.sdpa import Flash

# The module each implementation imports (torch/nn/attention/_fa3.py, _fa4.py) and where it comes from.
PACKAGES = {
    "FA3": ("flash_attn_interface", "FlashAttention-3 (flash-attention's hopper/ build)"),
    "FA4": ("flash_attn.cute", "FlashAttention-4 (flash-attn's CuTe DSL interface)"),
}
DISTRIBUTIONS = {"FA3": "flash-attn-3", "FA4": "flash-attn-4"}


class RegisteredFlash(Flash):
    impl: str

    def supports(self, problem, device, dtype, mode):
        if not hasattr(attention, "activate_flash_attention_impl"):
            return (f"backend={self.name}: torch {torch.__version__} has no "
                    "torch.nn.attention.activate_flash_attention_impl")
        if self.impl not in attention.list_flash_attention_impls():
            return f"backend={self.name}: torch {torch.__version__} does not offer {self.impl}"
        module, package = PACKAGES[self.impl]
        if not importable(module):
            return f"backend={self.name}: {package} is not installed (no module {module!r})"
        if device.type != "cuda":
            return f"backend={self.name} runs on CUDA only; device is {device.type}"
        return super().supports(problem, device, dtype, mode)

    def explain_failure(self, exc, warned):
        """torch's glue for the implementation (torch/nn/attention/_fa4.py) calls the package's private functions:
        a release of the package that changed them fails inside the glue (torch 2.11 with flash-attn-4 4.0.0b36:
        `_flash_attn_fwd` returns five values where the glue unpacks two). That pair cannot run: unsupported."""
        if raised_by(exc, f"torch/nn/attention/_{self.impl.lower()}"):
            package = DISTRIBUTIONS[self.impl]
            return (f"backend={self.name}: torch {torch.__version__}'s {self.impl} route does not work with {package} "
                    f"{version_of(package)} ({type(exc).__name__}: {first_line(exc)}); backend=fa4 calls it directly")
        return super().explain_failure(exc, warned)

    @contextlib.contextmanager
    def context(self):
        attention.activate_flash_attention_impl(self.impl)
        try:
            with super().context():
                yield
        finally:
            attention.restore_flash_attention_impl()

    def dispatch(self, profile):
        found = super().dispatch(profile)
        if found.ran == "flash" and found.tags.get("flash.impl") == self.impl:
            found.ran = f"flash {self.impl}"
        elif found.ran == "flash":  # SDPA's flash ran, but not the implementation asked for
            found.ran = f"flash {found.tags.get('flash.impl', '')}".strip()
        found.accepts = (f"flash {self.impl}",)  # anything else, flash of another implementation included, is not it
        return found


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


@register_backend("flash3")
class Flash3(RegisteredFlash):
    impl = "FA3"


@register_backend("flash4")
class Flash4(RegisteredFlash):
    impl = "FA4"
