"""Cross-check attnbench's `events` timer against torch.profiler's kernel sum and triton's do_bench.

Run on a CUDA machine: `python benchmarks/validate_timing.py`. Prints, per backend and shape, the three
medians in µs and attnbench's ratio to each reference.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from attnbench.config import TimingConfig
from attnbench.models.causal_self_attention import CausalSelfAttention
from attnbench.timing.timer import measure, warm_up

CASES = {
    "seed B64 H32 S256 D32 fp16": dict(shape=(64, 32, 256, 32), dtype=torch.float16, causal=False),
    "long B4 H16 S4096 D128 bf16 causal": dict(shape=(4, 16, 4096, 128), dtype=torch.bfloat16, causal=True),
}
BACKENDS = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def profiler_kernel_us(fn, calls: int = 20) -> float:
    """Median over calls of the summed CUDA kernel time of one call (CUPTI timestamps)."""
    per_call = []
    for _ in range(calls):
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        per_call.append(sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == DeviceType.CUDA))
    return statistics.median(per_call)


def row(case: str, name: str, fn, dev, cfg) -> None:
    from triton.testing import do_bench

    m = measure(fn, dev, "events", cfg, warm_up(fn, dev, 0.1))
    wall = measure(fn, dev, "wall", cfg, warm_up(fn, dev, 0.05)).stats.median_us
    prof = profiler_kernel_us(fn)
    dob = do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3
    ev = m.stats.median_us
    print(f"{case:38} {name:10} {ev:10.1f} {prof:10.1f} {dob:10.1f} {ev / prof:8.3f} {ev / dob:8.3f} "
          f"{m.stats.cv:6.3f} {wall:10.1f}")


def module_rows(dev, cfg) -> None:
    """The article's module: launch-bound at this size, so events, kernel sum and wall time part ways."""
    case = "CSA B32 T128 H8 D64 fp16 causal"
    module = CausalSelfAttention(8, 512, bias=False, dropout=0.1, is_causal=True).to(dev, torch.float16).eval()
    x = torch.randn(32, 128, 512, device=dev, dtype=torch.float16)
    with torch.no_grad():
        row(case, "eager", lambda: module(x), dev, cfg)
        for mode in ("default", "reduce-overhead"):
            torch._dynamo.reset()
            compiled = torch.compile(module, mode=mode)

            def step():
                torch.compiler.cudagraph_mark_step_begin()
                return compiled(x)

            step()
            row(case, f"compiled {mode}"[:22], step, dev, cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min-time", type=float, default=0.5)
    args = parser.parse_args()

    dev = torch.device("cuda")
    cfg = TimingConfig(min_time_s=args.min_time, min_reps=20, max_reps=5000)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}  "
          f"cuDNN {torch.backends.cudnn.version()}")
    print(f"{'case':38} {'backend':10} {'events':>10} {'profiler':>10} {'do_bench':>10} "
          f"{'ev/prof':>8} {'ev/dob':>8} {'cv':>6} {'wall':>10}")
    for case, spec in CASES.items():
        q, k, v = (torch.randn(*spec["shape"], device=dev, dtype=spec["dtype"]) for _ in range(3))

        def fn():
            return F.scaled_dot_product_attention(q, k, v, is_causal=spec["causal"])

        for name, backend in BACKENDS.items():
            with sdpa_kernel(backend):
                try:
                    fn()
                except (RuntimeError, torch.OutOfMemoryError) as e:
                    print(f"{case:38} {name:10} unsupported: {str(e).splitlines()[0][:60]}")
                    continue
                row(case, name, fn, dev, cfg)
            torch.cuda.empty_cache()
    module_rows(dev, cfg)


if __name__ == "__main__":
    main()
