"""Cross-check attnbench's medians for third-party kernels against `triton.testing.do_bench` of the same library
calls, written plainly here (not through attnbench's backends), in one process on a CUDA GPU.

For FlashAttention-4 (flash_attn.cute) and FlashInfer, on the `kernels` experiments' problems: attnbench's `events`
median (the real job, `run_job`, L2 flushed before each call) against do_bench's median (`return_mode="median"`,
which also clears the L2 before each call), the two interleaved `--repeats` times: a compute-heavy kernel's time
moves by ~10% with the card's clock as its power rises, so two timers run one after the other disagree by that
much. `MHz`: the lowest SM clock NVML saw during attnbench's runs. Libraries that do not import are skipped.

    python benchmarks/kernels_vs_do_bench.py [--repeats 3] [--only "flashinfer decode"]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from attnbench.core.backends.flashinfer import CONTIGUOUS_PAGE
from attnbench.core.job import run_job
from attnbench.harness.config import job_spec, register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"
PROBLEMS = {  # name: (overrides, mode)
    "causal B4 H16 S4096": (["shape=long_context", "mask=causal"], "fwd"),
    "causal B4 H16 S4096 train": (["shape=long_context", "mask=causal"], "fwd_bwd"),
    "GQA B1 H32/8 S8192": (["shape=gqa_prefill", "mask=causal"], "fwd"),
    "window256 B4 H16 S4096": (["shape=long_context", "mask=sliding_window"], "fwd"),
    "decode B8 H32/8 S4096": (["shape=decode", "mask=causal"], "fwd"),
    "decode paged16 B8 H32/8 S4096": (["shape=decode", "mask=causal", "shape.page_size=16"], "fwd"),
}
TARGET = 0.03


def inputs(s, dtype, grad=False):
    """Sequence-major q (B, Sq, H, D), k and v (B, S, Hkv, D)."""
    make = lambda *shape: torch.randn(*shape, device="cuda", dtype=dtype, requires_grad=grad)  # noqa: E731
    return make(s.batch, s.q_len, s.heads, s.head_dim), *(make(s.batch, s.seq_len, s.kv_heads, s.head_dim)
                                                          for _ in range(2))


def fa4_call(cfg, mode):
    from flash_attn.cute import flash_attn_func

    s, dtype = cfg.shape, getattr(torch, cfg.dtype.value)
    if s.page_size:
        return None
    q, k, v = inputs(s, dtype, grad=mode == "fwd_bwd")
    causal = cfg.mask.name == "causal"
    window = (cfg.mask.window - 1, 0) if cfg.mask.name == "sliding_window" else (None, None)
    grad_out = torch.randn_like(q)

    def forward():
        return flash_attn_func(q, k, v, causal=causal, window_size=window)[0]

    return forward if mode == "fwd" else lambda: torch.autograd.grad(forward(), (q, k, v), grad_out)


def flashinfer_call(cfg, mode):
    import flashinfer

    s, dtype = cfg.shape, getattr(torch, cfg.dtype.value)
    if mode != "fwd":
        return None
    q, k, v = inputs(s, dtype)
    left = cfg.mask.window - 1 if cfg.mask.name == "sliding_window" else -1
    workspace = torch.empty(128 * 2**20, dtype=torch.uint8, device="cuda")
    if s.q_len == 1:
        page = s.page_size or (CONTIGUOUS_PAGE if s.seq_len % CONTIGUOUS_PAGE == 0 else s.seq_len)  # as the backend
        per_seq = s.seq_len // page
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, kv_layout="NHD")
        wrapper.plan(torch.arange(s.batch + 1, dtype=torch.int32, device="cuda") * per_seq,
                     torch.arange(s.batch * per_seq, dtype=torch.int32, device="cuda"),
                     torch.full((s.batch,), page, dtype=torch.int32, device="cuda"),
                     s.heads, s.kv_heads, s.head_dim, page, window_left=left, q_data_type=dtype, kv_data_type=dtype)
        cache = tuple(t.reshape(-1, page, s.kv_heads, s.head_dim) for t in (k, v))
        query = q.reshape(s.batch, s.heads, s.head_dim)
        return lambda: wrapper.run(query, cache)
    causal = cfg.mask.name in ("causal", "sliding_window")
    if s.batch == 1:
        return lambda: flashinfer.single_prefill_with_kv_cache(q[0], k[0], v[0], causal=causal, window_left=left)
    wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, kv_layout="NHD")
    wrapper.plan(torch.arange(s.batch + 1, dtype=torch.int32, device="cuda") * s.q_len,
                 torch.arange(s.batch + 1, dtype=torch.int32, device="cuda") * s.seq_len,
                 s.heads, s.kv_heads, s.head_dim, causal=causal, window_left=left, q_data_type=dtype,
                 kv_data_type=dtype)
    flat = [t.reshape(-1, t.shape[2], t.shape[3]) for t in (q, k, v)]
    return lambda: wrapper.run(*flat)


CALLS = {"fa4": fa4_call, "flashinfer": flashinfer_call}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="rows whose 'backend problem' contains this text")
    args = parser.parse_args()
    from triton.testing import do_bench

    register_configs()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}")
    print(f"{'backend':10} {'problem':30} {'mode':7} {'events µs':>10} {'rep CV':>7} {'do_bench µs':>11} "
          f"{'ev/dob':>7}  within 3% {'MHz':>5}  each round (events/do_bench)")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for backend, plain in CALLS.items():
            for name, (shape, mode) in PROBLEMS.items():
                if args.only not in f"{backend} {name}":
                    continue
                overrides = ["device=cuda", "model=attention", "dtype=bfloat16", f"backend={backend}", f"mode={mode}",
                             "timing.method=events", *shape]
                try:
                    call = plain(compose("config", overrides=overrides), mode)
                except ImportError as e:
                    print(f"{backend:10} skipped: {e}")
                    break
                if call is None:
                    continue
                call()  # compile (JIT, CuTe DSL) before either timer sees it
                references, runs = [], []
                for _ in range(args.repeats):  # interleaved: both see the same clocks (the card's power state)
                    references.append(do_bench(call, warmup=25, rep=200, return_mode="median") * 1e3)
                    runs.append(run_job(job_spec(compose("config", overrides=overrides))))
                if runs[0].status.value != "ok":
                    print(f"{backend:10} {name:30} {mode:7} {runs[0].status.value}: {runs[0].reason[:100]}")
                    continue
                medians = [r.metrics["events_median_us"] for r in runs]
                events, reference = statistics.median(medians), statistics.median(references)
                cv = statistics.stdev(medians) / statistics.fmean(medians) if len(medians) > 1 else 0.0
                clock = min(r.metrics.get("gpu_sm_clock_min_mhz", float("nan")) for r in runs)
                ok = "yes" if abs(events - reference) <= TARGET * reference else "NO"
                print(f"{backend:10} {name:30} {mode:7} {events:10.1f} {cv:7.2%} {reference:11.1f} "
                      f"{events / reference:7.3f}  {ok:9} {clock:5.0f}  "
                      f"{' '.join(f'{m:.1f}/{r:.1f}' for m, r in zip(medians, references))}", flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
