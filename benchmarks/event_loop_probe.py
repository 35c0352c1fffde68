"""Why attnbench's events median and triton's do_bench differ for calls with much host work (FA4's Python interface,
FlashInfer's paged decode): each call timed by do_bench and by event loops that differ in one thing each, for the
plain library call and for the call attnbench's job times (captured from a real `run_job`). Needs a CUDA GPU,
flash-attn-4 and flashinfer; an SDPA cuDNN call with little host work is the control.

Columns: `host` is the call's own host time (µs per call, enqueued while the GPU is busy, so it never waits);
`kernel` its kernels' device time (profiler); `do_bench` triton's median; `job` attnbench's events median from
`run_job`; `events` attnbench's event loop (`_event_samples`, batches with a synchronize between them); `1 batch`
the same loop with no synchronize between batches; `no flush` the loop without the L2 flush; `lead` the loop with
the GPU given a head start before each batch; `1st/rest` the medians of each batch's first 3 samples and the rest.

    python benchmarks/event_loop_probe.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from unittest import mock

import torch
from hydra import compose, initialize_config_dir

import attnbench.core.job as job_module
from attnbench.core.job import run_job
from attnbench.core.timing import timer
from attnbench.core.timing.profiling import profile_call
from attnbench.harness.config import job_spec, register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"
BASE = ["device=cuda", "model=attention", "dtype=bfloat16", "mode=fwd", "timing.method=events"]
CASES = {  # name: (backend, overrides)
    "sdpa cudnn causal B4 H16 S4096": ("cudnn", ["shape=long_context", "mask=causal"]),
    "fa4 causal B4 H16 S4096": ("fa4", ["shape=long_context", "mask=causal"]),
    "fa4 decode B8 H32/8 S4096": ("fa4", ["shape=decode", "mask=causal"]),
    "flashinfer decode pages of 16": ("flashinfer", ["shape=decode", "mask=causal", "shape.page_size=16"]),
    "cudnn decode B8 H32/8 S4096": ("cudnn", ["shape=decode", "mask=causal"]),
}


def plain_call(backend: str, cfg):
    """The library call written plainly, as benchmarks/kernels_vs_do_bench.py writes it."""
    import kernels_vs_do_bench as plain

    if backend in plain.CALLS:
        return plain.CALLS[backend](cfg, "fwd")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    s = cfg.shape
    make = lambda *shape: torch.randn(*shape, device="cuda", dtype=torch.bfloat16)  # noqa: E731
    q, k, v = make(s.batch, s.heads, s.q_len, s.head_dim), *(make(s.batch, s.kv_heads, s.seq_len, s.head_dim)
                                                             for _ in range(2))
    causal = s.q_len == s.seq_len  # decode: one query attends to the whole cache

    def call():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=s.kv_heads != s.heads)

    return call


def job_call(spec):
    """attnbench's job, run for real; returns its events median and the callable it timed."""
    seen = {}
    real_measure = job_module.measure

    def measure(fn, *args, **kwargs):
        seen["fn"] = fn
        return real_measure(fn, *args, **kwargs)

    with mock.patch.object(job_module, "measure", measure):
        record = run_job(spec)
    if record.status.value != "ok":
        raise RuntimeError(f"{record.status.value}: {record.reason}")
    return record.metrics["events_median_us"], seen["fn"]


def host_us(fn, calls: int = 100) -> float:
    """Host time per call while the GPU is busy with a long queue (the host never waits for it)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(int(2e9))  # ~1 s of GPU time ahead of the calls (private; a probe only)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def loop(fn, timing, *, batch: int | None = None, flush: bool = True, lead_s: float = 0.0):
    """attnbench's _event_samples with one thing changed."""
    cfg = type(timing)(**{**vars(timing), "flush_l2": flush, "min_reps": 400, "max_reps": 400, "min_time_s": 0})
    patches = [mock.patch.object(timer, "MAX_EVENT_BATCH", batch)] if batch else []
    if lead_s:
        real_events = torch.cuda.Event

        class LeadEvents:  # a head start each time the loop makes a batch's events (after each synchronize)
            made = 0

            def __new__(cls, *args, **kwargs):
                if cls.made % 2 == 0 and cls.made % (2 * (batch or timer.MAX_EVENT_BATCH)) == 0:
                    torch.cuda._sleep(int(lead_s * 2e9))
                cls.made += 1
                return real_events(*args, **kwargs)

        patches.append(mock.patch.object(torch.cuda, "Event", LeadEvents))
    for p in patches:
        p.start()
    try:
        samples = timer._event_samples(fn, torch.device("cuda"), cfg, 1e-4)
    finally:
        for p in patches:
            p.stop()
    size = batch or timer.MAX_EVENT_BATCH
    first = [s for i, s in enumerate(samples) if i % size < 3]
    rest = [s for i, s in enumerate(samples) if i % size >= 3]
    return statistics.median(samples), statistics.median(first), statistics.median(rest) if rest else 0.0


def main() -> None:
    from triton.testing import do_bench

    register_configs()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}  "
          f"flush {timer.l2_flush_buffer(torch.device('cuda')).numel() * 4 / 2**20:.0f} MiB")
    head = (f"{'case':31} {'call':9} {'host':>6} {'kernel':>7} {'do_bench':>8} {'job':>6} {'events':>7}"
            f" {'1st/rest':>13} {'1 batch':>7} {'no flush':>8} {'lead':>6}")
    print(head)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name, (backend, overrides) in CASES.items():
            cfg = compose("config", overrides=[*BASE, f"backend={backend}", *overrides])
            spec = job_spec(cfg)
            try:
                job_median, attnbench_fn = job_call(spec)
                calls = {"plain": plain_call(backend, cfg), "attnbench": attnbench_fn}
            except Exception as e:  # noqa: BLE001 - a library missing: say so, go on
                print(f"{name:31} skipped: {str(e)[:100]}")
                continue
            for who, fn in calls.items():
                try:
                    fn()
                    torch.cuda.synchronize()
                except Exception as e:  # noqa: BLE001 - e.g. cuDNN refusing a grouped-query decode
                    print(f"{name:31} {who:9} failed: {str(e).splitlines()[0][:100]}")
                    continue
                kernel = profile_call(fn, torch.device("cuda"), host_ops=False, calls=20).kernel_us
                reference = do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e3
                events, first, rest = loop(fn, spec.timing)
                one_batch = loop(fn, spec.timing, batch=400)[0]
                no_flush = loop(fn, spec.timing, flush=False)[0]
                lead = loop(fn, spec.timing, lead_s=0.005)[0]
                print(f"{name:31} {who:9} {host_us(fn):6.1f} {kernel:7.1f} {reference:8.1f} "
                      f"{job_median if who == 'attnbench' else float('nan'):6.1f} {events:7.1f} "
                      f"{first:6.1f}/{rest:6.1f} {one_batch:7.1f} {no_flush:8.1f} {lead:6.1f}", flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
