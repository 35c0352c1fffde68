"""What one job is asked to do, typed: built once from Hydra's config at the edge
(attnbench.harness.config.job_spec), and all that the measuring code reads. The closed choices are Enums, shared
with the config schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional


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
class Timing:
    """How a job is timed (the `timing` group of the config; its schema too)."""

    method: TimingMethod = TimingMethod.auto
    warmup_s: float = 0.1  # steady-state warm-up after the first call
    min_time_s: float = 0.5  # keep repeating until the timed calls add up to this...
    min_reps: int = 10  # ...and at least this many samples were taken...
    max_reps: int = 2000  # ...but never more than this many
    flush_l2: bool = True  # events: overwrite a buffer of at least the L2 size before each call
    wall_block_s: float = 0.005  # wall: target length of one block of back-to-back calls
    profiler_reps: int = 20  # profiler: calls profiled (each its own profiling session)
    cv_threshold: float = 0.1  # tag a method `unstable` when its samples' std / mean exceeds this
    max_job_s: Optional[float] = 600.0  # a job still running after this many seconds is stopped (`timeout`)
    # torch's intra-op threads for a job on the CPU; None: torch's default (one per core). One, as
    # torch.utils.benchmark.Timer does: more threads than free cores time the scheduler (docs/timing.md).
    cpu_threads: Optional[int] = 1
    # The share of the timed calls' time a job's threads may wait for a core before the job is `contended` (never a
    # winner or a speedup); 1: never.
    max_cpu_wait: float = 0.1


@dataclass(frozen=True)
class Shape:
    batch: int
    heads: int  # query heads
    kv_heads: int  # key/value heads: fewer than `heads` is GQA (1 is MQA)
    seq_len: int  # keys and values (the KV cache when q_len < seq_len)
    q_len: int  # queries, the last q_len positions: 1 is one decode step
    head_dim: int
    page_size: int = 0  # KV cache in pages of this many positions (a serving engine's paged cache); 0: contiguous


@dataclass(frozen=True)
class JobSpec:
    """One job. `backend`, `model` and `mask` are the chosen options' own Config dataclasses."""

    device: DeviceName
    backend: Any  # attnbench.core.backends.BackendConfig (a subclass)
    model: Any  # attnbench.core.models.ModelConfig (a subclass)
    mask: Any  # attnbench.core.masks.MaskConfig (a subclass)
    shape: Shape
    timing: Timing
    mode: Mode = Mode.fwd
    compile: bool = False
    compile_mode: Any = CompileMode["default"]
    dtype: Dtype = Dtype.float16
    inputs: Inputs = Inputs.normal
    seed: int = 0
    case: str = ""  # what was measured, as a key (attnbench.harness.case): tagged on the job's record
