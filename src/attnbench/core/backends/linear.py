"""Kernelized linear attention (Katharopoulos et al., 2020): softmax(QKᵀ) replaced by φ(Q)φ(K)ᵀ, φ = elu + 1.

out_i = φ(q_i)·Σ_j φ(k_j)v_jᵀ / φ(q_i)·Σ_j φ(k_j), over the keys the mask keeps. Non-causal: one sum over all
keys. Causal: prefix sums, computed chunk by chunk (a quadratic product inside each chunk of `backend.chunk`
positions, a running D×D state across chunks), so memory stays O(S·D + S/chunk·D²) and time O(S·D²): linear in
the sequence length. Approximate: it does not compute softmax attention, so its error against softmax is logged,
not judged; it is judged against its own formula computed quadratically in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnbench.core.backends import Backend, register_backend
from attnbench.core.options import LinearConfig
from attnbench.core.errors import ConfigError
from attnbench.core.spec import Mode

# φ is computed in float32 from half-precision inputs (exp() in bf16 is coarse). bfloat16 then runs the products on
# tensor cores, with the prefix sums over chunks (sums of many terms) accumulated in float32. float16 cannot: its
# largest value, 65504, is below what φ(q)·Σφ(k) reaches at a few thousand positions, so it computes in float32.
WIDE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}
COMPUTE = {torch.float16: torch.float32}


def elu_feature_map(x: torch.Tensor, is_query: bool) -> torch.Tensor:
    return F.elu(x) + 1


@register_backend("linear")
class Linear(Backend):
    Config = LinearConfig
    approximate = True
    native_masks = frozenset({"none", "causal"})

    def validate(self):
        if self.config.chunk < 1:
            raise ConfigError("backend.chunk", self.config.chunk, "a positive number of positions")

    def feature_map(self, problem, device):
        """φ(x, is_query), for queries and keys (B, H, S, D) → (B, H, S, F), positive. Built once per job."""
        return elu_feature_map

    def features(self, problem) -> int:
        """F, the width of φ(x)."""
        return problem.head_dim

    def feature_flops(self, problem) -> int:
        """FLOPs of φ for one row: elu + 1 is elementwise, not counted."""
        return 0

    def flops(self, problem, mode):
        """Its own algorithm's forward as run (not softmax's): φ of every query and key row, φ(K)ᵀV and Σφ(K) per
        key/value head, then per query head either one product with that state (non-causal, a decode step) or,
        causal, the chunk's quadratic form and a product with the state of earlier chunks on every position. A
        backward is counted as twice the forward (each product has two gradient products)."""
        p, f, d, chunk = problem, self.features(problem), problem.head_dim, self.config.chunk
        states = p.batch * p.kv_heads * p.seq_len * (2 * f * d + f)
        if p.mask.name != "causal" or p.q_len == 1:
            queries = p.batch * p.heads * p.q_len * (2 * f * d + 2 * f)
        else:  # queries padded to the whole sequence, chunk by chunk
            rows = p.batch * p.heads * (p.seq_len + -p.seq_len % chunk)
            queries = rows * (2 * chunk * f + 2 * chunk * d + 2 * f * d + 2 * f + chunk)
        features = (p.batch * p.heads * p.q_len + p.batch * p.kv_heads * p.seq_len) * self.feature_flops(p)
        forward = states + queries + features
        return {Mode.fwd: forward, Mode.bwd: 2 * forward, Mode.fwd_bwd: 3 * forward}[mode]

    def build(self, problem, device, dtype):
        phi = self.feature_map(problem, device)
        causal = problem.mask.name == "causal"
        chunk = self.config.chunk

        def attend(q, k, v):
            wide, compute = WIDE.get(q.dtype, q.dtype), COMPUTE.get(q.dtype, q.dtype)
            fq, fk = phi(q.to(wide), is_query=True).to(compute), phi(k.to(wide), is_query=False).to(compute)
            return kernelized_attention(fq, fk, v.to(compute), causal, chunk).to(q.dtype)

        return attend

    def reference(self, problem):
        """The same φ, in float64, with the quadratic masked formula: independent of the chunked prefix sums. Takes
        the problem's query rows `rows` (all by default), as attnbench.core.correctness.ReferenceAttention does."""
        phi = self.feature_map(problem, torch.device("cpu"))
        mask = problem.mask

        def quadratic(q, k, v, rows=slice(None)):
            group = q.shape[1] // k.shape[1]
            fq = phi(q, is_query=True)
            fk = phi(k, is_query=False).repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
            weights = fq @ fk.transpose(-2, -1)  # (B, H, rows, S)
            if mask.name != "none":
                start, stop, _ = rows.indices(mask.q_len)
                weights = weights.masked_fill(~mask.dense_rows(start, stop, q.device), 0)
            return weights @ v / weights.sum(-1, keepdim=True)

        return quadratic


def kernelized_attention(fq, fk, v, causal: bool, chunk: int) -> torch.Tensor:
    """φ(Q) (B, H, Sq, F), φ(K) (B, Hkv, S, F), V (B, Hkv, S, D) → (B, H, Sq, D); queries are the last Sq positions."""
    batch, heads, q_len, features = fq.shape
    kv_heads, seq_len = fk.shape[1], fk.shape[2]
    fq = fq.view(batch, kv_heads, heads // kv_heads, q_len, features)  # (B, Hkv, G, Sq, F): heads share K, V
    if not causal or q_len == 1:  # a bottom-right causal query at the last position sees every key
        # One state for all queries: O(S·F·D), cheap enough to keep entirely in float32.
        dtype, wide = v.dtype, WIDE.get(v.dtype, v.dtype)
        fq, fk, v = fq.to(wide), fk.to(wide), v.to(wide)
        state = fk.transpose(-2, -1) @ v  # (B, Hkv, F, D)
        norm = fk.sum(-2)  # (B, Hkv, F)
        out = (fq @ state.unsqueeze(2)) / (fq @ norm[:, :, None, :, None])
        return out.reshape(batch, heads, q_len, -1).to(dtype)
    # Causal with q_len > 1: pad the queries to the full length and keep the last q_len rows. Padding rows are
    # ones, not zeros: a zero row would divide 0 by 0, and NaN would reach the gradients through the products.
    if q_len < seq_len:
        fq = F.pad(fq, (0, 0, seq_len - q_len, 0), value=1.0)
    out = _causal_chunks(fq, fk, v, chunk)[..., seq_len - q_len:, :]
    return out.reshape(batch, heads, q_len, -1)


def _causal_chunks(fq, fk, v, chunk: int) -> torch.Tensor:
    """Causal prefix sums, one chunk of positions at a time (all chunks computed together)."""
    batch, kv_heads, group, seq_len, features = fq.shape
    pad = -seq_len % chunk
    if pad:  # zero keys and values add nothing to any sum; padding queries are ones (see above)
        fq, fk, v = F.pad(fq, (0, 0, 0, pad), value=1.0), F.pad(fk, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
    n = (seq_len + pad) // chunk
    fq = fq.view(batch, kv_heads, group, n, chunk, features)  # (B, Hkv, G, N, C, F)
    fk = fk.view(batch, kv_heads, n, chunk, features)  # (B, Hkv, N, C, F)
    v = v.view(batch, kv_heads, n, chunk, v.shape[-1])  # (B, Hkv, N, C, D)
    # State of every earlier chunk: exclusive prefix sums over chunks of φ(K)ᵀV and of φ(K), accumulated wide.
    wide = WIDE.get(fk.dtype, fk.dtype)
    per_chunk = (fk.transpose(-2, -1) @ v).to(wide)  # (B, Hkv, N, F, D)
    states = (torch.cumsum(per_chunk, dim=2) - per_chunk).to(fk.dtype)
    chunk_norms = fk.sum(-2, dtype=wide)  # (B, Hkv, N, F)
    norms = (torch.cumsum(chunk_norms, dim=2) - chunk_norms).to(fk.dtype)
    # Inside a chunk: the causal quadratic form.
    within = (fq @ fk.unsqueeze(2).transpose(-2, -1)).tril()  # (B, Hkv, G, N, C, C)
    numerator = within @ v.unsqueeze(2) + fq @ states.unsqueeze(2)  # (B, Hkv, G, N, C, D)
    denominator = within.sum(-1, keepdim=True) + fq @ norms[:, :, None, :, :, None]  # (B, Hkv, G, N, C, 1)
    out = _divide(numerator, denominator).view(batch, kv_heads, group, n * chunk, -1)
    return out[:, :, :, :seq_len]


def _divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """In float32 for half-precision inputs: the denominator is a sum of many positive terms."""
    wide = WIDE.get(numerator.dtype, numerator.dtype)
    return (numerator.to(wide) / denominator.to(wide)).to(numerator.dtype)
