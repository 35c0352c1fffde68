"""FlashAttention-4 called directly: flash-attn-4's CuTe DSL kernels (`flash_attn.cute.flash_attn_func`).

Forward and backward; masks none, causal and sliding_window as FlashAttention's bottom-right window; grouped-query
heads by head counts. Inputs are sequence-major (B, S, H, D), allocated that way (attnbench.core.backends.libraries).
The first call compiles the kernel for its shapes (10–25 s): it is the job's `first_call_s`, never timed. On Hopper
(sm90) FA4 has no split-KV: a decode step runs one block of queries per (batch, head) over the whole cache.
`flash4` reaches the same kernels through SDPA's flash backend, and flex with `kernel_backend=FLASH` through flex.
"""

from __future__ import annotations

from attnbench.core.backends import register_backend
from attnbench.core.backends.libraries import (Library, LibraryBackend, capability, first_line,
                                               sequence_major_call, window)

FA4 = Library("flash_attn.cute", "flash-attn-4", "fa4", "(a CUDA 13 torch: 'attnbench[fa4-cu13]')")
ARCHS = (8, 9, 10, 11, 12)  # compute capability majors flash_attn.cute dispatches (its _flash_attn_fwd's check)


@register_backend("fa4")
class FlashAttention4(LibraryBackend):
    library = FA4
    package = "flash_attn.cute"
    kernel_words = ("flash", "fmha")
    kernel_family = "FlashAttention"

    def kernel_limits(self, problem, device, dtype, mode):
        major, minor = capability(device)
        if major not in ARCHS:
            return f"backend=fa4: flash_attn.cute runs on compute capability 8.x to 12.x; this GPU is {major}.{minor}"
        return self._head_dim_support(problem, major, dtype)

    def _head_dim_support(self, problem, major, dtype) -> str | None:
        """The library's own head-dim rule for this GPU (a private function of flash_attn.cute.interface: where a
        release renames it, the library's own assertion at the first call says the same, as `unsupported`)."""
        interface = FA4.load().interface
        rule = getattr(interface, "_validate_head_dims", None)
        if rule is None or major in (8, 12):  # the library checks no head dim on these (its own code)
            return None
        try:
            rule(problem.head_dim, problem.head_dim, major, 16 // dtype.itemsize)
        except AssertionError as e:
            return f"backend=fa4: {first_line(e)}"
        return None

    def build(self, problem, device, dtype):
        attention = FA4.load().flash_attn_func
        left, right = window(problem)
        causal = problem.mask.name == "causal"
        # FA4 spells "unbounded" None; a causal mask is its `causal` flag, a sliding window its (left, 0) window.
        size = (None, None) if causal or left < 0 else (left, right)

        def call(q, k, v):
            return attention(q, k, v, causal=causal, window_size=size)[0]  # (out, lse)

        return sequence_major_call(call)
