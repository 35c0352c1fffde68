"""FlashInfer (`flashinfer-python`), the kernels serving engines run: prefill and decode, forward only.

Which of its APIs a job calls follows from the problem, and is recorded as the tag `flashinfer.api`:
- prefill (q_len > 1): `single_prefill_with_kv_cache` for one sequence, the ragged batch prefill wrapper for more;
- decode (q_len 1): `single_decode_with_kv_cache` for one sequence and a contiguous cache, else the batch decode
  wrapper over a paged KV cache of `shape.page_size` positions per page (a contiguous cache, page_size 0, is read
  as pages of 16 in order: the same memory, in the layout FlashInfer's decode kernel is fast on).
The cache's pages are the sequence-major K and V themselves, viewed as (pages, page_size, Hkv, D) with each
sequence's pages in order: no copy. The wrappers' `plan` and FlashInfer's JIT compilation of each kernel (10–25 s
with the host's nvcc the first time) happen in the first call: the job's `first_call_s` and `compile_s`, never timed.
Masks: none, causal (bottom-right, as FlashInfer aligns it) and sliding_window (`window_left`).
"""

from __future__ import annotations

import torch

from attnbench.core.backends import LayoutCall, register_backend
from attnbench.core.backends.libraries import Library, LibraryBackend, window
from attnbench.core.spec import Mode

FLASHINFER = Library("flashinfer", "flashinfer-python", "flashinfer")
WORKSPACE_BYTES = 128 * 2**20  # the wrappers' scratch buffer, FlashInfer's documented size
# A contiguous cache is read as pages of this size, in order (the same memory): FlashInfer's decode kernel splits its
# work by pages, and one page per sequence left it ~3× slower (H200, B 8, S 4096: 189 µs of kernel against 60 µs).
CONTIGUOUS_PAGE = 16


@register_backend("flashinfer")
class FlashInfer(LibraryBackend):
    library = FLASHINFER
    package = "flashinfer"
    refusals = (AssertionError, NotImplementedError, ValueError, RuntimeError)
    kernel_words = ("flashinfer", "prefill", "decode")
    kernel_family = "FlashInfer"
    paged_kv = True
    compiles_on_first_call = True

    def kernel_limits(self, problem, device, dtype, mode):
        if mode is not Mode.fwd:
            return f"FlashInfer's attention kernels have no backward: mode={mode.value} needs one (mode=fwd runs)"
        return None

    def build(self, problem, device, dtype):
        calls = Calls(problem, device, dtype)
        self.api = calls.api
        return LayoutCall(calls.enter, calls.call, calls.leave)

    def tags(self):
        return {**super().tags(), "flashinfer.api": getattr(self, "api", "")}


class Calls:
    """One problem's FlashInfer call: q (B, H, Sq, D), k and v (B, Hkv, S, D), as views of sequence-major memory."""

    def __init__(self, problem, device: torch.device, dtype: torch.dtype) -> None:
        self.p, self.device, self.dtype = problem, device, dtype
        self.library = FLASHINFER.load()
        left, _ = window(problem)
        self.window_left = left if problem.mask.name == "sliding_window" else -1
        # A sliding window is causal too, limited on the left; one decode step sees every key behind it.
        self.causal = problem.mask.name in ("causal", "sliding_window") and problem.q_len > 1
        self.wrapper = None  # a batch wrapper, planned by the first call
        single = problem.batch == 1
        if problem.q_len == 1:
            self.api = "single_decode" if single and not problem.page_size else (
                f"batch_decode_paged(page_size={self.page_size})")
        else:
            self.api = "single_prefill" if single else "batch_prefill_ragged"

    @property
    def page_size(self) -> int:
        if self.p.page_size:
            return self.p.page_size
        return CONTIGUOUS_PAGE if self.p.seq_len % CONTIGUOUS_PAGE == 0 else self.p.seq_len

    def enter(self, q, k, v) -> tuple[torch.Tensor, ...]:
        """q (B, H, Sq, D), k and v (B, Hkv, S, D) → the chosen API's own shapes: views of the same memory."""
        p = self.p
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, S, H, D): contiguous views
        if self.api == "single_decode":
            return q[0, 0], k[0], v[0]
        if self.api == "single_prefill":
            return q[0], k[0], v[0]
        if p.q_len == 1:  # the cache's pages: each sequence's, in order
            pages = p.batch * p.seq_len // self.page_size
            k, v = (t.reshape(pages, self.page_size, p.kv_heads, p.head_dim) for t in (k, v))
            return q.reshape(p.batch, p.heads, p.head_dim), k, v
        return tuple(t.reshape(-1, t.shape[2], p.head_dim) for t in (q, k, v))

    def call(self, q, k, v) -> torch.Tensor:
        """The library's call alone: what the job times."""
        flashinfer = self.library
        if self.api == "single_decode":
            return flashinfer.single_decode_with_kv_cache(q, k, v, kv_layout="NHD", window_left=self.window_left)
        if self.api == "single_prefill":
            return flashinfer.single_prefill_with_kv_cache(q, k, v, causal=self.causal, kv_layout="NHD",
                                                           window_left=self.window_left)
        if self.p.q_len == 1:
            return self._batch_decode().run(q, (k, v))
        return self._batch_prefill().run(q, k, v)

    def leave(self, out: torch.Tensor) -> torch.Tensor:
        p = self.p
        return out.reshape(p.batch, p.q_len, p.heads, p.head_dim).transpose(1, 2)

    def _workspace(self) -> torch.Tensor:
        return torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=self.device)

    def _batch_decode(self):
        if self.wrapper is None:
            import flashinfer

            p, per_sequence = self.p, self.p.seq_len // self.page_size
            indptr, indices, last_page_len = page_table(p.batch, per_sequence, self.page_size, self.device)
            self.wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(self._workspace(), kv_layout="NHD")
            self.wrapper.plan(indptr, indices, last_page_len, p.heads, p.kv_heads, p.head_dim, self.page_size,
                              window_left=self.window_left, q_data_type=self.dtype, kv_data_type=self.dtype)
        return self.wrapper

    def _batch_prefill(self):
        if self.wrapper is None:
            import flashinfer

            p = self.p
            qo_indptr = torch.arange(p.batch + 1, dtype=torch.int32, device=self.device) * p.q_len
            kv_indptr = torch.arange(p.batch + 1, dtype=torch.int32, device=self.device) * p.seq_len
            self.wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(self._workspace(), kv_layout="NHD")
            self.wrapper.plan(qo_indptr, kv_indptr, p.heads, p.kv_heads, p.head_dim, causal=self.causal,
                              window_left=self.window_left, q_data_type=self.dtype, kv_data_type=self.dtype)
        return self.wrapper


def page_table(batch: int, per_sequence: int, page_size: int, device) -> tuple[torch.Tensor, ...]:
    """FlashInfer's CSR page table for `batch` sequences of `per_sequence` full pages each, stored in order:
    indptr (B+1) into indices (the pages of each sequence), and each sequence's last page length."""
    indptr = torch.arange(batch + 1, dtype=torch.int32, device=device) * per_sequence
    indices = torch.arange(batch * per_sequence, dtype=torch.int32, device=device)
    last_page_len = torch.full((batch,), page_size, dtype=torch.int32, device=device)
    return indptr, indices, last_page_len
