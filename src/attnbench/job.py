"""One benchmark job: validate, build, (compile,) check against a reference, time, and report.

The job never raises: whatever happens becomes a status with a reason, so that one job cannot take a
sweep down. Statuses: ok, unsupported (this machine or build cannot run it), oom, wrong (non-finite
output), invalid (recompiled while being timed), error (anything unexpected; traceback kept).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field

import torch
from omegaconf import DictConfig

from attnbench.backends import (
    forced_backend,
    is_no_kernel_error,
    kernel_family,
    no_kernel_message,
    recorded_warnings,
)
from attnbench.case import case_key
from attnbench.config import Mode
from attnbench.correctness import check
from attnbench.devices import device_name, synchronize
from attnbench.errors import ConfigError, Unsupported
from attnbench.metrics import tflops_per_s
from attnbench.peak import datasheet, measured_peaks
from attnbench.timing import first_call, measure
from attnbench.timing.profiling import profile_call
from attnbench.timing.timer import l2_flush_buffer, warm_up
from attnbench.validation import Plan, validate

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    status: str = "ok"
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    traceback: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)  # raw µs per timing method, for later statistics


def run_job(cfg: DictConfig) -> dict:
    """Hydra task function body. Returns a plain dict (picklable, for parallel launchers)."""
    result = JobResult(tags={"case": case_key(cfg)})
    started = time.perf_counter()
    try:
        plan = validate(cfg)
        result.tags["device"] = str(plan.device)
        _benchmark(cfg, plan, result)
    except Unsupported as e:
        result.status, result.reason = "unsupported", str(e)
    except ConfigError as e:
        result.status, result.reason = "error", str(e)
    except Exception as e:  # noqa: BLE001 - recorded with its traceback; the sweep goes on
        if _out_of_memory(e):
            result.status, result.reason = "oom", _first_line(f"{type(e).__name__}: {e}")
        else:
            result.status, result.reason = "error", _first_line(f"{type(e).__name__}: {e}")
            result.traceback = traceback.format_exc()
    finally:
        _release_memory()
    result.metrics["job_s"] = time.perf_counter() - started
    level = logging.INFO if result.status in ("ok", "unsupported") else logging.ERROR
    log.log(level, "%s%s", result.status, f": {result.reason}" if result.reason else "")
    return asdict(result)


def _benchmark(cfg: DictConfig, plan: Plan, result: JobResult) -> None:
    workload, device, mode = plan.workload, plan.device, cfg.mode
    training = mode is not Mode.fwd
    peaks = measured_peaks(device, workload.dtype)  # before the workload takes memory; cached per process
    if device.type == "cuda" and cfg.timing.flush_l2:
        l2_flush_buffer(device)  # allocated once per process, before any memory figure is read
    torch._dynamo.reset()  # nothing compiled by an earlier job in this process may leak into this one
    graphs_at_start = _dynamo_graphs()  # Dynamo's counters survive reset(): count this job's graphs only
    torch.manual_seed(cfg.seed)
    with torch.set_grad_enabled(training), forced_backend(cfg.backend.name), _cold_compiler():
        log.info("Building %s <%s.%s> on %s, mode %s", cfg.model.name, type(workload).__module__,
                 type(workload).__name__, device, mode.value)
        fn, args = workload.build()
        if training:
            args = tuple(a.requires_grad_() for a in args)
        wrt = [*args, *workload.parameters()]
        if cfg.compile:
            fn = torch.compile(fn, mode=cfg.compile_mode.value)
        forward = _step(fn, args, cfg)

        try:
            with recorded_warnings() as warned:
                out, first_s = first_call(forward, device)
                grads = grad_out = None
                if training:  # the first backward compiles the backward graph: part of the first call
                    grad_out = torch.randn_like(out)
                    grads, backward_s = first_call(lambda: torch.autograd.grad(out, wrt, grad_out,
                                                                               retain_graph=True), device)
                    first_s += backward_s
        except Exception as e:  # outside the `with`: `warned` is complete only once it has exited
            if is_no_kernel_error(e):
                raise Unsupported(_no_kernel_reason(cfg, device, warned, e)) from e
            raise
        result.metrics["first_call_s"] = first_s
        if cfg.compile:
            result.metrics["compile_s"] = first_s
            result.metrics["dynamo_graphs"] = _dynamo_graphs() - graphs_at_start

        errors, wrong = check(workload, args, out, grads, grad_out)
        result.metrics |= errors
        if wrong:
            result.status, result.reason = "wrong", wrong
        del grads
        call = {
            Mode.fwd: forward,
            Mode.bwd: lambda: torch.autograd.grad(out, wrt, grad_out, retain_graph=True),
            Mode.fwd_bwd: lambda: torch.autograd.grad(forward(), wrt, grad_out),
        }[mode]
        if mode is not Mode.bwd:
            del out  # bwd keeps it: its graph is what each timed backward runs through

        # The backend shows in the forward's ops; a backward alone may run only generic kernels (math's does).
        result.tags |= _kernels(call, device, family_from=forward if mode is Mode.bwd else call)
        if device.type == "cuda":
            result.metrics |= _peak_memory(call, device)

        per_call = warm_up(call, device, cfg.timing.warmup_s)
        graphs_before = _dynamo_graphs()
        unstable = []
        for method in plan.methods:
            m = measure(call, device, method, cfg.timing, per_call)
            result.metrics |= m.stats.as_metrics(method)
            result.samples[method] = m.samples_us
            if method == "wall":
                result.metrics["wall_calls_per_sample"] = m.calls_per_sample
            if m.stats.cv > cfg.timing.cv_threshold:
                unstable.append(f"{method} cv={m.stats.cv:.3f}")
        if unstable:
            result.tags["timing.unstable"] = ", ".join(unstable)
        if cfg.compile and _dynamo_graphs() != graphs_before:
            result.status = "invalid"
            result.reason = "torch.compile recompiled while being timed: the samples include the compiler"

    headline = plan.methods[0]
    result.tags["timing.headline"] = headline
    result.tags["timing.methods"] = ",".join(plan.methods)
    result.metrics |= _throughput(workload, mode, result.metrics[f"{headline}_median_us"] / 1e6, peaks, device)


def _throughput(workload, mode: Mode, seconds: float, peaks: dict[str, float],
                device: torch.device) -> dict[str, float]:
    flops, nbytes = workload.flops(mode), workload.min_bytes(mode)
    metrics = {
        "median_us": seconds * 1e6,
        "gflop": flops / 1e9,
        "tflops": tflops_per_s(flops, seconds),
        "gbps": nbytes / seconds / 1e9,
        "arith_intensity": flops / nbytes,
    }
    ceilings = peaks | datasheet(device_name(device), workload.dtype)
    metrics |= ceilings
    for ceiling, achieved in (("device_peak_tflops", "tflops"), ("device_peak_gbps", "gbps"),
                              ("datasheet_tflops", "tflops"), ("datasheet_gbps", "gbps")):
        if ceiling in ceilings:
            metrics[f"pct_{ceiling}"] = 100 * metrics[achieved] / ceilings[ceiling]
    return metrics


def _cold_compiler():
    """Compile from scratch in every job. Inductor's on-disk caches key a graph without the SDPA backend
    flags, so a sweep would otherwise reuse the math job's compiled graph for flash and efficient (seen on
    an H100 with torch 2.11: all three ran the same decomposed kernels). Cold compiles also keep compile_s
    independent of what ran before."""
    import torch._functorch.config
    import torch._inductor.config

    stack = contextlib.ExitStack()
    stack.enter_context(torch._inductor.config.patch(force_disable_caches=True))
    stack.enter_context(torch._functorch.config.patch(enable_autograd_cache=False))
    return stack


def _step(fn, args, cfg: DictConfig):
    if cfg.compile and cfg.compile_mode.value == "reduce-overhead":
        # CUDA graphs reuse their output buffers: mark each call as a new step so that a replay never
        # overwrites an output that is still in use (the reference check reads the first one).
        def call():
            torch.compiler.cudagraph_mark_step_begin()
            return fn(*args)

        return call
    return lambda: fn(*args)


def _no_kernel_reason(cfg: DictConfig, device: torch.device, warned: list[str], exc: Exception) -> str:
    # PyTorch explains *why* in warnings ("Flash attention kernel not used because: ...") just before it
    # raises; the exception itself only says that nothing was left. Keep both.
    return f"backend={cfg.backend.name.value} on {device.type}: " + " | ".join(warned + [no_kernel_message(exc)])


def _kernels(call, device: torch.device, family_from) -> dict[str, str]:
    """Which SDPA implementation really ran (aten op names; kernel names on CUDA), and the timed call's kernels."""
    profile = profile_call(call, device)
    origin = profile if family_from is call else profile_call(family_from, device)
    tags = {"sdpa.kernel": kernel_family(origin.ops, origin.kernels)}
    if profile.kernels:
        tags["kernels"] = "; ".join(sorted(profile.kernels))
    return tags


def _peak_memory(call, device: torch.device) -> dict[str, float]:
    """Memory one call allocates on top of what is already live (inputs, weights, caches)."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = call()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return {"peak_mem_mib": peak / 2**20, "reserved_mib": torch.cuda.memory_reserved(device) / 2**20}


def _dynamo_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def _out_of_memory(e: Exception) -> bool:
    # CUDA raises torch.OutOfMemoryError; the CPU allocator raises a plain RuntimeError.
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def _release_memory() -> None:
    # Give the next job the device memory this one held: compiled graphs and CUDA-graph pools (released by
    # Dynamo's reset), cycles (tracebacks). Only on CUDA: a full collection costs ~0.3 s with torch loaded,
    # and host memory needs no help. Never raises: after a sticky CUDA error, cleanup fails too.
    if not torch.cuda.is_available():
        return
    try:
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001
        log.warning("could not release device memory after the job: %s", _first_line(str(e)))
