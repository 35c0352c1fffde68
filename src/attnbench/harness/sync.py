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

from attnbench.harness.summary import summary_text
from attnbench.harness.sweep import sweep_run, sweep_title
from attnbench.store import results
from attnbench.store.credentials import HIDDEN, mask
from attnbench.store.session import StoreSession
from attnbench.store.tracking.names import PARENT_FILE, RUN_FILE
from attnbench.store.tracking.preflight import StoreProblem, first_line
from attnbench.store.tracking.stale import is_gone
from attnbench.store.tracking.store import artifact_location, tracking_uri


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
        session = StoreSession.open(uri, experiment, artifact_location(job_config, uri))
    except StoreProblem as e:
        raise SyncProblem(str(e)) from None
    sweep = folder / "multirun.yaml"
    parent_id, parent_new = _parent(session, folder, OmegaConf.load(sweep)) if sweep.is_file() else (None, False)
    uploaded = already = skipped = 0
    for record in records:
        if record.status == "skipped":
            skipped += 1
        elif session.upload(record, Path(record.dir) / RUN_FILE, parent_id):
            uploaded += 1
        else:
            already += 1
    if parent_id and (uploaded or parent_new):
        title = sweep_title(OmegaConf.load(sweep), folder)
        _report(session, parent_id, folder)
        session.finish_parent(parent_id, records, summary_text(records, title, show=False))
    return Synced(uploaded, already, skipped, mask(uri), experiment)


def _report(session: StoreSession, parent_id: str, folder: Path) -> None:
    """The sweep's report, as at the end of a sweep; only the report is lost if it fails."""
    from attnbench.analysis.sweep_report import report_sweep

    try:
        report = report_sweep(session.client, parent_id, folder)
        session.log_report(parent_id, report.files, report.description)
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


def _parent(session: StoreSession, folder: Path, master: DictConfig) -> tuple[str, bool]:
    """The sweep's parent run in this store: the one it had, else a new one; (id, whether it is new)."""
    run = session.linked_run(folder / PARENT_FILE)
    if run is not None:
        if run.info.status == "RUNNING" and not is_gone(run.data.tags):
            raise SyncProblem(f"the sweep in {folder} is still running (its parent run {run.info.run_id} is "
                              "open): sync it once it has ended")
        return run.info.run_id, False
    return session.start_parent(sweep_run(master, folder), folder / PARENT_FILE), True
