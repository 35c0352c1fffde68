"""`attnbench sync FOLDER`: upload the results saved in a sweep (or single-run) folder to an MLflow store.

For a sweep whose tracking failed part-way, or one run before a store existed. The folder may have been moved or
copied, or come from another machine: a result's folder is where its file is, and nothing outside FOLDER is read.
A result file that cannot be read is said in one line (path and why) and the others are uploaded; the command then
exits 1. Idempotent: each result carries an id, and a result that a run already holds is skipped, so a second sync
(also after one killed part-way) adds nothing. A run left incomplete (no status, or another result's) is moved to
the store's trash and uploaded afresh. The sweep's parent is closed by what its results say.
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
from attnbench.store.tracking.preflight import StoreProblem, first_line, sqlite_path
from attnbench.store.tracking.stale import is_gone
from attnbench.store.tracking.store import artifact_location, default_uri


class SyncProblem(Exception):
    """Nothing can be synced: one line saying why."""


@dataclass
class Synced:
    uploaded: int
    already: int
    skipped: int  # results that have no run of their own (resume=true skipped their case)
    damaged: int  # result files that could not be read (each said on stderr): not uploaded
    store: str
    experiment: str


def sync(folder: Path, uri: str | None = None, experiment: str | None = None) -> Synced:
    folder = Path(folder).resolve()
    found = results.read_folder(folder)
    for damaged in found.damaged:  # said before any upload: a store that fails later must not hide them
        print(f"attnbench sync: {damaged} (not uploaded)", file=sys.stderr)
    records = found.records
    if not records:
        raise SyncProblem(f"no readable {results.RESULT_FILE} in {folder} or its job folders: nothing to sync")
    job_config = _saved_config(records, folder)
    uri = uri or _recorded_store(folder, folder / PARENT_FILE, Path(records[0].dir) / RUN_FILE) or \
        job_config.tracking.uri or default_uri()
    if HIDDEN in uri:
        raise SyncProblem(f"the sweep's store {uri} had its credentials masked: give the URI with --uri")
    experiment = experiment or job_config.tracking.experiment
    try:
        session = StoreSession.open(uri, experiment, artifact_location(job_config, uri),
                                    redact=bool(job_config.tracking.get("redact", False)))  # as the sweep was
    except StoreProblem as e:
        raise SyncProblem(str(e)) from None
    sweep = folder / "multirun.yaml"
    master = _yaml(sweep) if _own(sweep, folder) else None
    parent, parent_id = _parent(session, folder, master) if master is not None else (None, None)
    earlier = session.earlier_uploads(parent_id, records)
    uploaded = already = skipped = 0
    for record in records:
        if record.status == "skipped":
            skipped += 1
        elif session.upload(record, Path(record.dir) / RUN_FILE, parent_id, earlier.get(record.id, [])):
            uploaded += 1
        else:
            already += 1
    if parent_id:
        _close_parent(session, parent, parent_id, folder, master, found, bool(uploaded))
    return Synced(uploaded, already, skipped, len(found.damaged), mask(uri), experiment)


def _close_parent(session: StoreSession, parent, parent_id: str, folder: Path, master: DictConfig,
                  found: results.Results, changed: bool) -> None:
    """Close the sweep's parent by its results, when something changed or it does not say what they do: new
    results, a parent new or left open (a sync killed part-way), or tags of an ending no longer true."""
    problem = found.problem(folder)
    final = session.parent_status(found.records, problem)
    tags = parent.data.tags if parent is not None else {}
    # A parent has no status tag of its own (the closer of a dead process's runs gave it one); its reason stays
    # only while it holds: a sweep stopped part-way (KILLED), or the damaged files it names (set again).
    stale = tuple(name for name in ("status", "reason")
                  if name in tags and (name == "status" or (final != "KILLED" and not problem)))
    if not (changed or parent is None or parent.info.status != final or stale
            or (problem and tags.get("reason") != problem)):
        return
    _report(session, parent_id, folder)
    summary = summary_text(found.records, sweep_title(master, folder), show=False, damaged=found.damaged)
    session.finish_parent(parent_id, found.records, summary, problem, stale)


def _report(session: StoreSession, parent_id: str, folder: Path) -> None:
    """The sweep's report, as at the end of a sweep; only the report is lost if it fails."""
    from attnbench.analysis.sweep_report import report_sweep

    try:
        report = report_sweep(session.client, parent_id, folder)
        session.log_report(parent_id, report.files, report.description)
    except Exception as e:  # noqa: BLE001 - the results are uploaded: `attnbench report` can write it later
        print(f"attnbench sync: the sweep's report failed ({first_line(e)}): `attnbench report {parent_id}` writes "
              "it again", file=sys.stderr)


def _own(path: Path, folder: Path) -> bool:
    """A file of the folder itself, not a link out of it: sync reads nothing else."""
    return path.is_file() and path.resolve().is_relative_to(folder.resolve())


def _saved_config(records: list, folder: Path) -> DictConfig:
    """A job's config as Hydra saved it, with its hydra node (its store and experiment): the first job's that
    can be read."""
    for record in records:
        saved = Path(record.dir) / ".hydra"
        if _own(saved / "config.yaml", folder):
            try:
                config = _yaml(saved / "config.yaml")
                return OmegaConf.merge(config, _yaml(saved / "hydra.yaml")) if _own(saved / "hydra.yaml", folder) \
                    else config
            except SyncProblem as e:
                print(f"attnbench sync: {e}", file=sys.stderr)
    raise SyncProblem(f"no job folder in {folder} has a readable .hydra/config.yaml: not a sweep folder of attnbench")


def _yaml(path: Path) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - whatever the YAML parser or the disk says, one line naming the file
        raise SyncProblem(f"{path}: cannot be read ({first_line(e)})") from None


def _recorded_store(folder: Path, *links: Path) -> str | None:
    """The store the sweep was tracked (or last synced) to; one that is not on this machine (a SQLite file in a
    folder that does not exist here) is refused: the folder came from elsewhere, and the store is for --uri."""
    for link in links:
        try:
            uri = json.loads(link.read_text()).get("tracking_uri") if _own(link, folder) else None
        except (OSError, ValueError, AttributeError):
            continue  # a damaged link file: the store it named is not known
        if not uri:
            continue
        database = sqlite_path(uri)
        if database is not None and database.is_absolute() and not database.parent.is_dir():
            raise SyncProblem(f"the sweep was tracked to {uri}, which is not on this machine: give the store "
                              "with --uri")
        return uri
    return None


def _parent(session: StoreSession, folder: Path, master: DictConfig):
    """The sweep's parent run in this store: (the run it had, its id), else (None, a new one's id)."""
    run = session.linked_run(folder / PARENT_FILE)
    if run is not None:
        if run.info.status == "RUNNING" and not is_gone(run.data.tags):
            raise SyncProblem(f"the sweep in {folder} is still running (its parent run {run.info.run_id} is "
                              "open): sync it once it has ended")
        return run, run.info.run_id
    return None, session.start_parent(sweep_run(master, folder), folder / PARENT_FILE)
