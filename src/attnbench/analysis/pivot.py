"""What a sweep answers: per problem, which backend wins, by how much, and whether the difference is real.

Works on plain job records (params, metrics, tags and raw samples, as MLflow or a sweep folder holds them), so the
same summary comes from a finished sweep, a store read later, or a sweep folder synced afterwards.
Rows are problems (everything that varied except the backend and compilation), columns are backend × compile.
This is the one place a winner is decided; attnbench.analysis.render draws it (console, markdown, CSV, plots).

A winner or a speedup is claimed only between comparable jobs: the same problem, exact (softmax) attention, `ok`,
not `contended` (timed while its threads waited for a core), and separated by the bootstrap
(`attnbench.core.timing.noise`): within noise it reads `~`. Approximate backends (linear attention) compute another
function: they are ranked apart, each shown with its error against softmax.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from attnbench.core.record import Record, is_approximate
from attnbench.core.units import format_time

if TYPE_CHECKING:  # noise imports numpy: only when a verdict is needed, not for the sweep process's start-up
    from attnbench.core.timing.noise import Comparison

# Params that say how a job was run or recorded, or which implementation ran it: not part of the problem.
# How a job was run, not what it computed: a resumed sweep's parent holds jobs of resume=false and resume=true
# that solved the same problems (attnbench.harness.case leaves the same keys out of a case).
NOT_PROBLEM = ("backend.", "timing.", "tracking.", "hydra.", "resume")
IMPLEMENTATION = ("compile", "compile_mode")


@dataclass
class JobRecord:
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    samples: dict[str, list[float]] = field(default_factory=dict)  # raw µs per timing method
    # What its time is compared by: the headline method, or "wall" in a launch-bound problem (summarise).
    basis: str = "headline"

    @classmethod
    def of(cls, record: Record) -> "JobRecord":
        """A job's record as the tables read it: its status and reason among its tags."""
        tags = record.tags | {"status": record.status.value, "reason": record.reason}
        return cls(record.name, record.params, record.metrics, tags, record.samples)

    @property
    def status(self) -> str:
        return self.tags.get("status", "unknown")

    @property
    def ok(self) -> bool:
        return self.status == "ok" and "median_us" in self.metrics

    @property
    def median_us(self) -> float | None:
        return self.metrics.get("wall_median_us" if self.basis == "wall" else "median_us")

    @property
    def headline_samples(self) -> list[float]:
        return self.samples.get("wall" if self.basis == "wall" else self.tags.get("timing.headline", ""), [])

    @property
    def launch_bound(self) -> bool:
        return "launch_bound" in self.tags

    @property
    def approximate(self) -> bool:
        """Not softmax attention."""
        return is_approximate(self.tags)

    @property
    def contended(self) -> bool:
        return "contended" in self.tags

    @property
    def comparable(self) -> bool:
        """A time that may be ranked against the exact jobs of its problem."""
        return self.ok and not self.approximate and not self.contended

    @property
    def softmax_error(self) -> str:
        """`error 0.37 vs softmax` (its norm-wise relative error), for an approximate job."""
        error = self.metrics.get("rel_l2_err")
        return f"error {error:.2g} vs softmax" if error is not None else "error vs softmax unknown"

    @property
    def implementation(self) -> str:
        """Column label: the backend, and how it was compiled."""
        name = self.params.get("backend.name", "?")
        if self.params.get("compile") == "true":
            mode = self.params.get("compile_mode", "default")
            name += "+compile" if mode == "default" else f"+{mode}"
        return name


def varied(records: list[JobRecord]) -> list[str]:
    """Param keys whose value differs between the records that have them, in first-seen order. A backend's own
    field (flex's `backend.block_size`) is absent from other backends' jobs: that alone is no variation."""
    keys = list(dict.fromkeys(k for r in records for k in r.params))
    return [k for k in keys if len({r.params[k] for r in records if k in r.params}) > 1]


def problem_keys(records: list[JobRecord]) -> list[str]:
    """What varied in the problem. A key that always equals an earlier one says nothing more (`shape.q_len`
    follows `shape.seq_len` unless set), so it is left out."""
    keys: list[str] = []
    for key in varied(records):
        if key.startswith(NOT_PROBLEM) or key in IMPLEMENTATION:
            continue
        if not any(all(r.params.get(key) == r.params.get(kept) for r in records) for kept in keys):
            keys.append(key)
    return keys


def problem_of(record: JobRecord, keys: list[str]) -> str:
    return ", ".join(f"{short(k)}={record.params.get(k)}" for k in keys) or "all jobs"


def short(key: str) -> str:
    """`shape.seq_len` → `seq_len`, `mask.name` → `mask`."""
    return key.removesuffix(".name").split(".")[-1]


def _versus(baseline: JobRecord, job: JobRecord) -> Comparison | None:
    if baseline.headline_samples and job.headline_samples:
        # Imported here: the bootstrap needs numpy, which a process that only formats numbers should not pay for.
        from attnbench.core.timing.noise import compare

        return compare(baseline.headline_samples, job.headline_samples)
    return None


def ratio(value: float) -> str:
    """`1.71×`, `12.3×`, `0.0998×`; never a bare `1×` for two times the bootstrap told apart (`1.004×`)."""
    if 0.995 <= value < 1.005:
        return f"{value:.3f}×"
    return f"{value:.2f}×" if 1 <= value < 10 else f"{value:.3g}×"


def speedup(baseline: JobRecord, job: JobRecord) -> str:
    """`2.41×` when the job is faster (or slower) than the baseline beyond noise, `~` within it; nothing for a job
    that is not comparable with it (approximate, contended)."""
    if not (job.comparable and baseline.comparable):
        return ""
    if job is baseline:
        return "1×"
    found = _versus(baseline, job)
    if found is None or found.verdict == "same":
        return "~"
    return ratio(baseline.median_us / job.median_us)


@dataclass
class Problem:
    label: str
    jobs: list[JobRecord]
    baseline: JobRecord | None
    winner: str  # e.g. "cudnn (1.71× over flash)", "no winner: cudnn ~ default within noise"
    approximate: str = ""  # the approximate jobs, fastest first, each with its error vs softmax
    best: JobRecord | None = None  # the winner's job, where there is one

    @property
    def has_winner(self) -> bool:
        return not self.winner.startswith("no winner")


def summarise(records: list[JobRecord], baseline_backend: str | None = None) -> list[Problem]:
    keys = problem_keys(records)
    grouped: dict[str, list[JobRecord]] = defaultdict(list)
    for record in records:
        grouped[problem_of(record, keys)].append(record)
    return [_problem(label, jobs, baseline_backend) for label, jobs in grouped.items()]


def compare_by_wall(jobs: list[JobRecord]) -> bool:
    """Jobs compared with each other, one of them launch-bound: all are compared by wall time per call. The GPU
    idles between launches, so events time the host's gaps, not the work; what a user pays per call is the wall time
    in a Python loop (the kernels' time is shown beside it: launch_note)."""
    if any(j.launch_bound for j in jobs) and all("wall_median_us" in j.metrics for j in jobs):
        for job in jobs:
            job.basis = "wall"
        return True
    return False


def _problem(label: str, jobs: list[JobRecord], baseline_backend: str | None) -> Problem:
    ok = [j for j in jobs if j.ok]
    compare_by_wall(ok)
    exact = sorted((j for j in ok if j.comparable), key=lambda j: j.median_us)
    approximate = sorted((j for j in ok if j.approximate and not j.contended), key=lambda j: j.median_us)
    if baseline_backend is None:
        baseline = exact[-1] if exact else None  # the slowest that ran
    else:
        baseline = next((j for j in exact if j.params.get("backend.name") == baseline_backend), None)
    winner = _winner(exact, ok)
    best = exact[0] if exact and not winner.startswith("no winner") else None
    return Problem(label, jobs, baseline, winner, approximate_line(approximate), best)


def _winner(exact: list[JobRecord], ok: list[JobRecord]) -> str:
    """The fastest comparable job, only where the bootstrap separates it from the next; else why there is none."""
    if not exact:
        if any(not j.approximate for j in ok):
            return "no winner: every exact job that ran was contended (timed while waiting for a core)"
        if ok:
            return "no winner: no exact backend ran ok (approximate ones are ranked apart)"
        return "no winner: no job ran ok"
    if len(exact) == 1:  # the answer among exact attention, said as what it is
        uncontended = " uncontended" if any(not j.approximate and j.contended for j in ok) else ""
        return f"{exact[0].implementation} (the only exact job that ran ok{uncontended})"
    best, second = exact[0], exact[1]
    found = _versus(second, best)
    if found is None:
        return f"no winner: {best.implementation} and {second.implementation} have no samples to compare"
    if found.verdict == "same":
        return f"no winner: {best.implementation} ~ {second.implementation} within noise"
    winner = f"{best.implementation} ({ratio(second.median_us / best.median_us)} over {second.implementation})"
    # The bootstrap weighed their spreads; a reader still needs to know that one of the two times was unsteady.
    unsteady = [f"{j.implementation} {j.tags['timing.unstable']}" for j in (best, second) if "timing.unstable" in j.tags]
    return winner + (f"; timing unstable: {', '.join(unsteady)}" if unsteady else "")


def approximate_line(jobs: list[JobRecord]) -> str:
    """`approximate (not softmax, ranked apart): linear 1.2 ms, error 0.5 vs softmax; ...`, fastest first."""
    if not jobs:
        return ""
    return "approximate (not softmax, ranked apart): " + "; ".join(
        f"{j.implementation} {format_time(j.median_us)}, {j.softmax_error}" for j in jobs)


def launch_note(problems: list[Problem]) -> str:
    """For launch-bound problems: how they were compared, and the kernels' time the GPU spent per call."""
    lines = []
    for p in problems:
        walled = [j for j in p.jobs if j.ok and j.basis == "wall"]
        if walled:
            kernels = ", ".join(f"{j.implementation} {format_time(j.metrics['kernel_us'])}" for j in walled
                                if "kernel_us" in j.metrics)
            lines.append(f"- {p.label}: launch-bound, so compared by wall time per call in a Python loop (CUDA "
                         f"events would time the host's gaps between launches); GPU time in kernels: {kernels}")
    return "\n".join(lines)


def winners_line(problems: list[Problem]) -> str:
    """The answer in one line, first in the parent run's description (the runs table shows its start); the
    approximate jobs after it, apart."""
    if len(problems) == 1:
        p = problems[0]
        line = f"**Winner: {p.winner}**" if p.has_winner else f"**{p.winner[0].upper()}{p.winner[1:]}**"
        return line + (f" · {p.approximate}" if p.approximate else "")
    return "**Winners:** " + "; ".join(f"{p.label}: {p.winner}" for p in problems) + "".join(
        f" · {p.label}: {p.approximate}" for p in problems if p.approximate)
