"""Structured-config schemas: the single source of truth for what a job can be asked to do.

Every closed choice is an Enum, so a bad value fails while Hydra composes the config, with OmegaConf's
message naming the field, the allowed values and the value given. Rules that involve several fields or
the machine are checked by :func:`attnbench.validation.validate` before any tensor is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING


class DeviceName(Enum):
    auto = "auto"  # cuda, then mps, then cpu
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class BackendName(Enum):
    default = "default"  # PyTorch's own dispatch
    math = "math"
    flash = "flash"
    efficient = "efficient"
    cudnn = "cudnn"


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


class Mode(Enum):
    fwd = "fwd"  # forward only, no autograd
    bwd = "bwd"  # backward alone (forward done once, outside the timed calls)
    fwd_bwd = "fwd_bwd"  # forward and backward together, as in a training step


@dataclass
class DeviceConfig:
    name: DeviceName = DeviceName.auto


@dataclass
class BackendConfig:
    name: BackendName = BackendName.default


@dataclass
class ShapeConfig:
    batch: int = MISSING
    heads: int = MISSING
    seq_len: int = MISSING
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


@dataclass
class TrackingConfig:
    # None: $MLFLOW_TRACKING_URI if set, else sqlite:///<repo>/mlruns/mlflow.db
    uri: Optional[str] = None
    experiment: str = "attnbench"


@dataclass
class Config:
    device: DeviceConfig = MISSING
    backend: BackendConfig = MISSING
    # Each model option carries its own schema (registered by attnbench.models), so the field is open here.
    model: Any = MISSING
    shape: ShapeConfig = MISSING
    timing: TimingConfig = field(default_factory=TimingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    mode: Mode = Mode.fwd
    compile: bool = False
    compile_mode: CompileMode = CompileMode["default"]  # type: ignore[valid-type]
    dtype: Dtype = Dtype.float16
    causal: bool = False
    seed: int = 0
    resume: bool = False  # skip each job whose case already finished `ok` in the experiment


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore. Called once, by the entry point and the tests."""
    from hydra.core.config_store import ConfigStore

    from attnbench.models import registered_models

    cs = ConfigStore.instance()
    cs.store(name="attnbench_schema", node=Config)
    for name, workload in registered_models().items():
        # conf/model/<name>.yaml starts from this schema, so its keys are typed and closed.
        cs.store(group="schema/model", name=name, node=workload.Params)
