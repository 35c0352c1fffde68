"""One benchmark job: validate, build, (compile,) check against a reference, time, and report.

The job never raises: whatever happens becomes a status with a reason, so that one job cannot take a
sweep down. Statuses: ok, unsupported (this machine or build cannot run it), oom, wrong (non-finite
output), invalid (recompiled while being timed), error (anything unexpected; traceback kept).
"""

from __future__ import annotations

import contextlib
import gc
import re
import logging
import traceback
import warnings
from dataclasses import asdict, dataclass, field

import torch
from omegaconf import DictConfig

from attnbench.backends import forced_backend, is_no_kernel_error, kernel_family, recorded_warnings

from attnbench.devices import synchronize
from attnbench.errors import ConfigError, Unsupported
from attnbench.metrics import all_finite, compare, tflops_per_s
from attnbench.timing import first_call, measure
from attnbench.timing.timer import warm_up
from attnbench.validation import Plan, validate

log = logging.getLogger(__name__)

# The sentence PyTorch ends on, also when Dynamo quotes it inside its own message: "...got RuntimeError('No
# viable backend for scaled_dot_product_attention was found. This is likely due to ...')".
NO_KERNEL_SENTENCE = re.compile(r"No (?:available kernel|viable backend)[^'\"\n]*")


@dataclass
class JobResult:
    status: str = "ok"
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    traceback: str | None = None


def run_job(cfg: DictConfig) -> dict:
    """Hydra task function body. Returns a plain dict (picklable, for parallel launchers)."""
    result = JobResult()
    try:
        plan = validate(cfg)
        result.tags["device"] = str(plan.device)
        _benchmark(cfg, plan, result)
    except Unsupported as e:
        result.status, result.reason = "unsupported", str(e)
    except torch.OutOfMemoryError as e:
        result.status, result.reason = "oom", str(e).splitlines()[0]
    except ConfigError as e:
        result.status, result.reason = "error", str(e)
    except Exception as e:  # noqa: BLE001 - recorded with its traceback; the sweep goes on
        result.status, result.reason = "error", f"{type(e).__name__}: {e}".splitlines()[0]
        result.traceback = traceback.format_exc()
    finally:
        _release_memory()
    level = logging.INFO if result.status in ("ok", "unsupported") else logging.ERROR
    log.log(level, "%s%s", result.status, f": {result.reason}" if result.reason else "")
    return asdict(result)


def _benchmark(cfg: DictConfig, plan: Plan, result: JobResult) -> None:
    workload, device = plan.workload, plan.device
    torch._dynamo.reset()  # nothing compiled by an earlier job in this process may leak into this one
    graphs_at_start = _dynamo_graphs()  # Dynamo's counters survive reset(): count this job's graphs only
    torch.manual_seed(cfg.seed)
    with torch.no_grad(), forced_backend(cfg.backend.name), _cold_compiler():
        log.info("Building %s <%s.%s> on %s", cfg.model.name, type(workload).__module__,
                 type(workload).__name__, device)
        fn, args = workload.build()
        if cfg.compile:
            fn = torch.compile(fn, mode=cfg.compile_mode.value)
        call = _step(fn, args, cfg)

        with recorded_warnings() as warned:
            try:
                out, first_s = first_call(call, device)
            except Exception as e:
                if is_no_kernel_error(e):
                    raise Unsupported(_no_kernel_reason(cfg, device, warned, e)) from e
                raise
        result.metrics["first_call_s"] = first_s
        if cfg.compile:
            result.metrics["compile_s"] = first_s
            result.metrics["dynamo_graphs"] = _dynamo_graphs() - graphs_at_start

        _check(workload, args, out, result)
        del out
        result.tags |= _kernels(call, device)
        if device.type == "cuda":
            result.metrics |= _peak_memory(call, device)

        per_call = warm_up(call, device, cfg.timing.warmup_s)
        graphs_before = _dynamo_graphs()
        for method in plan.methods:
            m = measure(call, device, method, cfg.timing, per_call)
            result.metrics |= m.stats.as_metrics(method)
            if method == "wall":
                result.metrics["wall_calls_per_sample"] = m.calls_per_sample
        if cfg.compile and _dynamo_graphs() != graphs_before:
            result.status = "invalid"
            result.reason = "torch.compile recompiled while being timed: the samples include the compiler"

    headline = plan.methods[0]
    median_s = result.metrics[f"{headline}_median_us"] / 1e6
    flops = workload.flops()
    result.tags["timing.headline"] = headline
    result.tags["timing.methods"] = ",".join(plan.methods)
    result.metrics |= {
        "median_us": median_s * 1e6,
        "gflop": flops / 1e9,
        "tflops": tflops_per_s(flops, median_s),
    }


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
    found = NO_KERNEL_SENTENCE.search(str(exc))
    error = found.group(0) if found else str(exc).splitlines()[0]
    return f"backend={cfg.backend.name.value} on {device.type}: " + " | ".join(warned + [error.strip()])


def _check(workload, args, out: torch.Tensor, result: JobResult) -> None:
    if not all_finite(out):
        result.status, result.reason = "wrong", "the output contains NaN or Inf"
    pair = workload.reference(args, out)
    if pair is not None:
        ref, sliced = pair
        result.metrics |= compare(sliced, ref)


def _kernels(call, device: torch.device) -> dict[str, str]:
    """Which SDPA implementation really ran, from one profiled call (aten op names; kernel names on CUDA)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with warnings.catch_warnings(), profile(activities=activities) as prof:
        warnings.simplefilter("ignore")  # the profiler's own notices are not the user's business
        call()
        synchronize(device)
    events = prof.events()
    ops = [e.name for e in events if e.device_type == DeviceType.CPU]
    kernels = sorted({e.name for e in events if e.device_type == DeviceType.CUDA})
    tags = {"sdpa.kernel": kernel_family(ops, kernels)}
    if kernels:
        tags["kernels"] = "; ".join(kernels)
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


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()



