"""Cross-check attnbench's device timing against independent references, in one process on a CUDA GPU.

For each SDPA backend, at the seed shape (B 64, H 32, S 256, D 32, fp16) and at long context (B 4, H 16,
S 4096, D 128, bf16, causal), forward and forward+backward:
- attnbench's `events` median: the real job (`run_job`), repeated `--repeats` times; their CV is the
  repeat-to-repeat stability;
- `torch.profiler`'s kernel sum per call (attnbench's `profiler` method: CUPTI timestamps, L2 flushed before
  each call, as `events` does);
- `triton.testing.do_bench(return_mode="median")` on the same operation written plainly;
- attnbench's `cuda_graph` median: the call replayed from a CUDA graph, so no host gaps between its kernels.
Then the article's CausalSelfAttention module (launch-bound) with every timing method.

    python benchmarks/validate_timing.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnbench.core.job import run_job
from attnbench.harness.config import job_spec, register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"
CASES = {
    "seed fp16": ["shape=seed_sdpa", "dtype=float16", "mask=none"],
    "long bf16 causal": ["shape=long_context", "dtype=bfloat16", "mask=causal"],
}
BACKENDS = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
TARGET = 0.03  # ±3 %, or ±3 µs where that is larger, for cases of 50 µs or more


def job(*overrides: str) -> dict:
    return run_job(job_spec(compose("config", overrides=["device=cuda", *overrides])))


def do_bench_us(cfg_overrides: list[str], backend: SDPBackend, mode: str) -> float:
    from triton.testing import do_bench

    cfg = compose("config", overrides=cfg_overrides)
    s = cfg.shape
    dtype = getattr(torch, cfg.dtype.value)
    q, k, v = (torch.randn(s.batch, s.heads, s.seq_len, s.head_dim, device="cuda", dtype=dtype,
                           requires_grad=mode == "fwd_bwd") for _ in range(3))
    grad_out = torch.randn_like(q)

    def forward():
        return F.scaled_dot_product_attention(q, k, v, is_causal=cfg.mask.name == "causal")

    def training_step():
        return torch.autograd.grad(forward(), (q, k, v), grad_out)

    with sdpa_kernel(backend), torch.set_grad_enabled(mode == "fwd_bwd"):
        return do_bench(forward if mode == "fwd" else training_step, warmup=25, rep=100,
                        return_mode="median") * 1e3


def verdict(events: float, reference: float) -> str:
    if reference < 50:
        return "n/a (<50 µs)"
    return "ok" if abs(events - reference) <= max(TARGET * reference, 3.0) else "MISS"


def sdpa_rows(repeats: int) -> None:
    print(f"{'case':18} {'backend':9} {'mode':7} {'events':>9} {'rep CV':>7} {'profiler':>9} {'do_bench':>9} "
          f"{'graph':>9} {'ev/prof':>8} {'ev/dob':>7}  target")
    for case, shape in CASES.items():
        for mode in ("fwd", "fwd_bwd"):
            for name, backend in BACKENDS.items():
                overrides = ["model=attention", f"backend={name}", f"mode={mode}", *shape]
                runs = [job(*overrides, "timing.method=events") for _ in range(repeats)]
                if runs[0].status != "ok":
                    print(f"{case:18} {name:9} {mode:7} {runs[0].status}: {runs[0].reason[:90]}")
                    continue
                medians = [r.metrics["events_median_us"] for r in runs]
                events = statistics.median(medians)
                rep_cv = statistics.stdev(medians) / statistics.fmean(medians) if repeats > 1 else 0.0
                prof = job(*overrides, "timing.method=profiler").metrics["profiler_median_us"]
                dob = do_bench_us(["model=attention", *shape], backend, mode)
                # CUDA-graph replay: device time with no host gaps between the call's kernels
                graph = job(*overrides, "timing.method=cuda_graph").metrics.get("cuda_graph_median_us", float("nan"))
                print(f"{case:18} {name:9} {mode:7} {events:9.1f} {rep_cv:7.3%} {prof:9.1f} {dob:9.1f} {graph:9.1f} "
                      f"{events / prof:8.3f} {events / dob:7.3f}  {verdict(events, prof)}")
                torch.cuda.empty_cache()


def module_rows() -> None:
    """The module at the article's size: what each method says when the host is the bottleneck."""
    print(f"\n{'CausalSelfAttention B32 T128 H8 D64 fp16 causal':48} " +
          " ".join(f"{m:>10}" for m in ("events", "wall", "cuda_graph", "profiler")))
    base = ["model=causal_self_attention", "shape=seed_causal_self_attention", "mask=causal", "dtype=float16"]
    for label, extra in (("eager", []), ("compiled (default)", ["compile=true"]),
                         ("compiled (reduce-overhead)", ["compile=true", "compile_mode=reduce-overhead"])):
        cells = []
        for method in ("events", "wall", "cuda_graph", "profiler"):
            r = job(*base, *extra, f"timing.method={method}")
            cells.append(f"{r.metrics[f'{method}_median_us']:10.1f}" if r.status == "ok" else
                         f"{r.status[:10]:>10}")
        print(f"{label:48} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    register_configs()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}  "
          f"cuDNN {torch.backends.cudnn.version()}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        sdpa_rows(args.repeats)
        module_rows()


if __name__ == "__main__":
    main()
