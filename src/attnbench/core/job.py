"""One benchmark job, top to bottom: plan, build, first call, check, verify dispatch, memory, time, throughput.

The job never raises: whatever happens becomes a status with a reason, so that one job cannot take a sweep
down. Statuses (most severe first): error, oom, unsupported, skipped, wrong, fallback, invalid, ok — docs/results.md.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch

from attnbench.core.backends import LayoutCall
from attnbench.core.correctness import check
from attnbench.core.devices import synchronize
from attnbench.core.errors import ConfigError, Skipped, Unsupported
from attnbench.core.isolation import cpu_threads, dynamo_graphs, fresh_compiler, release_memory
from attnbench.core.metrics import ceilings, derived, work
from attnbench.core.peak import measured_peaks
from attnbench.core.pytorch_warnings import recorded_warnings
from attnbench.core.record import Record, Status
from attnbench.core.spec import JobSpec, Mode
from attnbench.core.timing.profiling import profile_call
from attnbench.core.timing.timer import first_call, l2_flush_buffer, measure, warm_up
from attnbench.core.timing.watch import thread_tags, watch
from attnbench.core.validation import Plan, validate

log = logging.getLogger(__name__)

# Calls profiled to name the kernels, and on CUDA to measure their device time (`kernel_us`): a mean over a few calls.
PROFILED_CALLS = {"cuda": 5}
# Event time this many times the kernel time means the host's launches, not the GPU, set the pace: tag launch_bound.
LAUNCH_BOUND_RATIO = 1.5


@dataclass
class JobResult:
    status: str = "ok"
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    traceback: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)  # raw µs per timing method, for later statistics

    def flag(self, status: str, reason: str) -> None:
        """A finding about a job that still ran: the first one sets the status, later ones add to the reason."""
        if self.status == "ok":
            self.status, self.reason = status, reason
        else:
            self.reason += f"; also {status}: {reason}"


class PhaseClock:
    """The seconds each phase of a job took (`phase_<name>_s`): where a job's time goes, e.g. the compile in
    `first call` or the timing budget in `time`. A phase lasts until the next one starts, the last until the end."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self._notify = notify
        self._spent: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def enter(self, phase: str) -> None:
        self._stop()
        self._current = (phase, time.perf_counter())
        self._notify(phase)

    def seconds(self) -> dict[str, float]:
        self._stop()
        return {f"phase_{name.replace(' ', '_')}_s": spent for name, spent in self._spent.items()}

    def _stop(self) -> None:
        if self._current is not None:
            name, since = self._current
            self._spent[name] = self._spent.get(name, 0.0) + time.perf_counter() - since
            self._current = None


def as_is(out: torch.Tensor) -> torch.Tensor:
    return out


@dataclass
class Step:
    """The call a job times, its inputs, and what the first call produced."""

    forward: Callable[[], torch.Tensor]
    args: tuple[torch.Tensor, ...]  # the model's inputs, as the check reads them
    wrt: list[torch.Tensor]  # what a backward differentiates: the inputs, then the model's weights
    # The output of `forward` (in a library's own layout for a LayoutCall) viewed as the model's output.
    leave: Callable[[torch.Tensor], torch.Tensor] = as_is
    out: torch.Tensor | None = None
    grads: tuple[torch.Tensor, ...] | None = None
    grad_out: torch.Tensor | None = None

    def entered(self, grad: torch.Tensor) -> torch.Tensor:
        """A gradient of the model's output, in the layout of `forward`'s output: `leave`'s own backward, exact for
        its reshapes and transposes whether they view the output or copy it."""
        if self.leave is as_is:
            return grad
        with torch.enable_grad():
            out = torch.empty_like(self.out).requires_grad_()  # the output's strides: leave sees the same layout
            (native,) = torch.autograd.grad(self.leave(out), out, grad)
        return native

    def call(self, mode: Mode) -> Callable[[], object]:
        if mode is Mode.fwd:
            return self.forward
        if mode is Mode.bwd:  # through the graph the first call built: backward alone
            return lambda: torch.autograd.grad(self.out, self.wrt, self.grad_out, retain_graph=True)
        return lambda: torch.autograd.grad(self.forward(), self.wrt, self.grad_out)


def run_job(spec: JobSpec, on_phase: Callable[[str], None] = lambda phase: None) -> Record:
    """One job, measured: its Record (status, reason, metrics, tags, samples; the harness adds who and where).
    `on_phase(name)` is called as each step starts (the progress line's phase); never inside a timed loop."""
    result = JobResult(tags={"case": spec.case} if spec.case else {})
    started = time.perf_counter()
    phases = PhaseClock(on_phase)
    on_phase = phases.enter
    try:
        on_phase("plan")
        plan = validate(spec)
        result.tags |= {"device": str(plan.device), "problem": plan.problem.describe(),
                        "approximate": str(plan.backend.approximate).lower()}  # ranked apart from exact ones
        _benchmark(spec, plan, result, on_phase)
    except Skipped as e:
        result.status, result.reason = "skipped", str(e)
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
        release_memory()
    result.metrics |= phases.seconds()
    result.metrics["job_s"] = time.perf_counter() - started
    level = logging.INFO if result.status in ("ok", "unsupported", "skipped") else logging.ERROR
    log.log(level, "%s%s", result.status, f": {result.reason}" if result.reason else "")
    return Record(Status(result.status), result.reason, result.metrics, result.tags, result.samples, result.traceback)


def _benchmark(spec: JobSpec, plan: Plan, result: JobResult, on_phase: Callable[[str], None]) -> None:
    on_phase("build")
    peaks = _prepare_device(spec, plan)
    torch.manual_seed(spec.seed)
    with cpu_threads(spec, plan.device), fresh_compiler(), torch.set_grad_enabled(spec.mode is not Mode.fwd), \
            plan.backend.context():
        result.tags |= thread_tags()
        step = _build(spec, plan)
        result.tags |= plan.backend.tags()
        on_phase("first call")
        _first_call(spec, plan, step, result)
        on_phase("check")
        _check(spec, plan, step, result)
        call = step.call(spec.mode)
        if spec.mode is not Mode.bwd:
            step.out = None  # only backward alone times through it; the rest must not hold its memory
        try:
            with torch.compiler.set_stance("fail_on_recompile"):  # a recompile now would be timed: refuse it
                on_phase("verify dispatch")
                _verify_dispatch(spec, plan, step, call, result)
                on_phase("time")
                _time(spec, plan, call, result)
        except RuntimeError as e:
            if "fail_on_recompile" not in str(e):  # torch.compiler's own words for a recompile refused by the stance
                raise
            result.flag("invalid", "torch.compile recompiled after the first call: " + _first_line(str(e)))
            return
    result.metrics |= work(plan.model, spec.mode) | ceilings(plan.device, plan.dtype, peaks)
    result.metrics |= derived(Record(Status.ok, metrics=result.metrics, tags=result.tags))  # TFLOP/s, GB/s, ...
    result.tags["flops"] = ("its own formula's (approximate attention)" if plan.backend.approximate
                            else "useful softmax attention FLOPs")


def _prepare_device(spec: JobSpec, plan: Plan) -> dict[str, float]:
    """The device's ceilings and the L2 flush buffer: once per process, before the job takes memory."""
    peaks = measured_peaks(plan.device, plan.dtype)
    if plan.device.type == "cuda" and spec.timing.flush_l2:
        l2_flush_buffer(plan.device)
    torch.compiler.reset()  # nothing compiled by an earlier job in this process may leak into this one
    return peaks


def _build(spec: JobSpec, plan: Plan) -> Step:
    model, backend = plan.model, plan.backend
    log.info("Building %s <%s> through backend %s <%s> on %s: %s, %s, mode %s", model.name,
             type(model).__qualname__, backend.name, type(backend).__qualname__, plan.device,
             plan.problem.describe(), spec.dtype.value, spec.mode.value)
    attend = backend.build(plan.problem, plan.device, plan.dtype)  # masks, features, kernels: built untimed
    fn, args = model.build(attend)
    if spec.mode is not Mode.fwd:
        args = tuple(a.requires_grad_() for a in args)
    call_args, leave = args, as_is
    if isinstance(fn, LayoutCall):  # the bare call: into the library's layout once, here, and its call alone timed
        fn, call_args, leave = fn.call, fn.enter(*args), fn.leave
    if spec.compile:
        fn = torch.compile(fn, mode=spec.compile_mode.value)
    if spec.compile and spec.compile_mode.value == "reduce-overhead":
        # CUDA graphs reuse their output buffers: mark each call as a new step so that a replay never
        # overwrites an output that is still in use (the reference check reads the first one).
        def forward():
            torch.compiler.cudagraph_mark_step_begin()
            return fn(*call_args)
    else:
        def forward():
            return fn(*call_args)
    return Step(forward, args, wrt=[*args, *model.parameters()], leave=leave)


def _first_call(spec: JobSpec, plan: Plan, step: Step, result: JobResult) -> None:
    """The first call (and backward) on its own: compilation, if any, stays out of the steady-state numbers."""
    graphs_before = dynamo_graphs()
    try:
        with recorded_warnings() as warned:
            step.out, seconds = first_call(step.forward, plan.device)
            if spec.mode is not Mode.fwd:  # the first backward compiles the backward graph
                step.grad_out = torch.randn_like(step.out)
                step.grads, backward_s = first_call(
                    lambda: torch.autograd.grad(step.out, step.wrt, step.grad_out, retain_graph=True), plan.device)
                seconds += backward_s
    except Exception as e:  # outside the `with`: `warned` is complete only once it has exited
        reason = plan.backend.explain_failure(e, warned)
        if reason:
            raise Unsupported(reason) from e
        raise
    result.metrics["first_call_s"] = seconds
    if spec.compile or plan.backend.compiles_on_first_call:
        result.metrics["compile_s"] = seconds
    if graphs := dynamo_graphs() - graphs_before:
        result.metrics["dynamo_graphs"] = graphs  # evidence that something was compiled (flex always is)


def _check(spec: JobSpec, plan: Plan, step: Step, result: JobResult) -> None:
    """The output (and gradients) against a float64 reference: a verdict, not just a number."""
    args = step.args

    def backward(grad_out):  # through the graph the first call kept: a sampled check's own gradients
        return torch.autograd.grad(step.out, args, step.entered(grad_out), retain_graph=True)

    grad_out = None if step.grad_out is None else step.leave(step.grad_out)
    verdict = check(plan.model, plan.backend, spec.mode, args, step.leave(step.out), step.grads, grad_out, backward)
    result.metrics |= verdict.metrics
    result.tags |= verdict.tags
    if verdict.wrong:
        result.flag("wrong", verdict.wrong)
    step.grads = None


def _verify_dispatch(spec: JobSpec, plan: Plan, step: Step, call, result: JobResult) -> None:
    """Which kernel really ran (profiler names), whether it is the one the backend promised, and memory."""
    profile = profile_call(call, plan.device, calls=PROFILED_CALLS.get(plan.device.type, 1))
    # The backend shows in the forward's ops; a backward alone may run only generic kernels (math's does).
    origin = profile_call(step.forward, plan.device) if spec.mode is Mode.bwd else profile
    found = plan.backend.dispatch(origin)
    result.tags |= {"kernel": found.ran} | found.tags | plan.model.tags(origin.ops)
    if profile.kernels:
        result.tags["kernels"] = "; ".join(sorted(profile.kernels))
        result.metrics["kernel_us"] = profile.kernel_us
    if found.fallback:
        result.flag("fallback", f"backend={plan.backend.name} promises {' or '.join(found.accepts)}, "
                                f"but {found.ran} ran")
    if plan.device.type == "cuda":
        result.metrics |= _peak_memory(call, plan.device)


def _time(spec: JobSpec, plan: Plan, call, result: JobResult) -> None:
    per_call = warm_up(call, plan.device, spec.timing.warmup_s)
    unstable = []
    with watch(plan.device, spec.timing.max_cpu_wait) as seen:  # the host's and the GPU's state over the timed calls
        for method in plan.methods:
            m = measure(call, plan.device, method, spec.timing, per_call)
            result.metrics |= m.stats.as_metrics(method)
            result.samples[method] = m.samples_us
            if method == "wall":
                result.metrics["wall_calls_per_sample"] = m.calls_per_sample
            if m.stats.cv > spec.timing.cv_threshold:
                unstable.append(f"{method} cv={m.stats.cv:.3f}")
    result.metrics |= seen.metrics
    result.tags |= seen.tags
    if unstable:
        result.tags["timing.unstable"] = ", ".join(unstable)
    headline = plan.methods[0]
    result.tags |= {"timing.headline": headline, "timing.methods": ",".join(plan.methods)}
    result.metrics["median_us"] = result.metrics[f"{headline}_median_us"]
    if launch_bound := _launch_bound(result.metrics):
        result.tags["launch_bound"] = launch_bound


def _launch_bound(metrics: dict[str, float]) -> str | None:
    """When the device-time events are far above the kernels' own time, the GPU waited on the host between
    launches: the events median measures Python and launch overhead, not the kernels. Say so, with both numbers
    and the per-call wall time, so that "is it faster?" is answered for the GPU and for a Python loop apart."""
    events, kernels = metrics.get("events_median_us"), metrics.get("kernel_us")
    if not events or not kernels or events <= LAUNCH_BOUND_RATIO * kernels:
        return None
    wall = metrics.get("wall_median_us")
    per_call = f", {wall:.1f} µs per call in a Python loop (wall)" if wall else ""
    return f"events {events:.1f} µs against {kernels:.1f} µs of kernels{per_call}: launch-bound"


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


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def _out_of_memory(e: Exception) -> bool:
    # CUDA raises torch.OutOfMemoryError; the CPU allocator raises a plain RuntimeError.
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))
