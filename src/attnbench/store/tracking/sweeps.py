"""Sweeps read back from an MLflow store: which run is meant, its jobs, and each job's record with its samples.

Everything the report and the comparison need is in the store: params, metrics and tags of each child run, and
its raw samples (the `samples.json` artifact; `result.json` for runs recorded before it existed). So a sweep can be
reported or compared from any machine that reaches the store, without its sweep folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

from attnbench.core.record import Record, Status
from attnbench.store.credentials import mask, real_uri
from attnbench.store.results import RESULT_FILE
from attnbench.store.tracking.names import PARENT_TAG, SAMPLES_FILE, SWEEP_TAG
from attnbench.store.tracking.preflight import apply_mlflow_settings, first_line, sqlite_path

MAX_RUNS = 5000


class SweepProblem(Exception):
    """The runs asked for cannot be read: one line naming what, the value given and what is allowed."""


def open_client(uri: str):
    """A client of an existing store; a SQLite file that does not exist is refused, not created empty."""
    from mlflow.tracking import MlflowClient

    apply_mlflow_settings()
    path = sqlite_path(uri)
    if path is not None and not Path(path).is_file():
        raise SweepProblem(f"no MLflow store at {mask(uri)} (the file {path} does not exist): give one with "
                           "--uri URI or $MLFLOW_TRACKING_URI")
    return MlflowClient(tracking_uri=real_uri(uri))


def get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        raise SweepProblem(f"unknown run id {run_id!r} in store {mask(client.tracking_uri)}: expected the id of a "
                           f"run there (its page in the UI shows it; `attnbench report` takes the latest sweep) "
                           f"[{first_line(e)}]") from None


def _active_experiments(client) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def latest_sweep(client, experiment: str | None = None):
    """The latest sweep's parent run, in one experiment or in the whole store."""
    runs = newest_sweeps(client, experiment, 1)
    if not runs:
        where = f"experiment {experiment!r}" if experiment else "any experiment"
        raise SweepProblem(f"no sweep in {where} of store {mask(client.tracking_uri)}: run one with "
                           "`python run.py -m ...`, or give a parent run's id")
    return runs[0]


def newest_sweeps(client, experiment: str | None = None, limit: int = MAX_RUNS) -> list:
    """Sweeps' parent runs, newest first, in one experiment (refused when it is not there) or in the whole store."""
    if experiment is None:
        ids = _active_experiments(client)
    else:
        found = client.get_experiment_by_name(experiment)
        if found is None or found.lifecycle_stage != "active":
            names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise SweepProblem(f"no experiment {experiment!r} in store {mask(client.tracking_uri)}: "
                               f"its experiments are {names}")
        ids = [found.experiment_id]
    return client.search_runs(ids, filter_string=f"tags.`{SWEEP_TAG}` LIKE '%'",
                              order_by=["attributes.start_time DESC"], max_results=limit) if ids else []


def children(client, parent) -> list:
    """A parent's child runs in job order."""
    runs = client.search_runs([parent.info.experiment_id], max_results=MAX_RUNS,
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    return sorted(runs, key=lambda r: (_job_number(r), r.info.start_time or 0))


def _job_number(run) -> int:
    number = run.data.tags.get("hydra.job.num", "")
    return int(number) if number.isdigit() else 1 << 30


def sweep_of(client, run_id: str | None, experiment: str | None = None):
    """(parent run, its child runs): the run given, which must be a sweep's parent, else the latest sweep."""
    parent = get_run(client, run_id) if run_id else latest_sweep(client, experiment)
    runs = children(client, parent)
    if not runs:
        tags, run_id = parent.data.tags, parent.info.run_id
        if SWEEP_TAG in tags:
            raise SweepProblem(f"sweep {run_id} has no job runs (yet): nothing to read")
        what = f"a job of sweep {tags[PARENT_TAG]}" if PARENT_TAG in tags else "a single run"
        raise SweepProblem(f"run {run_id} is {what}, not a sweep (it has no child runs): expected a sweep's parent "
                           "run id" + (f", e.g. {tags[PARENT_TAG]}" if PARENT_TAG in tags else ""))
    return parent, runs


def jobs_of(client, run_id: str) -> tuple[object, list]:
    """(the run, the jobs it holds): a sweep's children, or the run itself when it is one job."""
    run = get_run(client, run_id)
    runs = children(client, run)
    if runs:
        return run, runs
    if "case" in run.data.tags:
        return run, [run]
    raise SweepProblem(f"run {run_id} is neither a sweep (no child runs) nor a job (no `case` tag): expected the "
                       "id of a sweep's parent run or of one job's run")


def one_per_case(runs: list) -> list:
    """A resumed sweep may hold a case twice (failed, then run again): keep its ok run, else its latest."""
    chosen: dict[str, object] = {}
    for run in runs:
        key = run.data.tags.get("case", run.info.run_id)
        kept = chosen.get(key)
        if kept is None or _rank(run) >= _rank(kept):
            chosen[key] = run
    kept_ids = {run.info.run_id for run in chosen.values()}
    return [run for run in runs if run.info.run_id in kept_ids]


def _rank(run) -> tuple[bool, int]:
    return run.data.tags.get("status") == "ok", run.info.start_time or 0


def records(client, runs: list) -> list[Record]:
    """The jobs' Records as their runs hold them, with the raw samples of every ok job (the only ones the verdicts
    read). A run with no status tag yet is `running`."""
    with tempfile.TemporaryDirectory(prefix="attnbench-samples-") as scratch:
        return [Record(run.data.tags.get("status") or Status.running, run.data.tags.get("reason", ""),
                       name=run.info.run_name or run.info.run_id[:8], params=dict(run.data.params),
                       metrics=dict(run.data.metrics), tags=dict(run.data.tags),
                       samples=_samples(client, run, Path(scratch)) if run.data.tags.get("status") == "ok" else {})
                for run in runs]


def _samples(client, run, scratch: Path) -> dict[str, list[float]]:
    """The run's raw samples, fetched by name from its artifact location: against a server, two calls (the file's
    listing and the file), where the client's own download looks the run up three times first."""
    from mlflow.artifacts import download_artifacts, list_artifacts

    # One small file per job: MLflow's progress bar for each would fill the end of every sweep's output.
    os.environ.setdefault(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false")
    root, where = run.info.artifact_uri.rstrip("/"), str(scratch / run.info.run_id)

    def fetch(name: str) -> dict[str, list[float]]:
        path = download_artifacts(artifact_uri=f"{root}/{name}", dst_path=where, tracking_uri=client.tracking_uri)
        return json.loads(Path(path).read_text())["samples"]

    try:
        return fetch(SAMPLES_FILE)
    except Exception:  # noqa: BLE001 - each store says "not there" its own way: the listing tells
        names = {a.path for a in list_artifacts(artifact_uri=root, tracking_uri=client.tracking_uri)}
        if SAMPLES_FILE in names:
            raise
    return fetch(RESULT_FILE) if RESULT_FILE in names else {}  # runs recorded before samples.json existed
