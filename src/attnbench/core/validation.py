"""Everything decided before a job allocates anything: the problem, the backend, the model, and whether they can
run together here.

Config-only rules raise ConfigError (the job is an `error`: fix the command); what the machine, the backend or the
model cannot do raises Unsupported (the job is `unsupported`, with the reason; the sweep goes on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnbench.core.backends import Backend, get_backend
from attnbench.core.devices import TORCH_DTYPES, check_dtype, resolve_device
from attnbench.core.errors import ConfigError, Skipped, Unsupported
from attnbench.core.masks import get_mask
from attnbench.core.models import Model, get_model
from attnbench.core.problem import Problem
from attnbench.core.spec import JobSpec, Timing
from attnbench.core.timing.timer import methods_for


@dataclass
class Plan:
    problem: Problem
    backend: Backend
    model: Model
    device: torch.device
    dtype: torch.dtype
    methods: list[str]  # timing methods, headline first


def _check_timing(timing: Timing) -> None:
    for key in ("min_reps", "max_reps"):
        if not getattr(timing, key) > 0:
            raise ConfigError(f"timing.{key}", getattr(timing, key), "a positive int")
    for key in ("min_time_s", "warmup_s", "wall_block_s"):
        if getattr(timing, key) < 0:
            raise ConfigError(f"timing.{key}", getattr(timing, key), "a number of seconds >= 0")
    if timing.cpu_threads is not None and not timing.cpu_threads > 0:
        raise ConfigError("timing.cpu_threads", timing.cpu_threads, "a positive int, or null for torch's default")
    if not 0 <= timing.max_cpu_wait <= 1:
        raise ConfigError("timing.max_cpu_wait", timing.max_cpu_wait, "a share of time in [0, 1]")
    if timing.max_reps < timing.min_reps:
        raise ConfigError("timing.max_reps", timing.max_reps, f">= timing.min_reps ({timing.min_reps})")


def _cache_support(backend, problem: Problem) -> str | None:
    if problem.page_size and not backend.paged_kv:
        return (f"backend={backend.name} reads a contiguous KV cache; shape.page_size={problem.page_size} asks for a "
                "paged one (backend=flashinfer reads pages; shape.page_size=0 is contiguous)")
    if problem.page_size and problem.seq_len % problem.page_size:
        return (f"shape.page_size={problem.page_size} must divide shape.seq_len={problem.seq_len}: the cache is "
                "whole pages")
    return None


def validate(spec: JobSpec) -> Plan:
    _check_timing(spec.timing)
    if spec.compile_mode.value != "default" and not spec.compile:
        raise Skipped(f"compile=false: compile_mode={spec.compile_mode.value} applies only when compiling "
                      "(the eager job is the one with compile_mode=default)")
    mask = get_mask(spec.mask.name)(spec.mask, spec.shape.q_len, spec.shape.seq_len, spec.seed)
    problem = Problem.from_config(spec.shape, mask, spec.inputs.value)
    backend = get_backend(spec.backend.name)(spec.backend)
    backend.validate()
    device, dtype = resolve_device(spec.device), TORCH_DTYPES[spec.dtype]
    model = get_model(spec.model.name)(spec.model, problem, backend, dtype, device)
    model.validate()
    check_dtype(device, dtype)
    methods = methods_for(spec.timing.method, device)
    reason = model.supports() or _cache_support(backend, problem) or backend.supports(problem, device, dtype, spec.mode)
    if reason:
        raise Unsupported(reason)
    return Plan(problem, backend, model, device, dtype, methods)

