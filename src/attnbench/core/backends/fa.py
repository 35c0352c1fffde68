"""FlashAttention-2 (`flash_attn`) and FlashAttention-3 (`flash_attn_interface`, Hopper) called directly.

PyPI has no wheels of either for current torch releases: users build them, so these backends run where a build is
installed and are otherwise `unsupported` with the build line. Same calling convention as fa4: sequence-major
inputs, grouped-query heads by head counts, masks none, causal and sliding_window as a bottom-right
(left, right) window, forward and backward. `flash3` reaches FA3 through SDPA's flash backend instead.
"""

from __future__ import annotations

from typing import ClassVar

from attnbench.core.backends import register_backend
from attnbench.core.backends.libraries import (Library, LibraryBackend, capability, first_line,
                                               sequence_major_call, window)

FA2 = Library("flash_attn.flash_attn_interface", "flash-attn", None,
              "no wheel for this torch on PyPI: build it, `pip install flash-attn --no-build-isolation` (CUDA toolkit "
              "needed, ~1 h)")
FA3 = Library("flash_attn_interface", "flash-attn-3", None,
              "no wheel on PyPI: build flash-attention's hopper/ folder, `cd hopper && python setup.py install`")


class DirectFlashAttention(LibraryBackend):
    min_capability: ClassVar[tuple[int, int]]
    max_head_dim = 256
    refusals = (AssertionError, RuntimeError, ValueError)
    kernel_words = ("flash",)
    kernel_family = "FlashAttention"

    def kernel_limits(self, problem, device, dtype, mode):
        if capability(device) < self.min_capability:
            return (f"backend={self.name} needs compute capability {'.'.join(map(str, self.min_capability))} or "
                    f"newer; this GPU is {'.'.join(map(str, capability(device)))}")
        if problem.head_dim > self.max_head_dim or problem.head_dim % 8:
            return (f"backend={self.name} takes head_dim ≤ {self.max_head_dim}, a multiple of 8; "
                    f"shape.head_dim={problem.head_dim}")
        return None

    def build(self, problem, device, dtype):
        attention = self.library.load().flash_attn_func
        causal = problem.mask.name == "causal"
        size = (-1, -1) if causal else window(problem)

        def call(q, k, v):
            out = attention(q, k, v, causal=causal, window_size=size)
            return out[0] if isinstance(out, tuple) else out  # FA3 releases differ: out, or (out, lse)

        return sequence_major_call(call)

    def refusal(self, exc):
        return f"{self.library.distribution} refuses these inputs: {first_line(exc)}"


@register_backend("fa2")
class FlashAttention2(DirectFlashAttention):
    library = FA2
    package = "flash_attn"
    min_capability = (8, 0)


@register_backend("fa3")
class FlashAttention3(DirectFlashAttention):
    library = FA3
    package = "flash_attn_interface"
    min_capability = (9, 0)
