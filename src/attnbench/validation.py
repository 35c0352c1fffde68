"""Everything decided before a job allocates anything: the problem, the backend, the model, and whether they can
run together here.

Config-only rules raise ConfigError (the job is an `error`: fix the command); what the machine, the backend or the
model cannot do raises Unsupported (the job is `unsupported`, with the reason; the sweep goes on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from attnbench.backends import Backend, get_backend
from attnbench.devices import TORCH_DTYPES, check_dtype, resolve_device
from attnbench.errors import ConfigError, Skipped, Unsupported
from attnbench.masks import get_mask
from attnbench.models import Model, get_model
from attnbench.problem import Problem
from attnbench.timing import methods_for


@dataclass
class Plan:
    problem: Problem
    backend: Backend
    model: Model
    device: torch.device
    dtype: torch.dtype
    methods: list[str]  # timing methods, headline first


def _positive(cfg: DictConfig, group: str, key: str) -> None:
    value = cfg[group][key]
    if not value > 0:
        raise ConfigError(f"{group}.{key}", value, "a positive int")


def _check_timing(cfg: DictConfig) -> None:
    for key in ("min_reps", "max_reps"):
        _positive(cfg, "timing", key)
    for key in ("min_time_s", "warmup_s", "wall_block_s"):
        if cfg.timing[key] < 0:
            raise ConfigError(f"timing.{key}", cfg.timing[key], "a number of seconds >= 0")
    if cfg.timing.cpu_threads is not None and not cfg.timing.cpu_threads > 0:
        raise ConfigError("timing.cpu_threads", cfg.timing.cpu_threads, "a positive int, or null for torch's default")
    if not 0 <= cfg.timing.max_cpu_wait <= 1:
        raise ConfigError("timing.max_cpu_wait", cfg.timing.max_cpu_wait, "a share of time in [0, 1]")
    if cfg.timing.max_reps < cfg.timing.min_reps:
        raise ConfigError("timing.max_reps", cfg.timing.max_reps, f">= timing.min_reps ({cfg.timing.min_reps})")


def validate(cfg: DictConfig) -> Plan:
    _check_timing(cfg)
    if cfg.compile_mode.value != "default" and not cfg.compile:
        raise Skipped(f"compile=false: compile_mode={cfg.compile_mode.value} applies only when compiling "
                      "(the eager job is the one with compile_mode=default)")
    mask = get_mask(cfg.mask.name)(cfg.mask, cfg.shape.q_len, cfg.shape.seq_len, cfg.seed)
    problem = Problem.from_config(cfg.shape, mask, cfg.inputs.value)
    backend = get_backend(cfg.backend.name)(cfg.backend)
    backend.validate()
    device, dtype = resolve_device(cfg.device.name), TORCH_DTYPES[cfg.dtype]
    model = get_model(cfg.model.name)(cfg.model, problem, backend, dtype, device)
    model.validate()
    check_dtype(device, dtype)
    methods = methods_for(cfg.timing.method, device)
    reason = model.supports() or backend.supports(problem, device, dtype, cfg.mode)
    if reason:
        raise Unsupported(reason)
    return Plan(problem, backend, model, device, dtype, methods)

