"""Stand-ins for third-party attention libraries, computing with torch on the CPU as each library documents its
calling convention (layout, head counts, mask arguments, page tables), and refusing what the library refuses.

They encode the libraries' conventions independently of attnbench's backends, so a test that runs a backend over a
stand-in and compares with the float64 reference checks the backend's side of the convention: a layout converted
wrongly, heads expanded or mapped wrongly, a mask aligned top-left instead of bottom-right, a page table indexing
the wrong pages, all give a wrong answer or trip an assertion here.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import torch


def module(name: str, **attributes) -> types.ModuleType:
    made = types.ModuleType(name)
    made.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec finds it
    made.__dict__.update(attributes)
    return made


def install(monkeypatch, *modules: types.ModuleType) -> None:
    for made in modules:
        monkeypatch.setitem(sys.modules, made.__name__, made)


def windowed(q, k, v, left=None, right=None):
    """Softmax attention on sequence-major q (B, Sq, H, D), k and v (B, S, Hkv, D), grouped heads by count
    (query head h reads key head h // (H / Hkv)), with a bottom-right aligned window: query i (at position
    i + S - Sq) sees keys in [position - left, position + right]; None or a negative bound is unbounded."""
    for t in (q, k, v):
        assert t.dim() == 4 and t.is_contiguous(), "sequence-major, contiguous (B, S, H, D) expected"
    b, sq, h, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    assert h % hkv == 0 and k.shape == v.shape == (b, s, hkv, d)
    qf, kf, vf = (t.double().transpose(1, 2) for t in (q, k, v))  # (B, H, S, D)
    kf, vf = (t.repeat_interleave(h // hkv, dim=1) for t in (kf, vf))
    scores = qf @ kf.transpose(-1, -2) / d ** 0.5
    position = torch.arange(sq)[:, None] + s - sq
    key = torch.arange(s)[None, :]
    keep = torch.ones(sq, s, dtype=torch.bool)
    if left is not None and left >= 0:
        keep &= key >= position - left
    if right is not None and right >= 0:
        keep &= key <= position + right
    out = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1) @ vf
    return out.transpose(1, 2).to(q.dtype).contiguous()  # (B, Sq, H, D)


def fa_window(causal, window_size):
    left, right = window_size
    return left, 0 if causal else right


def flash_attn_cute():
    """flash_attn.cute (FlashAttention-4): flash_attn_func → (out, lse); window bounds None when unbounded."""
    calls = []

    def flash_attn_func(q, k, v, softmax_scale=None, causal=False, window_size=(None, None), **kwargs):
        calls.append({"causal": causal, "window_size": window_size, "kv_heads": k.shape[2]})
        return windowed(q, k, v, *fa_window(causal, window_size)), None

    def _validate_head_dims(head_dim, head_dim_v, compute_capability, alignment):
        assert 8 <= head_dim <= 256 and head_dim % alignment == 0, (
            f"(head_dim, head_dim_v)=({head_dim}, {head_dim_v}) is not supported on SM90.")

    interface = module("flash_attn.cute.interface", _validate_head_dims=_validate_head_dims)
    cute = module("flash_attn.cute", flash_attn_func=flash_attn_func, interface=interface, calls=calls)
    return module("flash_attn"), cute, interface


def flash_attn_2():
    """flash_attn (FlashAttention-2): flash_attn_func → out; window bounds -1 when unbounded."""
    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), **kwargs):
        return windowed(q, k, v, *fa_window(causal, window_size))

    interface = module("flash_attn.flash_attn_interface", flash_attn_func=flash_attn_func)
    return module("flash_attn", flash_attn_func=flash_attn_func, flash_attn_interface=interface), interface


def flash_attn_3():
    """flash_attn_interface (FlashAttention-3): flash_attn_func → (out, lse) in the releases that return both."""
    def flash_attn_func(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), **kwargs):
        return windowed(q, k, v, *fa_window(causal, window_size)), None

    return module("flash_attn_interface", flash_attn_func=flash_attn_func)


def flashinfer():
    """flashinfer: NHD tensors without a batch dimension; batch wrappers planned with CSR index arrays."""
    def single(q, k, v, causal, window_left):
        out = windowed(q[None], k[None], v[None], window_left, 0 if causal else None)
        return out[0]

    def single_prefill_with_kv_cache(q, k, v, causal=False, kv_layout="NHD", window_left=-1, **kwargs):
        assert kv_layout == "NHD" and q.dim() == 3
        return single(q, k, v, causal, window_left)

    def single_decode_with_kv_cache(q, k, v, kv_layout="NHD", window_left=-1, **kwargs):
        assert kv_layout == "NHD" and q.dim() == 2, "q is (H, D) for one decode step"
        return single(q[None], k, v, False, window_left)[0]

    class BatchPrefillWithRaggedKVCacheWrapper:
        def __init__(self, workspace, kv_layout="NHD"):
            assert kv_layout == "NHD" and workspace.dtype == torch.uint8
            self.planned = None

        def plan(self, qo_indptr, kv_indptr, num_qo_heads, num_kv_heads, head_dim_qk, causal=False, window_left=-1,
                 **kwargs):
            self.planned = (qo_indptr.tolist(), kv_indptr.tolist(), num_qo_heads, num_kv_heads, causal, window_left)

        def run(self, q, k, v):
            qo, kv, heads, kv_heads, causal, window_left = self.planned
            assert q.shape[1] == heads and k.shape[1] == kv_heads, "heads as planned"
            outs = [single(q[qo[i]:qo[i + 1]].contiguous(), k[kv[i]:kv[i + 1]].contiguous(),
                           v[kv[i]:kv[i + 1]].contiguous(), causal, window_left) for i in range(len(qo) - 1)]
            return torch.cat(outs)

    class BatchDecodeWithPagedKVCacheWrapper:
        def __init__(self, workspace, kv_layout="NHD"):
            assert kv_layout == "NHD"
            self.planned = None

        def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim, page_size,
                 window_left=-1, **kwargs):
            self.planned = (indptr.tolist(), indices.tolist(), last_page_len.tolist(), page_size, window_left)

        def run(self, q, paged_kv_cache):
            indptr, indices, last, page_size, window_left = self.planned
            k_pages, v_pages = paged_kv_cache
            assert k_pages.shape[1] == page_size, "pages of page_size positions (NHD)"
            outs = []
            for i in range(q.shape[0]):  # gather sequence i's pages through the page table, as the kernel reads them
                pages = indices[indptr[i]:indptr[i + 1]]
                k = torch.cat([k_pages[p] for p in pages])[: (len(pages) - 1) * page_size + last[i]]
                v = torch.cat([v_pages[p] for p in pages])[: (len(pages) - 1) * page_size + last[i]]
                outs.append(single(q[i][None].contiguous(), k.contiguous(), v.contiguous(), False, window_left))
            return torch.cat(outs)

    return module("flashinfer", single_prefill_with_kv_cache=single_prefill_with_kv_cache,
                  single_decode_with_kv_cache=single_decode_with_kv_cache,
                  BatchPrefillWithRaggedKVCacheWrapper=BatchPrefillWithRaggedKVCacheWrapper,
                  BatchDecodeWithPagedKVCacheWrapper=BatchDecodeWithPagedKVCacheWrapper)


def xformers(cpp_library_error: Exception | None = None):
    """xformers.ops.memory_efficient_attention: (B, M, H, K), or (B, M, G, H/G, K) for grouped heads with keys and
    values expanded over each group (xFormers does not broadcast); biases aligned bottom-right by name."""
    class LowerTriangularFromBottomRightMask:
        window = None

    class LowerTriangularFromBottomRightLocalAttentionMask(LowerTriangularFromBottomRightMask):
        def __init__(self, window_size):
            self.window = window_size

    def memory_efficient_attention(query, key, value, attn_bias=None, **kwargs):
        grouped = query.dim() == 5
        if grouped:  # (B, M, G, H/G, K): the expanded keys must be the same within a group
            assert key.stride(3) == 0, "keys and values expanded (a view) over each group"
            b, m, g, hg, d = query.shape
            query = query.reshape(b, m, g * hg, d)
            key, value = (t[:, :, :, 0].contiguous() for t in (key, value))
        left = None if attn_bias is None or attn_bias.window is None else attn_bias.window - 1
        right = None if attn_bias is None else 0
        out = windowed(query.contiguous(), key.contiguous(), value.contiguous(), left, right)
        return out.reshape(*out.shape[:2], g, hg, d) if grouped else out

    fmha_bias = module("xformers.ops.fmha.attn_bias",
                       LowerTriangularFromBottomRightMask=LowerTriangularFromBottomRightMask,
                       LowerTriangularFromBottomRightLocalAttentionMask=LowerTriangularFromBottomRightLocalAttentionMask)
    fmha = module("xformers.ops.fmha", attn_bias=fmha_bias)
    ops = module("xformers.ops", memory_efficient_attention=memory_efficient_attention, fmha=fmha)
    cpp_lib = module("xformers._cpp_lib", _cpp_library_load_exception=cpp_library_error)
    root = module("xformers", ops=ops, _cpp_lib=cpp_lib, _has_cpp_library=cpp_library_error is None)
    return root, ops, fmha, fmha_bias, cpp_lib


def sageattention():
    """sageattention.sageattn: HND (B, H, S, D), causal aligned top-left (query i sees keys 0..i)."""
    def sageattn(q, k, v, tensor_layout="HND", is_causal=False, **kwargs):
        assert tensor_layout == "HND"
        sq, s = q.shape[2], k.shape[2]
        assert not is_causal or sq == s, "top-left causal: only the same as bottom-right when q_len = seq_len"
        seq = [t.transpose(1, 2).contiguous() for t in (q, k, v)]
        return windowed(*seq, None, 0 if is_causal else None).transpose(1, 2)

    return module("sageattention", sageattn=sageattn)
