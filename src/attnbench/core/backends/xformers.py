"""xFormers' `memory_efficient_attention` (`xformers.ops`), with the operator its dispatcher picked recorded.

Sequence-major inputs (B, S, H, D); grouped-query heads as xFormers takes them, 5-D (B, S, G, H/G, D) with each key
and value head expanded (a view) over its group; masks none and causal (bottom-right) as its attention biases, and
sliding_window as its bottom-right local-attention bias. xFormers' C++/CUDA operators are built for one torch and
CUDA: where they do not load (a wheel built for CUDA 12 on a CUDA 13 torch), xFormers warns and would run whatever
operators are left; here the job is `unsupported` with xFormers' own message instead.
"""

from __future__ import annotations

from attnbench.core.backends import LayoutCall, register_backend
from attnbench.core.backends.libraries import Library, LibraryBackend, first_line
from attnbench.core.errors import Unsupported
from attnbench.core.spec import Mode

XFORMERS = Library("xformers.ops", "xformers", "xformers")


@register_backend("xformers")
class XFormers(LibraryBackend):
    library = XFORMERS
    package = "xformers"
    refusals = (NotImplementedError, ValueError)
    kernel_words = ("fmha", "flash", "attention", "cutlass")
    kernel_family = "attention"

    def kernel_limits(self, problem, device, dtype, mode):
        if problem.kv_heads != problem.heads and mode is not Mode.fwd:
            return "xFormers runs grouped-query heads forward only (its documentation); mode=fwd runs"
        return cpp_ops_problem()

    def build(self, problem, device, dtype):
        ops = XFORMERS.load()
        bias = attention_bias(problem)
        group, kv_heads = problem.group, problem.kv_heads

        def enter(q, k, v):
            b, _, sq, d = q.shape
            s = k.shape[2]
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, S, H, D) views
            if group > 1:  # (B, S, G, H/G, D): each key/value head expanded over its query heads, no copy
                q = q.reshape(b, sq, kv_heads, group, d)
                k, v = (t.reshape(b, s, kv_heads, 1, d).expand(b, s, kv_heads, group, d) for t in (k, v))
            return q, k, v

        def call(q, k, v):
            return ops.memory_efficient_attention(q, k, v, attn_bias=bias)

        def leave(out):
            return out.reshape(out.shape[0], out.shape[1], problem.heads, problem.head_dim).transpose(1, 2)

        return LayoutCall(enter, call, leave)

    def refusal(self, exc):
        return first_line(exc)  # its dispatcher's own words list why each operator refused

    def dispatch(self, profile):
        found = super().dispatch(profile)
        op = next((name for name in profile.ops if name.startswith(("xformers", "xformers_flash"))), "")
        found.tags = {"xformers.op": op, **found.tags}  # which of its operators its dispatcher picked
        return found


def cpp_ops_problem() -> str | None:
    """xFormers' own message when its C++/CUDA operators did not load (it only warns, at import)."""
    try:
        import xformers
    except Exception as e:  # noqa: BLE001 - the library's own failure, as the reason
        return f"xformers does not import here: {type(e).__name__}: {first_line(e)}"
    if getattr(xformers, "_has_cpp_library", True):  # xFormers' flag; absent in a release that renames it: trust it
        return None
    from xformers import _cpp_lib

    error = getattr(_cpp_lib, "_cpp_library_load_exception", None)
    words = " ".join(str(error).split()) if error else "its C++/CUDA operators did not load"
    return f"backend=xformers: {words}"


def attention_bias(problem):
    from xformers.ops import fmha

    name = problem.mask.name
    if name == "none":
        return None
    if name == "causal":
        return fmha.attn_bias.LowerTriangularFromBottomRightMask()
    if name == "sliding_window":
        return fmha.attn_bias.LowerTriangularFromBottomRightLocalAttentionMask(problem.mask.config.window)
    raise Unsupported(f"backend=xformers runs mask=none, causal, sliding_window; not {name}")
