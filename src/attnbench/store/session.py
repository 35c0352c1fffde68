"""The one way attnbench writes to an MLflow store: a session on one store and experiment.

The Hydra callback (attnbench.harness.tracking), while a sweep runs, and `attnbench sync`, later, both open a
session and write every run through it: a sweep's parent run, a job's run and its result, a stopped sweep's runs,
the report. A session takes Records and SweepRuns, never Hydra's config; the steps of a write are in
attnbench.store.tracking.upload.
"""

from __future__ import annotations

import json
from pathlib import Path

from attnbench.core.record import Record
from attnbench.store.redact import RedactingClient
from attnbench.store.tracking import upload
from attnbench.store.tracking.describe import NOTE, terminal_status
from attnbench.store.tracking.names import PARENT_TAG, RESULT_ID, SWEEP_TAG, UPLOAD_OF
from attnbench.store.tracking.preflight import open_store
from attnbench.store.tracking.stale import close_running_children, close_stale_runs, process_tags
from attnbench.store.tracking.upload import SweepRun  # what a parent run records: part of the session's API

INTERRUPTED_SWEEP = "stopped by {signal} before all its jobs ran"
UNFINISHED_SWEEP = "the sweep stopped before all its jobs ran (a bad override or a crash): its output says why"


class StoreSession:
    def __init__(self, client, experiment_id: str, uri: str) -> None:
        self.client, self.experiment_id, self.uri = client, experiment_id, uri
        self.closed_stale = 0  # runs of this host's dead processes closed when the session opened
        self._peaks_logged: set[str] = set()

    @classmethod
    def open(cls, uri: str, experiment: str, artifact_location: str | None,
             experiment_id: str | None = None, redact: bool = False) -> "StoreSession":
        """Connect (the experiment created if new; StoreProblem in one line if the store cannot be used), and close
        the runs that this host's dead processes left RUNNING. `experiment_id`: join a sweep's known experiment.
        `redact` (tracking.redact): every tag and param written names no host and no home folder (store/redact)."""
        client, found_id = open_store(uri, experiment, artifact_location)
        if redact:
            client = RedactingClient(client)
        session = cls(client, experiment_id or found_id, uri)
        session.closed_stale = close_stale_runs(client, session.experiment_id)
        return session

    # --- reading what a sweep needs ------------------------------------------------------------
    def done_cases(self) -> dict[str, str]:
        """case → run, for every run of the experiment that finished ok (what `resume=true` skips)."""
        done: dict[str, str] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string="tags.status = 'ok'",
                                           max_results=1000, page_token=token)
            for run in page:
                if "case" in run.data.tags:
                    done.setdefault(run.data.tags["case"], run.info.run_id)
            token = page.token
            if not token:
                return done

    def linked_run(self, link: Path):
        """The run a link file names, if it is in this store and experiment and not deleted. A link file is always
        written plainly in its folder: one that is a symbolic link is not followed."""
        if link.is_symlink() or not link.is_file():
            return None
        try:
            run = self.client.get_run(json.loads(link.read_text())["run_id"])
        except Exception:  # noqa: BLE001 - another store, or a run deleted since
            return None
        return run if run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active" else None

    def latest_parent(self, sweep_key: str):
        """The latest parent run of the sweep with this key, if any."""
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_key}'",
                                        order_by=["attributes.start_time DESC"], max_results=1)
        return found[0] if found else None

    # --- a sweep's parent run -----------------------------------------------------------------
    def start_parent(self, sweep: SweepRun, link: Path) -> str:
        parent_id = upload.start_parent(self.client, self.experiment_id, sweep)
        upload.write_link(link, parent_id, self.experiment_id, self.uri)
        return parent_id

    def reopen_parent(self, parent, sweep_dir: Path, link: Path) -> str:
        """Open a sweep's parent again for a resumed sweep: RUNNING, no reason, this process's tags."""
        parent_id = parent.info.run_id
        upload.write_link(link, parent_id, self.experiment_id, self.uri)
        self.client.update_run(parent_id, status="RUNNING")
        if "reason" in parent.data.tags:  # why it stopped last time: no longer true
            self.client.delete_tag(parent_id, "reason")
        for name, value in process_tags().items() | {"sweep.resumed_dir": str(sweep_dir)}.items():
            self.client.set_tag(parent_id, name, value)
        return parent_id

    def log_report(self, parent_id: str, files: list[Path], description: str) -> None:
        """A sweep's report (attnbench.analysis.sweep_report): its files attached, its summary the description."""
        for path in files:
            self.client.log_artifact(parent_id, str(path))
        self.client.set_tag(parent_id, NOTE, description)

    def finish_parent(self, parent_id: str, records: list[Record], summary: str, problem: str | None = None,
                      stale: tuple[str, ...] = ()) -> None:
        """Close a sweep's parent by what its jobs did; `problem` (result files that cannot be read) makes it FAILED
        with that reason. `stale`: tags an earlier ending left that are no longer true (`attnbench sync`)."""
        for name in stale:
            self.client.delete_tag(parent_id, name)
        upload.finish_parent(self.client, parent_id, records, summary, problem)

    @staticmethod
    def parent_status(records: list[Record], problem: str | None = None) -> str:
        """The MLflow status finish_parent closes a parent in."""
        return upload.parent_status(records, problem)

    def fail_parent(self, parent_id: str, reason: str) -> None:
        self.client.set_tag(parent_id, "reason", reason)
        self.client.set_terminated(parent_id, "FAILED")

    def stop_sweep(self, parent_id: str, signal: str | None, job_reason: str, why: str | None = None) -> None:
        """A sweep stopped by a signal (KILLED) or a crash (FAILED, with `why` where known): its jobs still
        RUNNING, then its parent."""
        close_running_children(self.client, self.experiment_id, parent_id, job_reason)
        self.client.set_tag(parent_id, "reason", INTERRUPTED_SWEEP.format(signal=signal) if signal
                            else why or UNFINISHED_SWEEP)
        self.client.set_terminated(parent_id, "KILLED" if signal else "FAILED")

    def log_machine_peaks(self, parent_id: str, record: Record, dtype: str) -> None:
        """The measured ceilings are the machine's, not a job's: params of the parent run, the first measurement
        of each (one set per GPU when the jobs were spread over GPUs)."""
        from mlflow.exceptions import MlflowException

        metrics = record.metrics
        if "device_peak_tflops" not in metrics:
            return
        gpu = record.tags.get("placement.gpu_index") if record.tags.get("placement.launcher") == "gpus" else None
        suffix = f".gpu{gpu}" if gpu is not None else ""
        peaks = {f"peak.matmul_tflops.{dtype}{suffix}": f"{metrics['device_peak_tflops']:.1f}",
                 f"peak.copy_gbps{suffix}": f"{metrics['device_peak_gbps']:.0f}"}
        for key, value in peaks.items():
            if key in self._peaks_logged:
                continue
            try:
                self.client.log_param(parent_id, key, value)
            except MlflowException:
                pass  # another worker of a parallel sweep logged its own measurement first: keep that one
            self._peaks_logged.add(key)

    # --- a job's run --------------------------------------------------------------------------
    def start_job(self, name: str, tags: dict[str, str], link: Path, start_ms: int | None = None) -> str:
        """A job's RUNNING run, its link file beside its result; params come with its result (finish_job)."""
        run_id = upload.start_run(self.client, self.experiment_id, name, {}, tags, start_ms=start_ms)
        upload.write_link(link, run_id, self.experiment_id, self.uri)
        return run_id

    def finish_job(self, run_id: str, record: Record) -> None:
        upload.finish_job_run(self.client, run_id, record)

    def mark_unrecorded(self, run_id: str, record: Record, error: str) -> None:
        upload.mark_unrecorded(self.client, run_id, record, error)

    def interrupt_job(self, run_id: str, params: dict[str, str], reason: str) -> None:
        """A job stopped while it ran: its params, status `interrupted` and the reason; KILLED."""
        from mlflow.entities import RunTag  # here, not at import (attnbench.store.tracking.upload says why)

        for params_batch, _, tags in upload.batches(upload.param_list(params), [], [RunTag("reason", reason)],
                                                    RunTag("status", "interrupted")):
            self.client.log_batch(run_id, params=params_batch, tags=tags)
        self.client.set_terminated(run_id, "KILLED")

    def earlier_uploads(self, parent_id: str | None, records: list[Record]) -> dict[str, list]:
        """Result id → the active runs that hold it or were started for it, link file or not (an upload killed
        between creating its run and writing its link): what `upload` checks before writing a result again."""
        if parent_id:
            filters = [f"tags.`{PARENT_TAG}` = '{parent_id}'"]
        else:
            filters = [f"tags.`{name}` = '{record.id}'" for record in records for name in (RESULT_ID, UPLOAD_OF)]
        found: dict[str, dict[str, object]] = {}
        for condition in filters:
            token = None
            while True:
                page = self.client.search_runs([self.experiment_id], filter_string=condition, max_results=1000,
                                               page_token=token)
                for run in page:
                    tags = run.data.tags
                    for result_id in {tags.get(UPLOAD_OF), tags.get(RESULT_ID)} - {None}:
                        found.setdefault(result_id, {})[run.info.run_id] = run
                token = page.token
                if not token:
                    break
        return {result_id: list(runs.values()) for result_id, runs in found.items()}

    def upload(self, record: Record, link: Path, parent_id: str | None, earlier: list = ()) -> bool:
        """A saved result as a run, unless a run already holds it (`attnbench sync`); whether it was uploaded.
        `earlier`: its runs found by earlier_uploads. A run left incomplete (no status, or another result's) and
        a second copy are moved to the store's trash; the one kept is what the link file names."""
        runs = {run.info.run_id: run for run in earlier}
        linked = self.linked_run(link)
        if linked is not None:
            runs = {linked.info.run_id: linked} | runs  # the linked one first: kept if it holds the result
        held = [run for run in runs.values() if (run.data.tags.get(RESULT_ID), run.data.tags.get("status"),
                                                 run.info.status) == (record.id, record.status,
                                                                      terminal_status(record.status))]
        keep = held[0] if held else None
        for run_id in runs.keys() - ({keep.info.run_id} if keep else set()):
            self.client.delete_run(run_id)
        if keep is not None:
            if linked is None or linked.info.run_id != keep.info.run_id:
                _link(link, keep.info.run_id, self.experiment_id, self.uri)
            return False
        tags = process_tags() | {k: v for k, v in record.tags.items() if k.startswith("choice.")}
        tags |= {UPLOAD_OF: record.id} | ({PARENT_TAG: parent_id, "hydra.job.num": record.job} if parent_id else {})
        run_id = upload.start_run(self.client, self.experiment_id, record.name, {}, tags,
                                  start_ms=record.started_ms)
        _link(link, run_id, self.experiment_id, self.uri)
        self.finish_job(run_id, record)  # the params too, with the metrics and tags
        return True


def _link(path: Path, run_id: str, experiment_id: str, uri: str) -> None:
    """A job's link file, where its folder can be written: the run is found by its tags where it cannot."""
    try:
        upload.write_link(path, run_id, experiment_id, uri)
    except OSError:
        pass
