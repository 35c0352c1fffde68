"""Where a job runs: chosen before its worker process starts, recorded on its run as `placement.*` tags.

The launcher (conf/hydra/launcher/) sets the policy, by its name:
- `gpus`: each launcher process (a joblib worker) holds one GPU for as long as it lives: an exclusive lock on
  that GPU (a file in the host's temp folder, so that two sweeps on one host never share a GPU either) and
  CUDA_VISIBLE_DEVICES=<the GPU's UUID> for the job worker it starts. The UUID, not an index: nvidia-smi counts
  GPUs in PCI order, CUDA by default fastest first.
- `cpu_pool`: the jobs see no GPU, and each job's torch threads are the cores divided among the workers.
- anything else (`basic`, the default: one job after another; `slurm`: the GPUs Slurm gave the task): jobs run
  where the launcher put them.
Whatever the launcher, the run records the launcher, the worker, the host, the GPU's index and UUID, the
threads, and how many of the sweep's jobs ran on that host at the same time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from attnbench.core.files import write_atomically

LOCK_DIR = Path(tempfile.gettempdir()) / "attnbench-gpus"
JOBS_DIR = ".placement/jobs"  # in the sweep folder: one file per job, its host and its start and end times
CEILINGS_DIR = ".placement/ceilings"  # in the sweep folder: each GPU's measured ceilings (attnbench.core.peak)
WAIT_FOR_GPU_S = 0.5  # a worker with no free GPU (more workers than GPUs) looks again this often


@lru_cache(maxsize=None)
def host_gpus() -> tuple[tuple[str, str], ...]:
    """(index, UUID) of every GPU of the host, as nvidia-smi numbers them; none without nvidia-smi. Read without
    CUDA: a launcher process must not create a CUDA context (a GPU's memory, and a hazard for its children)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(tuple(part.strip() for part in line.split(",")) for line in out.splitlines() if "," in line)


def visible_gpus() -> tuple[tuple[str, str], ...]:
    """The host's GPUs that CUDA_VISIBLE_DEVICES (indices or UUIDs) lets this process use."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return host_gpus()
    wanted = [entry.strip() for entry in visible.split(",") if entry.strip()]
    return tuple(gpu for entry in wanted for gpu in host_gpus() if entry in gpu)


def gpu_workers() -> int:
    """The `gpus` launcher's worker count: one per GPU; 1 (jobs one after another) with one GPU or none."""
    return max(1, len(visible_gpus()))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if not OmegaConf.has_resolver("attnbench.gpu_workers"):
    OmegaConf.register_new_resolver("attnbench.gpu_workers", gpu_workers)


@dataclass
class Placement:
    env: dict[str, str] = field(default_factory=dict)  # the job worker's environment, set when it starts
    tags: dict[str, str] = field(default_factory=dict)
    threads: int | None = None  # torch threads per job; None: torch's default


_held_gpu: tuple[str, object] | None = None  # (UUID, open lock file) held by this process under `gpus`


def place(hydra: DictConfig) -> Placement:
    """Where this process's next job runs; under `gpus`, waits until this process holds a GPU."""
    launcher = str(hydra.runtime.choices.get("hydra/launcher") or "basic")
    workers = int(hydra.launcher.get("n_jobs") or 1)  # local launchers; Slurm's tasks are on their own nodes
    tags = {"placement.launcher": launcher, "placement.workers": str(workers),
            "placement.host": socket.gethostname(), "placement.worker_pid": str(os.getpid())}
    if "SLURM_JOB_ID" in os.environ:  # the array task, to find its Slurm log and accounting
        tags["placement.slurm_job"] = "_".join(filter(None, (os.environ.get("SLURM_ARRAY_JOB_ID"),
                                                             os.environ.get("SLURM_ARRAY_TASK_ID")))) \
            or os.environ["SLURM_JOB_ID"]
    threads = max(1, usable_cores() // workers)
    # Inductor compiles with a pool of its own, one process per core by default: each worker takes its share,
    # so that one job's compilation does not starve the host thread timing another job's launches.
    compile_threads = {"TORCHINDUCTOR_COMPILE_THREADS": str(threads)}
    if launcher == "gpus" and visible_gpus():
        index, uuid = _hold_a_gpu()
        return Placement({"CUDA_VISIBLE_DEVICES": uuid} | compile_threads, tags | {"placement.slot": index}, threads)
    if launcher == "cpu_pool":
        return Placement({"CUDA_VISIBLE_DEVICES": ""} | compile_threads, tags, threads)
    return Placement({}, tags)


def _hold_a_gpu() -> tuple[str, str]:
    global _held_gpu
    gpus = {uuid: index for index, uuid in visible_gpus()}
    if _held_gpu is not None:
        return gpus[_held_gpu[0]], _held_gpu[0]
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    while True:
        for uuid, index in gpus.items():
            lock = FileLock(LOCK_DIR / f"{uuid}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            _held_gpu = (uuid, lock)  # held until this process ends (the OS lets go of it even after kill -9)
            return index, uuid
        time.sleep(WAIT_FOR_GPU_S)  # every GPU is held by another worker or sweep: wait for one to be let go


def device_tags(device) -> dict[str, str]:
    """In the job worker: the GPU the job ran on, as CUDA saw it (whatever chose it), and the threads."""
    import torch

    tags = {"placement.threads": str(torch.get_num_threads())}
    if device.type != "cuda":
        return tags
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"  # as nvidia-smi and CUDA_VISIBLE_DEVICES write it
    index = next((i for i, u in host_gpus() if u == uuid), "unknown")
    return tags | {"placement.gpu_uuid": uuid, "placement.gpu_index": index,
                   "placement.cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "(all)")}


# --- jobs at the same time ------------------------------------------------------------------------
def job_started(sweep_dir: Path, job: str) -> None:
    _write_span(sweep_dir, job, {"host": socket.gethostname(), "start": time.time(), "end": None})


def job_ended(sweep_dir: Path, job: str) -> dict[str, str]:
    """Mark the job ended; the most jobs of this sweep that ran on this host at one time while it ran (itself
    included): 1 when it had the host to itself."""
    path = Path(sweep_dir) / JOBS_DIR / f"{job}.json"
    try:
        mine = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    mine["end"] = time.time()
    _write_span(sweep_dir, job, mine)
    events = []  # (time, +1 a job starts / -1 one ends), within this job's span
    for other in path.parent.glob("*.json"):
        try:
            span = json.loads(other.read_text())
            span["host"], span["start"], span["end"]  # noqa: B018 - a span, not some other file
        except (OSError, ValueError, KeyError, TypeError):  # being replaced this instant, or not a span
            continue
        end = mine["end"] if span["end"] is None else min(span["end"], mine["end"])
        start = max(span["start"], mine["start"])
        if span["host"] == mine["host"] and start < end:
            events += [(start, 1), (end, -1)]
    running = most = 0
    for _, change in sorted(events):  # at one instant an end sorts before a start: back to back is not at once
        running += change
        most = max(most, running)
    return {"placement.concurrent_jobs": str(max(1, most))}


def _write_span(sweep_dir: Path, job: str, span: dict) -> None:
    write_atomically(Path(sweep_dir) / JOBS_DIR / f"{job}.json", json.dumps(span))
