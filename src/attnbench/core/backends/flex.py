"""FlexAttention (torch.nn.attention.flex_attention), always compiled: uncompiled flex is an unfused fallback that
materialises the scores, and is never timed as flex.

The mask becomes a BlockMask once per job, outside the timing (`backend.block_size` positions per block), and
blocks the mask leaves empty are skipped. Grouped-query heads are native (`enable_gqa`).
"""

from __future__ import annotations

from typing import get_args, get_type_hints

import torch
from torch.nn.attention import flex_attention as flex

from attnbench.core.backends import ALL_MASKS, Backend, Dispatch, register_backend
from attnbench.core.backends.flash_impls import importable
from attnbench.core.errors import ConfigError
from attnbench.core.options import FlexConfig, FlexFlashConfig
from attnbench.core.spec import Mode


def _kernel_backends() -> tuple[str, ...]:
    """kernel_options["BACKEND"]'s values, on torch builds that have it (read from the public FlexKernelOptions)."""
    hint = get_type_hints(flex.FlexKernelOptions).get("BACKEND") if hasattr(flex, "FlexKernelOptions") else None
    values = tuple(a for arg in get_args(hint) for a in (get_args(arg) or (arg,)) if isinstance(a, str))
    return values or ("AUTO",)


KERNEL_BACKENDS = _kernel_backends()
MIN_CUDA_HEAD_DIM = 16  # Inductor's Triton templates: tl.dot needs an embedding of at least 16 (torch 2.11, 2.13)


@register_backend("flex")
class Flex(Backend):
    Config = FlexConfig
    native_masks = ALL_MASKS

    def validate(self):
        if self.config.block_size < 1:
            raise ConfigError("backend.block_size", self.config.block_size, "a positive number of positions")
        if self.config.kernel_backend not in ("AUTO", "TRITON", "TRITON_DECODE", "FLASH"):
            raise ConfigError("backend.kernel_backend", self.config.kernel_backend,
                              "one of AUTO, TRITON, TRITON_DECODE, FLASH")

    def supports(self, problem, device, dtype, mode):
        if device.type not in ("cuda", "cpu"):
            return f"backend=flex compiles for CUDA and CPU; device is {device.type}"
        if device.type == "cpu" and mode is not Mode.fwd:
            return f"FlexAttention has no backward on the CPU (torch {torch.__version__}): mode={mode.value} needs CUDA"
        if device.type == "cuda" and problem.head_dim < MIN_CUDA_HEAD_DIM:
            return (f"FlexAttention's CUDA kernels need head_dim >= {MIN_CUDA_HEAD_DIM} (torch {torch.__version__}); "
                    f"shape.head_dim={problem.head_dim}")
        kernel = self.config.kernel_backend
        if kernel != "AUTO" and kernel not in KERNEL_BACKENDS:
            return (f"backend.kernel_backend={kernel}: this torch build ({torch.__version__}) offers "
                    f"{', '.join(KERNEL_BACKENDS)}")
        if kernel != "AUTO" and device.type != "cuda":
            return f"backend.kernel_backend={kernel} picks among CUDA kernels; on {device.type} only AUTO runs"
        if kernel == "FLASH" and not importable("flash_attn.cute"):
            return "backend.kernel_backend=FLASH needs flash-attn's CuTe DSL kernels (no module 'flash_attn.cute')"
        return None

    def build(self, problem, device, dtype):
        mask = problem.mask.on(device)
        block_mask = None
        if problem.mask.name != "none":
            block_mask = flex.create_block_mask(
                lambda b, h, q_idx, kv_idx: mask.keep(q_idx, kv_idx), None, None, problem.q_len, problem.seq_len,
                device=device, BLOCK_SIZE=self.config.block_size)
            sparsity = float(block_mask.sparsity())
            # BlockMask.sparsity() is meaningless when the queries fill less than one block (a decode step).
            self.sparsity = sparsity if 0 <= sparsity <= 100 else None
        options = {} if self.config.kernel_backend == "AUTO" else {"BACKEND": self.config.kernel_backend}
        fused = torch.compile(flex.flex_attention, dynamic=False)
        gqa = problem.kv_heads != problem.heads

        def attend(q, k, v):
            return fused(q, k, v, block_mask=block_mask, enable_gqa=gqa, kernel_options=options or None)

        return attend

    def dispatch(self, profile):
        ops, kernels = profile.ops, list(profile.kernels)
        if any("_safe_softmax" in op or "FlexAttentionAutogradOp" in op for op in ops):
            ran = "flex (unfused eager fallback)"  # the scores were materialised: not the fused kernel
            return Dispatch(ran=ran, accepts=("flex fused",), tags={"flex.kernel": ran})
        # On CUDA the fused kernel is a Triton template of Inductor's (triton_tem_fused_flex_attention_*, the same name
        # for flex_attention and flex_decoding); on the CPU it is C++ code with no device kernel to name.
        templates = [k for k in kernels if "triton_tem" in k and "flex" in k]
        if self.config.kernel_backend == "FLASH":  # CuTe DSL kernels, named by flash-attn, not Inductor templates
            templates = [k for k in kernels if "flash" in k.lower()]
        if templates or not kernels:
            return Dispatch(ran="flex fused", accepts=("flex fused",), tags={"flex.kernel": "; ".join(templates)})
        return Dispatch(ran="flex (no fused flex kernel seen)", accepts=("flex fused",))

    def tags(self):
        tags = {"flex.block_size": str(self.config.block_size), "flex.kernel_backend": self.config.kernel_backend}
        if getattr(self, "sparsity", None) is not None:
            tags["flex.block_sparsity_pct"] = f"{self.sparsity:.1f}"
        return tags


@register_backend("flex_flash")
class FlexFlash(Flex):
    """flex with kernel_options BACKEND=FLASH: FlashAttention-4's CuTe DSL kernels run the BlockMask (flash-attn-4
    installed, CUDA), as a backend of its own so that a sweep can put it beside flex, fa4 and flash4."""

    Config = FlexFlashConfig
