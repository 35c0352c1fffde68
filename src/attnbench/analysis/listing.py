"""What a store holds, from the tracking store alone: its sweeps newest first (`attnbench ls`), and one sweep with its
jobs or one job (`attnbench show`).

A sweep's line comes from its parent run: its name, when it started, its MLflow status, the `jobs_<status>` counts
its end logged (counted from its child runs while it has none: a sweep still running, or stopped), and the answer
its report put first in its description (`**Winner: flash (2.31× over math)**`), so listing N sweeps costs one
search, plus one per sweep without counts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from attnbench.analysis.pivot import JobRecord
from attnbench.store.tracking.describe import NOTE
from attnbench.store.tracking.names import COMMAND, PARENT_TAG
from attnbench.store.tracking.sweeps import SweepProblem, children, get_run, newest_sweeps, one_per_case, records

JOB_COUNT = re.compile(r"jobs_(.+)")


@dataclass(frozen=True)
class SweepLine:
    run_id: str
    name: str
    started: str  # local time, to the minute
    state: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    jobs: str  # `12 ok, 4 unsupported`
    winner: str  # the report's answer, `` before it has one


@dataclass
class SweepShown:
    line: SweepLine
    command: str
    jobs: list[JobRecord]


@dataclass
class JobShown:
    name: str
    run_id: str
    sweep: str  # its parent run's id, `` for a single run
    job: JobRecord


def sweep_lines(client, experiment: str | None = None, limit: int = 20) -> list[SweepLine]:
    return [_line(client, run) for run in newest_sweeps(client, experiment, limit)]


def _line(client, run) -> SweepLine:
    counts = {match.group(1): int(value) for key, value in run.data.metrics.items()
              if (match := JOB_COUNT.fullmatch(key))}
    if not counts:  # still running, or its end never came: count its jobs as they are
        counts = Counter(child.data.tags.get("status", "running") for child in children(client, run))
    jobs = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return SweepLine(run.info.run_id, run.info.run_name or run.info.run_id[:8], _when(run.info.start_time),
                     run.info.status, jobs or "no jobs", winner_of(run.data.tags.get(NOTE, "")))


def _when(millis: int | None) -> str:
    return datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M") if millis else ""


def winner_of(description: str) -> str:
    """The answer a report put first: `flash (2.31× over math)`, `seq_len=512: cudnn (…); seq_len=1024: …`, or
    `no winner: flash ~ cudnn within noise`; `` for a description that is not a report's."""
    first = description.split("\n", 1)[0].split(" · ", 1)[0]  # the approximate jobs follow, apart
    for prefix in ("**Winner: ", "**Winners:** "):
        if first.startswith(prefix):
            return first.removeprefix(prefix).removesuffix("**")
    if first.startswith("**No winner") and first.endswith("**"):
        return first.strip("*").replace("No winner", "no winner", 1)
    return ""


def show(client, run_id: str) -> SweepShown | JobShown:
    """One sweep (a parent run: its line and its jobs) or one job (a child or single run)."""
    run = get_run(client, run_id)
    runs = children(client, run)
    if runs:
        jobs = [JobRecord.of(record) for record in records(client, one_per_case(runs))]
        return SweepShown(_line(client, run), run.data.tags.get(COMMAND, ""), jobs)
    if "case" not in run.data.tags:
        raise SweepProblem(f"run {run_id} is neither a sweep (no child runs) nor a job (no `case` tag): expected the "
                           "id of a sweep's parent run or of one job's run (`attnbench ls` lists the sweeps)")
    (record,) = records(client, [run])
    return JobShown(run.info.run_name or run_id[:8], run_id, run.data.tags.get(PARENT_TAG, ""), JobRecord.of(record))
