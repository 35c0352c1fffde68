"""F.scaled_dot_product_attention with PyTorch's dispatch (`default`) or one kernel forced with `sdpa_kernel`.

Masks: none and causal are SDPA's own (`is_causal`; bottom-right `causal_lower_right` when q_len < seq_len, where
`is_causal=True` would align top-left and be wrong). Every other mask goes in as a dense boolean `attn_mask`,
which FlashAttention does not take on CUDA. The kernel that ran is read from the profiler's op names.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.core.backends import Backend, Dispatch, register_backend
from attnbench.core.timing.profiling import Profile, compiled_region

CUDA_ONLY = "runs on CUDA only; device is {device}"
HALF = (torch.float16, torch.bfloat16)


@register_backend("default")
class Sdpa(Backend):
    """PyTorch picks the kernel; the one it picked is recorded."""

    sdpa = True
    native_masks = frozenset({"none", "causal"})
    dense_masks = True
    forced: SDPBackend | None = None
    accepts: tuple[str, ...] | None = None  # kernel families a forced backend may run

    def __init__(self, config):
        super().__init__(config)
        self.dense = False  # whether the mask goes in as a dense boolean attn_mask (set by build)

    def context(self):
        return sdpa_kernel(self.forced) if self.forced is not None else contextlib.nullcontext()

    def build(self, problem, device, dtype):
        kwargs = {"enable_gqa": problem.kv_heads != problem.heads}
        self.dense = self.uses_dense_mask(problem)
        if problem.mask.name == "causal" and problem.q_len == problem.seq_len:
            kwargs["is_causal"] = True
        elif problem.mask.name == "causal" and problem.q_len == 1:
            pass  # one decode step sits at the last position and sees every key: no mask at all, exactly
        elif problem.mask.name == "causal" and self.takes_lower_right(device):
            from torch.nn.attention.bias import causal_lower_right  # imports torch._dynamo: seconds, only here

            kwargs["attn_mask"] = causal_lower_right(problem.q_len, problem.seq_len)
        elif problem.mask.name == "causal":
            self.dense = True  # the kernel would build this dense mask inside every call: build it once, here
        if self.dense:
            kwargs["attn_mask"] = problem.mask.dense(device)  # (Sq, S), broadcast over batch and heads

        def attend(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, **kwargs)

        return attend

    def takes_lower_right(self, device: torch.device) -> bool:
        """Whether a bottom-right causal mask reaches a kernel as a flag: FlashAttention and memory-efficient
        attention on CUDA take it (so may PyTorch's own pick); every other kernel gets it materialised."""
        return device.type == "cuda" and self.forced in (None, SDPBackend.FLASH_ATTENTION,
                                                         SDPBackend.EFFICIENT_ATTENTION)

    def dispatch(self, profile: Profile) -> Dispatch:
        family = kernel_family(profile.ops, profile.kernels)
        ran = family + (" (dense mask)" if self.dense else "")
        tags = {"sdpa.kernel": ran}
        if family == "flash" and profile.kernels:  # CUDA: which FlashAttention (the CPU has PyTorch's own kernel)
            tags["flash.impl"] = flash_impl(profile)
        return Dispatch(ran=ran, accepts=self.accepts, tags=tags)

    def explain_failure(self, exc, warned):
        if not is_no_kernel_error(exc):
            return None
        # PyTorch explains *why* in warnings ("Flash attention kernel not used because: ...") just before it
        # raises; the exception itself only says that nothing was left. Keep both.
        return f"backend={self.name}: " + " | ".join([*warned, no_kernel_message(exc)])


@register_backend("math")
class Math(Sdpa):
    forced = SDPBackend.MATH
    accepts = ("math", "decomposed")  # under torch.compile, Inductor inlines the math backend into its own kernels


@register_backend("flash")
class Flash(Sdpa):
    forced = SDPBackend.FLASH_ATTENTION
    accepts = ("flash",)

    def supports(self, problem, device, dtype, mode):
        if device.type == "cuda" and dtype not in HALF:
            return f"FlashAttention on CUDA takes float16 or bfloat16, not {str(dtype).removeprefix('torch.')}"
        if device.type == "cuda" and self.uses_dense_mask(problem):
            return (f"FlashAttention takes no attention mask on CUDA: mask={problem.mask.name} needs a dense one "
                    "(backend=flex runs it block-sparse; math, efficient and cudnn take a dense mask)")
        return super().supports(problem, device, dtype, mode)


@register_backend("efficient")
class Efficient(Sdpa):
    forced = SDPBackend.EFFICIENT_ATTENTION
    accepts = ("efficient",)

    def supports(self, problem, device, dtype, mode):
        if device.type != "cuda":
            return "memory-efficient attention " + CUDA_ONLY.format(device=device.type)
        return super().supports(problem, device, dtype, mode)


@register_backend("cudnn")
class Cudnn(Sdpa):
    forced = SDPBackend.CUDNN_ATTENTION
    accepts = ("cudnn",)

    def supports(self, problem, device, dtype, mode):
        if device.type != "cuda":
            return "cuDNN attention " + CUDA_ONLY.format(device=device.type)
        if dtype not in HALF:
            return f"cuDNN attention takes float16 or bfloat16, not {str(dtype).removeprefix('torch.')}"
        return super().supports(problem, device, dtype, mode)


# --- which kernel ran ------------------------------------------------------------------------------------------
# Profiler op names of each backend. aten op names are the same on every device and in eager and compiled code
# (Inductor calls the fused kernels as extern ops); CUDA kernel names are the fallback.
_FAMILY_BY_OP = (
    ("_scaled_dot_product_flash_attention", "flash"),
    ("_flash_attention_forward", "flash"),
    ("flash_attn_3", "flash"),
    ("_scaled_dot_product_efficient_attention", "efficient"),
    ("_efficient_attention_forward", "efficient"),
    ("_scaled_dot_product_cudnn_attention", "cudnn"),
    ("_scaled_dot_product_attention_math", "math"),
    ("_scaled_dot_product_fused_attention_overrideable", "overrideable"),
)
# cuDNN first: its kernel names also contain "flash" (e.g. cudnn_generated_fort_native_sdpa_sm90_flash_fprop_...).
# Memory-efficient attention's kernels are fmha_cutlassF_* / fmha_cutlassB_*; a bare "cutlass" would also match
# cuBLAS's cutlass_80_* GEMMs, which the math backend runs.
_FAMILY_BY_KERNEL = (("cudnn", "cudnn"), ("flash", "flash"), ("fmha", "efficient"))


def kernel_family(op_names: Iterable[str], kernel_names: Iterable[str] = ()) -> str:
    """The SDPA backend that ran, from the names a profiler saw. When none of SDPA's ops ran: 'decomposed' in
    compiled code (Inductor inlined the math backend into its own kernels), else 'unfused' (a module computed
    attention with its own matmuls, as nn.MultiheadAttention's CPU fast path does)."""
    ops = list(op_names)
    for marker, family in _FAMILY_BY_OP:
        if any(marker in op for op in ops):
            return family
    kernels = [k.lower() for k in kernel_names]
    for marker, family in _FAMILY_BY_KERNEL:
        if any(marker in k for k in kernels):
            return family
    return "decomposed" if compiled_region(ops) else "unfused"


def flash_impl(profile: Profile) -> str:
    """Which FlashAttention ran: FA3/FA4 through torch.nn.attention's registry, else PyTorch's built-in FA2."""
    names = [*profile.ops, *profile.kernels]
    if any("flash_attn_3" in n for n in names):
        return "FA3"
    if any("cute" in n.lower() for n in names):
        return "FA4"
    return "FA2 (built into PyTorch)"


# --- "no kernel for this": PyTorch's own words ----------------------------------------------------------------
# What PyTorch raises when the allowed backends cannot serve the call: "No available kernel. Aborting
# execution." on CUDA, "No viable backend for scaled_dot_product_attention was found." on CPU. Under
# torch.compile, Dynamo wraps the same message in a TorchRuntimeError while tracing.
NO_KERNEL_MARKERS = ("No available kernel", "No viable backend")
# The sentence itself, also where Dynamo quotes it: "...got RuntimeError('No viable backend for ...')".
_NO_KERNEL_SENTENCE = re.compile(r"(?:%s)[^'\"\n]*" % "|".join(NO_KERNEL_MARKERS))


def is_no_kernel_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if any(marker in str(seen) for marker in NO_KERNEL_MARKERS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def no_kernel_message(exc: BaseException) -> str:
    """PyTorch's own sentence, without Dynamo's wrapping around it."""
    found = _NO_KERNEL_SENTENCE.search(str(exc))
    return (found.group(0) if found else (str(exc).splitlines() or [""])[0]).strip()
