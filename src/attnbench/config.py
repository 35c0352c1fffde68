"""Structured-config schemas: the single source of truth for what a job can be asked to do.

Every closed choice is an Enum, so a bad value fails while Hydra composes the config, with OmegaConf's
message naming the field, the allowed values and the value given. Rules that involve several fields or
the machine are checked by :func:`attnbench.validation.validate` before any tensor is allocated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import II, MISSING


class DeviceName(Enum):
    auto = "auto"  # cuda, then mps, then cpu
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Dtype(Enum):
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


# Functional API: torch.compile's mode names contain hyphens, which a class body cannot spell.
CompileMode = Enum(
    "CompileMode",
    [(m, m) for m in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")],
)


class TimingMethod(Enum):
    auto = "auto"  # events (device time) plus wall on CUDA; wall elsewhere
    events = "events"  # one torch.cuda.Event pair per call: device time
    wall = "wall"  # host clock around blocks of calls, one synchronize per block
    cuda_graph = "cuda_graph"  # replays of one call captured in a CUDA graph: device time without launch gaps
    profiler = "profiler"  # torch.profiler (CUPTI): the sum of the call's kernel times


class Inputs(Enum):
    normal = "normal"  # q, k, v (a module's x) drawn from N(0, 1)
    large_logits = "large_logits"  # q and k (x) scaled by 3: logits 9× larger, a peaked softmax that overflows
    # a kernel without its running maximum


class Mode(Enum):
    fwd = "fwd"  # forward only, no autograd
    bwd = "bwd"  # backward alone (forward done once, outside the timed calls)
    fwd_bwd = "fwd_bwd"  # forward and backward together, as in a training step


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


@dataclass
class TimingConfig:
    method: TimingMethod = TimingMethod.auto
    warmup_s: float = 0.1  # steady-state warm-up after the first call
    min_time_s: float = 0.5  # keep repeating until the timed calls add up to this...
    min_reps: int = 10  # ...and at least this many samples were taken...
    max_reps: int = 2000  # ...but never more than this many
    flush_l2: bool = True  # events: overwrite a buffer of at least the L2 size before each call
    wall_block_s: float = 0.005  # wall: target length of one block of back-to-back calls
    profiler_reps: int = 20  # profiler: profiled calls (each its own profiling session)
    cv_threshold: float = 0.1  # tag a method `unstable` when its samples' std / mean exceeds this
    max_job_s: Optional[float] = 600.0  # a job still running after this many seconds is stopped (`timeout`)
    # torch's intra-op threads for a job on the CPU; None: torch's default (one per core). One, as
    # torch.utils.benchmark.Timer does: more threads than free cores time the scheduler (docs/timing.md).
    cpu_threads: Optional[int] = 1
    # The share of the timed calls' time a job's threads may wait for a core before the job is `contended` (never a
    # winner or a speedup); 1: never.
    max_cpu_wait: float = 0.1


@dataclass
class TrackingConfig:
    # None: $MLFLOW_TRACKING_URI if set, else sqlite:///<repo>/mlruns/mlflow.db
    uri: Optional[str] = None
    experiment: str = "attnbench"


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


def plain(node: Any) -> Any:
    """A config node as its dataclass instance (or a plain container); plain values pass through."""
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_object(node) if isinstance(node, DictConfig) else node


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore. Called once, by the entry point and the tests.

    Every backend, model and mask gets `schema/<group>/<name>`, which its YAML option in conf/<group>/ extends.
    A plugin's backend brings no YAML: its schema is stored as the option `backend/<name>` itself.
    """
    from hydra.core.config_store import ConfigStore

    from attnbench.backends import plugin_backends, registered_backends
    from attnbench.masks import registered_masks
    from attnbench.models import registered_models

    cs = ConfigStore.instance()
    cs.store(name="attnbench_schema", node=Config)
    backends = registered_backends()  # loads the plugins, so that plugin_backends() knows them
    plugins = plugin_backends()
    for group, registry in (("backend", backends), ("model", registered_models()), ("mask", registered_masks())):
        for name, cls in registry.items():
            try:
                node = cls.Config(name=name)
            except Exception as e:  # noqa: BLE001 - a plugin's broken schema must not stop attnbench
                if name not in plugins:
                    raise
                logging.getLogger(__name__).warning("backend plugin %s has an unusable Config: %s", name, e)
                continue
            cs.store(group=f"schema/{group}", name=name, node=node)
            if name in plugins and group == "backend":  # no YAML of its own: the schema is the option
                cs.store(group="backend", name=name, node=node)
