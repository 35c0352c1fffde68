"""What the sweep asks Slurm, and what Slurm's answers mean for a job (hydra/launcher=slurm, slurm_cpu).

- Before an array is submitted: can the partition ever run the request (`scontrol show partition`, `sinfo`)? A
  request no node of the partition can satisfy would wait in the queue for ever; it is refused in one line instead.
- While it runs: each task's state, from `squeue` while Slurm holds the task, then from `sacct` (accounting), which
  is the only place a task that was cancelled, ran out of time or of memory says so once it is gone.
- When a task ends other than by completing, the status its job gets (STATES; the table in docs/scale-out.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from attnbench.core.record import Status

QUERY_TIMEOUT_S = 60  # a controller that does not answer a query in a minute is not going to

# A task that ended without completing: the status its job gets, and why, in words (a reason says the rest).
STATES: dict[str, tuple[Status, str]] = {
    "CANCELLED": (Status.interrupted, "cancelled by Slurm (scancel, or an administrator)"),
    "PREEMPTED": (Status.interrupted, "preempted by Slurm (a job of higher priority took its node)"),
    "TIMEOUT": (Status.timeout, "Slurm's time limit ran out"),
    "DEADLINE": (Status.timeout, "its Slurm deadline passed"),
    "OUT_OF_MEMORY": (Status.oom, "Slurm stopped it: out of memory"),
    "NODE_FAIL": (Status.crashed, "its Slurm node failed"),
    "BOOT_FAIL": (Status.crashed, "its Slurm node failed to boot"),
    "FAILED": (Status.crashed, "its Slurm task failed"),
}
ENDED = {"COMPLETED", *STATES}  # sacct's states of a task that is over


@dataclass(frozen=True)
class Request:
    """What each task of the array asks for: hydra.launcher's values, as sbatch gets them."""

    partition: str | None
    cpus_per_task: int
    gpus: int  # per task (gpus_per_task, gpus_per_node, or gres=gpu:N)
    mem_gb: float | None
    timeout_min: int
    nodes: int

    @classmethod
    def of(cls, params: dict) -> Request:
        gres = re.search(r"gpu(?::[\w-]+)?:(\d+)", str(params.get("gres") or ""))
        gpus = params.get("gpus_per_task") or params.get("gpus_per_node") or (int(gres.group(1)) if gres else 0)
        return cls(params.get("partition"), int(params.get("cpus_per_task") or 1), int(gpus),
                   params.get("mem_gb"), int(params.get("timeout_min") or 0), int(params.get("nodes") or 1))

    def __str__(self) -> str:
        asked = {"cpus_per_task": self.cpus_per_task, "gpus": self.gpus, "mem_gb": self.mem_gb,
                 "timeout_min": self.timeout_min, "nodes": self.nodes}
        return ", ".join(f"{key}={value}" for key, value in asked.items() if value not in (None, 0))


@dataclass(frozen=True)
class Partition:
    name: str
    state: str  # UP, DOWN, DRAIN, INACTIVE
    max_time_min: int | None  # None: no limit
    nodes: int
    cpus: int  # of its largest node (or MaxCPUsPerNode, if smaller)
    mem_mb: int  # of its largest node
    gpus: int  # of its node with the most

    def __str__(self) -> str:
        limit = "no time limit" if self.max_time_min is None else f"MaxTime {self.max_time_min} min"
        gpus = f"{self.gpus} GPUs" if self.gpus else "no GPUs"
        return (f"{self.state}, {self.nodes} node{'s' * (self.nodes != 1)}, up to "
                f"{self.cpus} CPUs, {self.mem_mb} MB and {gpus} a node, {limit}")


def request_problem(request: Request, launcher: str) -> str | None:
    """Why the request can never run on its partition, in one line naming the partition, its limits and the
    request; None when it can, or when Slurm cannot be asked (then sbatch says what is wrong)."""
    partitions = _partitions()
    if partitions is None:
        return None
    name = request.partition or next((p for p, fields in partitions.items() if fields.get("Default") == "YES"), None)
    if name not in partitions:
        given = f"hydra.launcher.partition={request.partition}" if request.partition else "no partition given"
        which = "no such partition" if request.partition else "no default one"
        return (f"hydra/launcher={launcher}: {given}, and Slurm has {which} (its partitions: "
                f"{', '.join(sorted(partitions)) or 'none'})")
    partition = _partition(name, partitions[name])
    problems = [f"too many {what}" for what, wanted, limit in (
        ("CPUs", request.cpus_per_task, partition.cpus), ("GPUs", request.gpus, partition.gpus),
        ("MB of memory", (request.mem_gb or 0) * 1024, partition.mem_mb), ("nodes", request.nodes, partition.nodes),
        ("minutes", request.timeout_min, partition.max_time_min)) if limit is not None and wanted > limit]
    if partition.state != "UP":
        problems.insert(0, f"the partition is {partition.state}")
    if not problems:
        return None
    return (f"hydra/launcher={launcher}: Slurm partition {name} can never run a task asking for {request}: "
            f"{', '.join(problems)} (partition {name}: {partition}); change hydra.launcher.* or the partition")


def _partitions() -> dict[str, dict[str, str]] | None:
    """Every partition's fields, from `scontrol show partition`; None when Slurm cannot be asked."""
    out = _ask(["scontrol", "show", "partition", "--oneliner"])
    if out is None:
        return None
    found = {}
    for line in out.splitlines():
        fields = dict(pair.split("=", 1) for pair in line.split() if "=" in pair)
        if "PartitionName" in fields:
            found[fields["PartitionName"]] = fields
    return found


def _partition(name: str, fields: dict[str, str]) -> Partition:
    nodes = [line.split("|") for line in (_ask(["sinfo", "-h", "-N", "-p", name, "-o", "%N|%c|%m|%G"]) or "")
             .splitlines() if line.count("|") == 3]
    cpus = max((_number(node[1]) for node in nodes), default=0)
    per_node = fields.get("MaxCPUsPerNode", "UNLIMITED")
    cpus = min(cpus, int(per_node)) if per_node.isdigit() else cpus
    gpus = max((sum(int(n) for n in re.findall(r"gpu(?::[\w-]+)?:(\d+)", node[3])) for node in nodes), default=0)
    return Partition(name, fields.get("State", "UP"), _minutes(fields.get("MaxTime", "UNLIMITED")),
                     len({node[0] for node in nodes}), cpus, max((_number(node[2]) for node in nodes), default=0),
                     gpus)


def _number(text: str) -> int:
    digits = re.match(r"\d+", text)
    return int(digits.group()) if digits else 0


def _minutes(limit: str) -> int | None:
    """Slurm's time ([days-]hours:minutes:seconds, or minutes) in whole minutes; None for UNLIMITED."""
    if not re.match(r"\d", limit):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


# --- a submitted array ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskState:
    state: str  # RUNNING, PENDING, COMPLETED, CANCELLED, TIMEOUT, ... (sacct's first word: "CANCELLED by 0")
    node: str = ""
    elapsed: str = ""  # as sacct writes it: 00:01:04
    time_limit: str = ""
    exit_code: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def queued(array: str) -> dict[int, TaskState] | None:
    """The array's tasks that Slurm still holds (pending, running, completing), by task index; None when squeue
    does not answer."""
    out = _ask(["squeue", "-h", "-r", "-j", array, "-o", "%K|%T|%N"], gone="Invalid job id")
    if out is None:
        return None
    tasks = {}
    for line in out.splitlines():
        index, state, node = (line.split("|") + ["", ""])[:3]
        # N/A: a sweep of one job is one job, not an array (submitit submits it so): its task 0
        tasks[int(index) if index.strip().isdigit() else 0] = TaskState(state.strip(), node.strip())
    return tasks


def accounted(array: str) -> dict[int, TaskState]:
    """The array's tasks as Slurm's accounting has them, by task index (pending ones may be ranges: `12_[3-5]`)."""
    out = _ask(["sacct", "-X", "-n", "-P", "-j", array, "-o", "JobID,State,NodeList,Elapsed,Timelimit,ExitCode"]) or ""
    tasks = {}
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) != 6:
            continue
        state = TaskState(fields[1].split()[0] if fields[1] else "", *fields[2:])
        for index in _indices(fields[0].split("_", 1)[1]) if "_" in fields[0] else [0]:  # one job: task 0
            tasks[index] = state
    return tasks


def _indices(spec: str) -> list[int]:
    """`3` or `[3-5,7%2]` → the task indices."""
    found = []
    for part in spec.strip("[]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            found += range(int(low), int(high or low) + 1) if (high or low).isdigit() else [int(low)]
    return found


def cancel(array: str) -> None:
    _ask(["scancel", array])


def _ask(command: list[str], gone: str = "") -> str | None:
    """A Slurm client's output; None when it is not installed or fails (no controller, no accounting). An error
    that says `gone` is an empty answer (squeue of a job the controller has forgotten)."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return "" if gone and gone in done.stderr else None
    return done.stdout
