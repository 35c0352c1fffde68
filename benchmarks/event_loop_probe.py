"""Why attnbench's events median and triton's do_bench differ for calls with much host work (FA4's Python interface,
a 60 µs decode kernel): the same calls timed by do_bench and by a plain event loop (flush, start, call, end) with
no flush, attnbench's flush (2 × L2) and do_bench's (256 MB). Needs a CUDA GPU, flash-attn-4 and flashinfer.

    python benchmarks/event_loop_probe.py
"""

import statistics

import flashinfer
import torch
from flash_attn.cute import flash_attn_func
from triton.testing import do_bench


def event_loop_us(fn, flush_bytes: int, calls: int = 200) -> float:
    flush = torch.empty(max(1, flush_bytes // 4), dtype=torch.int32, device="cuda")
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    for start, end in zip(starts, ends):
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) * 1e3 for start, end in zip(starts, ends))


def cases():
    like = dict(device="cuda", dtype=torch.bfloat16)
    q, k, v = (torch.randn(4, 4096, 16, 128, **like) for _ in range(3))
    yield "fa4 causal B4 H16 S4096 fwd", lambda: flash_attn_func(q, k, v, causal=True)[0]
    query = torch.randn(8, 1, 32, 128, **like)
    keys, values = (torch.randn(8, 4096, 8, 128, **like) for _ in range(2))
    yield "fa4 decode B8 H32/8 S4096", lambda: flash_attn_func(query, keys, values, causal=True)[0]
    workspace = torch.empty(128 * 2**20, dtype=torch.uint8, device="cuda")
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, kv_layout="NHD")
    ints = dict(dtype=torch.int32, device="cuda")
    wrapper.plan(torch.arange(9, **ints) * 256, torch.arange(8 * 256, **ints), torch.full((8,), 16, **ints),
                 32, 8, 128, 16, q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
    cache = (keys.reshape(-1, 16, 8, 128), values.reshape(-1, 16, 8, 128))
    steps = query.reshape(8, 32, 128)
    yield "flashinfer decode pages of 16", lambda: wrapper.run(steps, cache)


if __name__ == "__main__":
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    print(f"L2 {l2 / 2**20:.0f} MiB; attnbench flushes {2 * l2 / 2**20:.0f} MiB, do_bench 256 MB")
    print(f"{'case':32} {'do_bench':>9} {'loop 2xL2':>10} {'loop 256MB':>11} {'no flush':>9}")
    for name, fn in cases():
        fn()
        torch.cuda.synchronize()
        reference = do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e3
        print(f"{name:32} {reference:9.1f} {event_loop_us(fn, 2 * l2):10.1f} {event_loop_us(fn, 256 * 2**20):11.1f} "
              f"{event_loop_us(fn, 0):9.1f}", flush=True)
