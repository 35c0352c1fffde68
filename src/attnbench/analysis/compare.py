"""Two sweeps compared case by case (two GPUs, two torch versions, before and after a change), and the command
that reproduces a sweep or a job.

Jobs are paired by their `case` tag (attnbench.harness.case: what was measured, not how it was timed or where it was
recorded), so the same sweep run twice pairs every job. Each pair gets the ratio of its medians and a verdict from
both runs' raw samples (attnbench.core.timing.noise): `faster` or `slower` only where the medians' 95% bootstrap
intervals do not overlap, else `same`. A job that was ok and is not any more is `broken`; a pair where either side
was contended (timed while waiting for a core) gets no verdict. Two sweeps that ran on another card, torch, CUDA,
cuDNN or thread count are not compared unless forced (`mismatches`); other SM clocks are said.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from attnbench.analysis.pivot import JobRecord, compare_by_wall, problem_keys, problem_of
from attnbench.store.tracking.describe import NOTE
from attnbench.store.tracking.names import COMMAND
from attnbench.store.tracking.sweeps import SWEEP_TAG, SweepProblem, get_run, jobs_of, one_per_case, records

# What makes two times incomparable: another card, another torch, CUDA or cuDNN, other torch threads. Compare
# refuses these unless forced (--force), and says which.
INCOMPARABLE_TAGS = {"env.device_name": "card", "env.torch": "torch", "env.cuda": "CUDA", "env.cudnn": "cuDNN",
                     "threads.intra_op": "torch threads"}
OLDER_THREADS_TAG = "placement.threads"  # where records from before threads.intra_op kept the thread count
OTHER_TAGS = ("env.device_type", "env.compute_capability", "env.driver", "env.python")
CODE_TAG = "env.git_commit"
CLOCK_METRIC = "gpu_sm_clock_mhz"
CLOCK_DIFFERENCE = 0.02  # median SM clocks further apart than this share are said
OVERRIDES_FILE = ".hydra/overrides.yaml"


@dataclass
class Pair:
    label: str
    a: JobRecord
    b: JobRecord

    @property
    def ratio(self) -> float | None:
        """B's median over A's: above 1, B is slower."""
        if self.a.ok and self.b.ok:
            return self.b.median_us / self.a.median_us
        return None

    @cached_property
    def verdict(self) -> str:
        if self.a.ok and self.b.ok and (self.a.contended or self.b.contended):
            return "contended (no verdict)"  # a time the scheduler set says nothing about the kernel
        if self.a.ok and self.b.ok:
            if not (self.a.headline_samples and self.b.headline_samples):
                return "unjudged (no samples)"
            from attnbench.core.timing.noise import compare  # numpy: only when there is something to judge

            return compare(self.a.headline_samples, self.b.headline_samples).verdict
        if self.a.ok:
            return "broken"
        if self.b.ok:
            return "fixed"
        return "same status" if self.a.status == self.b.status else "other status"

    def regressed(self, pct: float) -> bool:
        """Significantly slower by at least pct percent, or no longer ok."""
        return self.verdict == "broken" or (self.verdict == "slower" and self.ratio >= 1 + pct / 100)


@dataclass
class SweepComparison:
    a_name: str  # run name and short id
    b_name: str
    pairs: list[Pair]
    only_a: int
    only_b: int
    mismatches: list[str]  # why the two sides' times are not comparable (compare refuses them unless forced)
    warnings: list[str]
    notes: list[str]


def compare_runs(client, a_id: str, b_id: str) -> SweepComparison:
    (a_run, a_runs), (b_run, b_runs) = jobs_of(client, a_id), jobs_of(client, b_id)
    a_cases, b_cases = _by_case(one_per_case(a_runs)), _by_case(one_per_case(b_runs))
    common = [case for case in a_cases if case in b_cases]
    if not common:
        raise SweepProblem(f"runs {a_id} and {b_id} have no case in common ({len(a_cases)} and {len(b_cases)} "
                           "cases): a case is what was measured (shape, mask, dtype, backend, model, compile, "
                           "device choice, seed); compare two sweeps of the same command")
    a_jobs = dict(zip(common, map(JobRecord.of, records(client, [a_cases[c] for c in common]))))
    b_jobs = dict(zip(common, map(JobRecord.of, records(client, [b_cases[c] for c in common]))))
    keys = problem_keys([*a_jobs.values(), *b_jobs.values()])
    pairs = []
    for case in common:
        a, b = a_jobs[case], b_jobs[case]
        walled = a.ok and b.ok and compare_by_wall([a, b])  # launch-bound: events would compare host gaps
        approximate = f" (approximate: {b.softmax_error if b.ok else a.softmax_error})" if a.approximate else ""
        pairs.append(Pair(_label(a, keys) + approximate + (" (wall per call)" if walled else ""), a, b))
    a_all, b_all = list(a_jobs.values()), list(b_jobs.values())
    for job in (*a_all, *b_all):  # older records: the thread count under its old name
        if "threads.intra_op" not in job.tags and OLDER_THREADS_TAG in job.tags:
            job.tags["threads.intra_op"] = job.tags[OLDER_THREADS_TAG]
    mismatches = _differences(a_all, b_all, INCOMPARABLE_TAGS)
    warnings = _differences(a_all, b_all, {tag: tag.removeprefix("env.") for tag in OTHER_TAGS}) + _clocks(a_all, b_all)
    notes = _differences(a_all, b_all, {CODE_TAG: "git_commit"})
    return SweepComparison(_name(a_run), _name(b_run), pairs, len(a_cases) - len(common),
                           len(b_cases) - len(common), mismatches, warnings, notes)


def _clocks(a: list[JobRecord], b: list[JobRecord]) -> list[str]:
    """Where the two sides' GPUs ran at other SM clocks while timed (a card lowering its clock under load)."""
    import statistics

    a_clocks = [j.metrics[CLOCK_METRIC] for j in a if CLOCK_METRIC in j.metrics]
    b_clocks = [j.metrics[CLOCK_METRIC] for j in b if CLOCK_METRIC in j.metrics]
    if not (a_clocks and b_clocks):
        return []
    a_clock, b_clock = statistics.median(a_clocks), statistics.median(b_clocks)
    if abs(a_clock - b_clock) <= CLOCK_DIFFERENCE * max(a_clock, b_clock):
        return []
    return [f"SM clock differs: A ran at {a_clock:.0f} MHz, B at {b_clock:.0f} MHz (medians while timed): "
            "absolute times move with it"]


def _name(run) -> str:
    return f"{run.info.run_name} ({run.info.run_id[:8]})"


def _by_case(runs: list) -> dict[str, object]:
    return {run.data.tags["case"]: run for run in runs if "case" in run.data.tags}


def _label(job: JobRecord, keys: list[str]) -> str:
    return f"{job.implementation}, {problem_of(job, keys)}" if keys else job.implementation


def _differences(a: list[JobRecord], b: list[JobRecord], tags: dict[str, str]) -> list[str]:
    """`torch differs: A 2.13.0, B 2.14.0` for each tag (named as `tags` says) whose values differ."""
    found = []
    for tag, name in tags.items():
        a_values = sorted({j.tags[tag] for j in a if tag in j.tags})
        b_values = sorted({j.tags[tag] for j in b if tag in j.tags})
        if a_values != b_values and (a_values or b_values):
            found.append(f"{name} differs: A {', '.join(a_values) or '?'}, B {', '.join(b_values) or '?'}")
    return found


def rerun_command(client, run_id: str) -> str:
    """The `python run.py ...` command that reproduces a sweep (a parent run) or one job (a child or single run)."""
    run = get_run(client, run_id)
    tags = run.data.tags
    if SWEEP_TAG in tags:
        if COMMAND in tags:
            return tags[COMMAND]
        if tags.get(NOTE, "").startswith("python run.py"):  # recorded before the command had a tag of its own
            return tags[NOTE]
        raise SweepProblem(f"sweep {run_id} recorded no command (tag {COMMAND})")
    return shlex.join(["python", "run.py", *_job_overrides(client, run_id)])


def _job_overrides(client, run_id: str) -> list[str]:
    import yaml

    names = {a.path for a in client.list_artifacts(run_id, ".hydra")}
    if OVERRIDES_FILE not in names:
        raise SweepProblem(f"run {run_id} has no {OVERRIDES_FILE} artifact: it is not an attnbench job or sweep, "
                           "so its command is unknown")
    with tempfile.TemporaryDirectory(prefix="attnbench-rerun-") as scratch:
        path = client.download_artifacts(run_id, OVERRIDES_FILE, scratch)
        return [str(item) for item in yaml.safe_load(Path(path).read_text()) or []]
