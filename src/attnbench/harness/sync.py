"""`attnbench sync FOLDER`: upload the results saved in a sweep (or single-run) folder to an MLflow store.

For a sweep whose tracking failed part-way, or one run before a store existed. Idempotent: each result carries
an id, and a result whose run already holds it is skipped, so a second sync adds nothing. A run left incomplete
by a failure (no status, or another result's) is moved to the store's trash and uploaded afresh.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from attnbench.core.record import Record
from attnbench.harness.summary import summary_text
from attnbench.harness.sweep import sweep_run, sweep_title
from attnbench.store import results
from attnbench.store.credentials import HIDDEN, mask
from attnbench.store.tracking.names import PARENT_FILE, RESULT_ID, RUN_FILE
from attnbench.store.tracking.preflight import StoreProblem, first_line, open_store
from attnbench.store.tracking.stale import close_stale_runs, is_gone, process_tags
from attnbench.store.tracking.store import artifact_location, tracking_uri
from attnbench.store.tracking.upload import (
    finish_job_run,
    finish_parent,
    start_parent,
    start_run,
    terminal_status,
    write_link,
)


class SyncProblem(Exception):
    """Nothing can be synced: one line saying why."""


@dataclass
class Synced:
    uploaded: int
    already: int
    skipped: int  # results that have no run of their own (resume=true skipped their case)
    store: str
    experiment: str


def sync(folder: Path, uri: str | None = None, experiment: str | None = None) -> Synced:
    folder = Path(folder).resolve()
    records = results.read_all(folder)
    if not records:
        raise SyncProblem(f"no {results.RESULT_FILE} in {folder} or its job folders: nothing to sync")
    job_config = _saved_config(Path(records[0].dir))
    uri = uri or _recorded_store(folder / PARENT_FILE, Path(records[0].dir) / RUN_FILE) or tracking_uri(job_config)
    if HIDDEN in uri:
        raise SyncProblem(f"the sweep's store {uri} had its credentials masked: give the URI with --uri")
    experiment = experiment or job_config.tracking.experiment
    try:
        client, experiment_id = open_store(uri, experiment, artifact_location(job_config, uri))
    except StoreProblem as e:
        raise SyncProblem(str(e)) from None
    close_stale_runs(client, experiment_id)
    sweep = folder / "multirun.yaml"
    parent_id, parent_new = _parent(client, experiment_id, folder, OmegaConf.load(sweep)) if sweep.is_file() else (
        None, False)
    uploaded = already = skipped = 0
    for record in records:
        if record.status == "skipped":
            skipped += 1
        elif _upload(client, experiment_id, parent_id, record):
            uploaded += 1
        else:
            already += 1
    if parent_id and (uploaded or parent_new):
        title = sweep_title(OmegaConf.load(sweep), folder)
        _report(client, parent_id, folder)
        finish_parent(client, parent_id, records, summary_text(records, title, show=False))
    return Synced(uploaded, already, skipped, mask(uri), experiment)


def _report(client, parent_id: str, folder: Path) -> None:
    """The sweep's report, as at the end of a sweep; only the report is lost if it fails."""
    from attnbench.analysis.sweep_report import report_sweep

    try:
        report_sweep(client, parent_id, folder)
    except Exception as e:  # noqa: BLE001 - the results are uploaded: `attnbench report` can write it later
        print(f"attnbench sync: the sweep's report failed ({first_line(e)}): `attnbench report {parent_id}` writes "
              "it again", file=sys.stderr)


def _saved_config(job_dir: Path) -> DictConfig:
    """The job's config as Hydra saved it, with its hydra node (where its store and project were)."""
    saved = job_dir / ".hydra"
    if not (saved / "config.yaml").is_file():
        raise SyncProblem(f"{saved}/config.yaml is missing: not a Hydra job folder of attnbench")
    config = OmegaConf.load(saved / "config.yaml")
    if (saved / "hydra.yaml").is_file():
        config = OmegaConf.merge(config, OmegaConf.load(saved / "hydra.yaml"))
    return config


def _recorded_store(*links: Path) -> str | None:
    """The store the sweep was tracked (or last synced) to."""
    for link in links:
        if link.is_file():
            return json.loads(link.read_text()).get("tracking_uri") or None
    return None


def _linked_run(client, experiment_id: str, link: Path):
    """The run a link file names, if it is in this store and experiment and not deleted."""
    if not link.is_file():
        return None
    try:
        run = client.get_run(json.loads(link.read_text())["run_id"])
    except Exception:  # noqa: BLE001 - another store, or a run deleted since
        return None
    return run if run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active" else None


def _upload(client, experiment_id: str, parent_id: str | None, record: Record) -> bool:
    """Upload one result unless its run already holds it; whether it was uploaded."""
    link = Path(record.dir) / RUN_FILE
    run = _linked_run(client, experiment_id, link)
    if run is not None:
        tags = run.data.tags
        if (tags.get(RESULT_ID), tags.get("status"), run.info.status) == (
                record.id, record.status, terminal_status(record.status)):
            return False
        client.delete_run(run.info.run_id)  # incomplete: replaced by a complete one
    tags = process_tags() | {k: v for k, v in record.tags.items() if k.startswith("choice.")}
    if parent_id:
        tags |= {"mlflow.parentRunId": parent_id, "hydra.job.num": record.job}
    run_id = start_run(client, experiment_id, record.name, {}, tags, start_ms=record.started_ms)
    finish_job_run(client, run_id, record)  # the params too, with the metrics and tags
    write_link(link, run_id, experiment_id, client.tracking_uri)
    return True


def _parent(client, experiment_id: str, folder: Path, master: DictConfig) -> tuple[str, bool]:
    """The sweep's parent run in this store: the one it had, else a new one; (id, whether it is new)."""
    run = _linked_run(client, experiment_id, folder / PARENT_FILE)
    if run is not None:
        if run.info.status == "RUNNING" and not is_gone(run.data.tags):
            raise SyncProblem(f"the sweep in {folder} is still running (its parent run {run.info.run_id} is "
                              "open): sync it once it has ended")
        return run.info.run_id, False
    parent_id = start_parent(client, experiment_id, sweep_run(master, folder))
    write_link(folder / PARENT_FILE, parent_id, experiment_id, client.tracking_uri)
    return parent_id, True
