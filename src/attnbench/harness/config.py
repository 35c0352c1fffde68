"""Structured-config schemas: the single source of truth for what a job can be asked to do.

Every closed choice is an Enum, so a bad value fails while Hydra composes the config, with OmegaConf's
message naming the field, the allowed values and the value given. Rules that involve several fields or
the machine are checked by :func:`attnbench.core.validation.validate` before any tensor is allocated. `job_spec` turns a
composed config into the typed JobSpec the job reads (attnbench.core.spec).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from omegaconf import II, MISSING, DictConfig, OmegaConf

from attnbench.core.spec import (  # noqa: F401 - the closed choices, re-exported for the schema's readers
    CompileMode,
    DeviceName,
    Dtype,
    Inputs,
    JobSpec,
    Mode,
    Shape,
    Timing,
    TimingMethod,
)


@dataclass
class DeviceConfig:
    name: DeviceName = DeviceName.auto


@dataclass
class ShapeConfig:
    batch: int = MISSING
    heads: int = MISSING  # query heads
    kv_heads: int = II(".heads")  # key/value heads: fewer is grouped-query attention (1: multi-query)
    seq_len: int = MISSING  # keys and values (the KV cache when q_len < seq_len)
    q_len: int = II(".seq_len")  # queries, the last q_len positions: 1 is one decode step
    head_dim: int = MISSING
    page_size: int = 0  # a paged KV cache of this many positions per page (serving engines' layout); 0: contiguous


TimingConfig = Timing  # the timing group's schema is what the job reads


class SizeName(Enum):
    full = "full"  # the sizes the experiment states
    cpu = "cpu"  # the CPU size it states in `size.cpu`: the same problem, minutes on 2 cores


@dataclass
class SizeConfig:
    name: SizeName = SizeName.full  # the `size` group's option: size=cpu
    # An experiment's CPU size: override -> value(s), as hydra.sweeper.params (attnbench.harness.sizes)
    cpu: Dict[str, str] = field(default_factory=dict)


@dataclass
class TrackingConfig:
    # None: $MLFLOW_TRACKING_URI if set, else sqlite:///<repo>/mlruns/mlflow.db
    uri: Optional[str] = None
    experiment: str = "attnbench"
    redact: bool = False  # true: runs' tags and params name no host (a salted hash) and no home folder (~)


@dataclass
class Config:
    device: DeviceConfig = MISSING
    # Each backend, model and mask option carries its own schema (its Config dataclass, registered below), so
    # these fields are open here and closed in each option.
    backend: Any = MISSING
    model: Any = MISSING
    shape: ShapeConfig = MISSING
    mask: Any = MISSING
    timing: TimingConfig = field(default_factory=TimingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    mode: Mode = Mode.fwd
    compile: bool = False
    compile_mode: CompileMode = CompileMode["default"]  # type: ignore[valid-type]
    dtype: Dtype = Dtype.float16
    inputs: Inputs = Inputs.normal
    seed: int = 0
    resume: bool = False  # skip each job whose case already finished `ok` in the experiment
    size: SizeConfig = field(default_factory=SizeConfig)


def job_spec(cfg: DictConfig) -> JobSpec:
    """The job a composed config asks for, typed: each chosen option as its own Config dataclass, as its schema
    typed it (a node replaced by a plain mapping is typed from its group's registry)."""
    from attnbench.harness.case import case_key

    def option(node, group: str):
        value = OmegaConf.to_object(node)
        return value if not isinstance(value, dict) else _registered(group, value["name"]).Config(**value)

    timing = OmegaConf.to_object(cfg.timing)
    return JobSpec(
        device=cfg.device.name, backend=option(cfg.backend, "backend"), model=option(cfg.model, "model"),
        mask=option(cfg.mask, "mask"), shape=Shape(**OmegaConf.to_container(cfg.shape, resolve=True)),
        timing=timing if isinstance(timing, Timing) else Timing(**timing), mode=cfg.mode, compile=cfg.compile,
        compile_mode=cfg.compile_mode, dtype=cfg.dtype, inputs=cfg.inputs, seed=cfg.seed, case=case_key(cfg))


def _registered(group: str, name: str) -> type:
    """The implementation registered as option `name` of `group`. Its registry imports torch, which the command's
    own process otherwise never needs (the job worker measures): only for an untyped node."""
    from attnbench.core.backends import get_backend
    from attnbench.core.masks import get_mask
    from attnbench.core.models import get_model

    return {"backend": get_backend, "mask": get_mask, "model": get_model}[group](name)


def register_configs() -> None:
    """Put the root schema in Hydra's ConfigStore. Called once, by the entry point and the tests.

    Each backend, model and mask option's YAML in conf/<group>/ extends `schema/<group>/<name>`, which Hydra reads
    from attnbench.core.options without importing torch (src/hydra_plugins/attnbench_options); a plugin's backend,
    which brings no YAML, is an option there too, loaded when chosen.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="attnbench_schema", node=Config)
