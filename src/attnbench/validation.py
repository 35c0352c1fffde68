"""Rules that OmegaConf's types cannot express, checked before a job allocates anything.

Config-only rules raise ConfigError (the job is an `error`: fix the command); rules that depend on the
machine raise Unsupported (the job is `unsupported`: the sweep goes on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from attnbench.devices import TORCH_DTYPES, check_dtype, resolve_device
from attnbench.errors import ConfigError
from attnbench.models import Workload, get_workload
from attnbench.timing import methods_for


@dataclass
class Plan:
    workload: Workload
    device: torch.device
    methods: list[str]  # timing methods, headline first


def _positive(cfg: DictConfig, group: str, key: str, kind: type = int) -> None:
    value = cfg[group][key]
    if not value > 0:
        raise ConfigError(f"{group}.{key}", value, f"a positive {kind.__name__}")


def validate(cfg: DictConfig) -> Plan:
    for key in ("batch", "heads", "seq_len", "head_dim"):
        _positive(cfg, "shape", key)
    for key in ("min_reps", "max_reps"):
        _positive(cfg, "timing", key)
    for key in ("min_time_s", "warmup_s", "wall_block_s"):
        if cfg.timing[key] < 0:
            raise ConfigError(f"timing.{key}", cfg.timing[key], "a number of seconds >= 0")
    if cfg.timing.max_reps < cfg.timing.min_reps:
        raise ConfigError("timing.max_reps", cfg.timing.max_reps, f">= timing.min_reps ({cfg.timing.min_reps})")

    workload_cls = get_workload(cfg.model.name)
    device = resolve_device(cfg.device.name)
    dtype = TORCH_DTYPES[cfg.dtype]
    workload = workload_cls(cfg.model, cfg.shape, dtype, device, cfg.causal)
    workload.validate()
    check_dtype(device, dtype)
    return Plan(workload, device, methods_for(cfg.timing.method, device))
