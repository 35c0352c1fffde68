"""SageAttention (`sageattention.sageattn`): QKᵀ in INT8 with per-block scales, PV in float16; forward only.

Approximate: it quantises on purpose, so it is ranked apart from the exact kernels and never named a winner among
them (the `approximate` tag). It has no float64 formula of its own (`reference` is None): its output is judged
against exact softmax attention with a tolerance of its own (`TOLERANCE` class `quantized` in
attnbench.core.correctness, set from its measured error with a margin), so a broken kernel is still `wrong`. Its
causal mask is aligned top-left (query i sees keys 0..i), which is attnbench's bottom-right only when q_len =
seq_len: other causal problems are refused.
It subtracts the keys' mean from k in place (`smooth_k`, its default): softmax does not change, the inputs do.
"""

from __future__ import annotations

from attnbench.core.backends import register_backend
from attnbench.core.backends.libraries import HALF, Library, LibraryBackend
from attnbench.core.spec import Mode

SAGE = Library("sageattention", "sageattention", "sage")
HEAD_DIMS = (64, 96, 128)  # sageattn's own assertion (1.0.6)


@register_backend("sage")
class Sage(LibraryBackend):
    library = SAGE
    package = "sageattention"
    refusals = (AssertionError,)
    kernel_words = ("_attn_fwd", "attn")
    kernel_family = "SageAttention"
    approximate = True
    tolerance_class = "quantized"
    native_masks = frozenset({"none", "causal"})
    sequence_major = False  # it reads (B, H, S, D) as the job passes it: tensor_layout="HND"

    def supports(self, problem, device, dtype, mode):
        # Its own order and words: the mask before the device, whose check names its Triton kernels.
        reason = self.library.missing(self.name) or self._mask_support(problem)
        if reason:
            return reason
        if device.type != "cuda":
            return f"backend=sage runs on CUDA only (Triton kernels); device is {device.type}"
        if dtype not in HALF:
            return f"backend=sage takes float16 or bfloat16 here, not {str(dtype).removeprefix('torch.')}"
        if mode is not Mode.fwd:
            return f"SageAttention has no backward: mode={mode.value} needs one (mode=fwd runs)"
        if problem.head_dim not in HEAD_DIMS:
            return f"backend=sage takes head_dim 64, 96 or 128; shape.head_dim={problem.head_dim}"
        if problem.mask.name == "causal" and problem.q_len != problem.seq_len:
            return ("backend=sage aligns its causal mask top-left; with q_len < seq_len attnbench's bottom-right mask "
                    "differs (decode, chunked prefill)")
        return None

    def build(self, problem, device, dtype):
        attention = SAGE.load().sageattn
        causal = problem.mask.name == "causal"

        def attend(q, k, v):
            return attention(q, k, v, tensor_layout="HND", is_causal=causal)

        return attend

    def flops(self, problem, mode):
        return problem.flops(mode)  # the same score and PV products as softmax attention, in other precisions
