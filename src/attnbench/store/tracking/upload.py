"""Saved results into MLflow runs: the same steps while a sweep runs (the callback) and later (`attnbench sync`).

A job's run gets its status tag last, with the result's id, and is closed only after that: a run that could not
be fully logged never looks finished. Every name and value goes through `mask`, so no credential is recorded.
"""

from __future__ import annotations

import json
import math
import shlex
from collections import Counter
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING

from attnbench.core.record import Record, Status
from attnbench.store.credentials import mask
from attnbench.store.results import RESULT_FILE
from attnbench.store.tracking.describe import NOTE, job_description, terminal_status
from attnbench.store.tracking.names import COMMAND, RESULT_ID, SAMPLES_FILE, SWEEP_TAG
from attnbench.store.tracking.stale import process_tags
from attnbench.store.tracking.store import MAX_PARAMS_PER_BATCH, MAX_TAG_VALUE, chunks, flatten, safe_name

# MLflow (~1.5 s to import) is imported where a run is written, not with this module: Hydra creates the sweep's
# callbacks, which import it, before the sweeper checks the jobs, and a sweep refused then never writes a run.
if TYPE_CHECKING:
    from mlflow.entities import Param, RunTag

MAX_TAGS_PER_BATCH = 100  # MLflow's limit; a batch holds at most 1000 entities
MAX_METRICS_PER_BATCH = 1000 - MAX_PARAMS_PER_BATCH - MAX_TAGS_PER_BATCH


def start_run(client, experiment_id: str, name: str, params: dict[str, str], tags: dict[str, str],
              start_ms: int | None = None) -> str:
    """A RUNNING run with its name and tags (one call), and its params if any are given (a job's params come with
    its results instead, in finish_job_run: one call fewer per job)."""
    run = client.create_run(experiment_id, start_time=start_ms, run_name=mask(name),
                            tags={safe_name(k): mask(str(v))[:MAX_TAG_VALUE] for k, v in tags.items()})
    for batch in chunks(param_list(params), MAX_PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=batch)
    return run.info.run_id


def param_list(params: dict[str, str]) -> list[Param]:
    from mlflow.entities import Param

    return [Param(safe_name(k), mask(str(v))) for k, v in params.items()]


@dataclass(frozen=True)
class SweepRun:
    """What a sweep's parent run records of it (built from Hydra's config by attnbench.harness.sweep)."""

    title: str
    key: str  # the same for every invocation of one sweep (resume finds its parent by it)
    overrides: list[str]  # the command line's
    params: dict[str, str]  # the sweeper's parameters (an experiment file's hydra.sweeper.params)
    dir: Path

    @property
    def command(self) -> str:
        return shlex.join(["python", "run.py", "-m", *self.overrides])


def start_parent(client, experiment_id: str, sweep: SweepRun) -> str:
    """A sweep's parent run: the sweep's parameters as params, the command as a tag and, until the report replaces
    it with the answer, as its description."""
    overrides = " ".join(sweep.overrides)
    return start_run(client, experiment_id, sweep.title,
                     params=flatten({"sweep": sweep.params | {"overrides": overrides or "(none)"}}),
                     tags=process_tags() | {"sweep.dir": str(sweep.dir), SWEEP_TAG: sweep.key,
                                            COMMAND: sweep.command, NOTE: f"`{sweep.command}`: no report yet "
                                            "(written when the sweep ends, or by `attnbench report`)"})


def write_link(path: Path, run_id: str, experiment_id: str, uri: str) -> None:
    """Which run holds a folder's result (PARENT_FILE, RUN_FILE)."""
    path.write_text(json.dumps({"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": mask(uri)}))


def finish_job_run(client, run_id: str, record: Record) -> None:
    """Artifacts (the raw samples among them), then params, metrics and tags in one call where MLflow's limits
    allow, then close the run: against a server, each call is a round trip and a database commit."""
    from mlflow.entities import Metric, RunTag

    when = record.ended_ms or record.started_ms
    metrics = [Metric(safe_name(k), float(v), when, 0) for k, v in record.metrics.items()
               if v is not None and math.isfinite(float(v))]
    for artifact, folder in job_files(Path(record.dir)):
        if artifact.is_dir():
            client.log_artifacts(run_id, str(artifact), artifact_path=folder)
        else:
            client.log_artifact(run_id, str(artifact), artifact_path=folder)
    if record.samples:
        samples = {"unit": "us", "headline": record.tags.get("timing.headline"), "samples": record.samples}
        client.log_text(run_id, json.dumps(samples), SAMPLES_FILE)
    if record.traceback:
        client.log_text(run_id, mask(record.traceback), "traceback.txt")
    tags = record.tags | {"reason": record.reason, RESULT_ID: record.id, NOTE: job_description(record)}
    tag_list = [RunTag(safe_name(k), mask(str(v))[:MAX_TAG_VALUE]) for k, v in tags.items()]
    for params, metric_batch, tag_batch in batches(param_list(record.params), metrics, tag_list,
                                                   RunTag("status", record.status.value)):
        client.log_batch(run_id, metrics=metric_batch, params=params, tags=tag_batch)
    client.set_terminated(run_id, terminal_status(record.status), end_time=when)


def job_files(job_dir: Path) -> list[tuple[Path, str | None]]:
    """What a job's run keeps of its folder (its Hydra config, logs and result), each with its artifact folder. A
    link that leads out of the job folder is left out: an upload copies nothing from elsewhere."""
    root = job_dir.resolve()

    def inside(path: Path) -> bool:
        return path.resolve().is_relative_to(root)

    files: list[tuple[Path, str | None]] = []
    hydra = job_dir / ".hydra"
    if hydra.is_dir() and inside(hydra):
        nested = list(hydra.rglob("*"))
        if all(inside(path) for path in nested):
            files.append((hydra, hydra.name))  # the whole folder in one call: one round trip to a server
        else:
            files += [(path, str(path.parent.relative_to(job_dir))) for path in nested
                      if path.is_file() and inside(path)]
    return files + [(path, None) for path in (*sorted(job_dir.glob("*.log")), job_dir / RESULT_FILE)
                    if path.is_file() and inside(path)]


def batches(params: list, metrics: list, tags: list, last_tag: RunTag) -> list[tuple[list, list, list]]:
    """log_batch calls within MLflow's limits (100 params, 100 tags, 1000 entities each), last_tag in the last one.

    A run's status tag is its last write: a run with a status has everything. MLflow's SQL store (a server's too)
    commits a batch's params, then its metrics, then all its tags at once, so the status may share their batch."""
    calls = list(zip_longest(chunks(params, MAX_PARAMS_PER_BATCH), chunks(metrics, MAX_METRICS_PER_BATCH),
                             chunks(tags, MAX_TAGS_PER_BATCH), fillvalue=[]))
    if calls and len(calls[-1][2]) < MAX_TAGS_PER_BATCH:
        params, metrics, tags = calls.pop()
        return [*calls, (params, metrics, [*tags, last_tag])]
    return [*calls, ([], [], [last_tag])]


def mark_unrecorded(client, run_id: str, record: Record, error: str) -> None:
    """After a failure part-way: say so on the run and close it as FAILED (best effort: the store may be gone).
    Its result id is taken back, so that `attnbench sync` uploads it again even where FAILED is its usual end."""
    client.set_tag(run_id, RESULT_ID, "incomplete")
    client.set_tag(run_id, "reason", mask(f"not fully recorded ({error}); the full result is in "
                                          f"{record.dir}/{RESULT_FILE}: upload it with `attnbench sync`"))
    client.set_tag(run_id, "status", record.status.value)
    client.set_terminated(run_id, "FAILED")


def parent_status(records: list[Record], problem: str | None = None) -> str:
    """How a sweep's parent closes: KILLED when a job was stopped (or never ended), FAILED when one failed or a
    result could not be read (`problem`), else FINISHED."""
    statuses = {record.status for record in records}
    if problem:
        return "FAILED"
    if statuses & {Status.interrupted, Status.running}:
        return "KILLED"
    return "FAILED" if any(s.failed for s in statuses) else "FINISHED"


def finish_parent(client, parent_id: str, records: list[Record], summary: str, problem: str | None = None) -> None:
    """jobs_<status> counts and the summary table on the parent, then close it by what its jobs did; a problem
    (result files that cannot be read) is its reason, and it closes FAILED."""
    counts = Counter(record.status.value for record in records)
    for status, count in counts.items():
        client.log_metric(parent_id, f"jobs_{safe_name(status)}", count)
    client.log_text(parent_id, summary, "summary.txt")
    if problem:
        client.set_tag(parent_id, "reason", mask(problem)[:MAX_TAG_VALUE])
    client.set_terminated(parent_id, parent_status(records, problem))
