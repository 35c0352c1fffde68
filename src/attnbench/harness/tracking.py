"""Hydra callback that records a sweep in MLflow: one parent run per sweep, one child run per job.

A thin adapter: it turns Hydra's hooks and config into calls of the store's sweep recorder
(attnbench.store.recorder), which writes through the store session that `attnbench sync` uses too. Before the
first job the store is checked: a store that cannot be used stops the command with one line, before anything
runs. A sweep's parent run is created once its sweeper has checked every job's config, so a sweep refused for a
bad override leaves no run behind (attnbench.harness.jobs_checked). A tracking failure later loses nothing
(results are in the job folders): one line, the command exits 2.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnbench.core.record import Record, Status
from attnbench.harness import outcome, resume
from attnbench.harness.case import case_key
from attnbench.harness.jobs_checked import jobs_checked, when_jobs_checked
from attnbench.harness.summary import SUMMARY_FILE, count, summary_text
from attnbench.harness.sweep import sweep_run, sweep_title
from attnbench.store import results
from attnbench.store.credentials import mask
from attnbench.store.recorder import SweepRecorder
from attnbench.store.session import StoreSession
from attnbench.store.tracking.names import PARENT_FILE
from attnbench.store.tracking.preflight import StoreProblem, first_line
from attnbench.store.tracking.stale import process_tags
from attnbench.store.tracking.store import artifact_location, job_params, tracking_uri

log = logging.getLogger(__name__)

# Sweepers that call attnbench.harness.jobs_checked once every job of their first batch is valid (the compose-once
# sweeper of conf/config.yaml): under them the parent run waits for it.
SWEEPERS_THAT_SAY_JOBS_CHECKED = ("compose_once",)
OPEN_SWEEP = "the sweep's parent run"


class MlflowTrackingCallback(Callback):
    def __init__(self) -> None:
        self._recorder: SweepRecorder | None = None
        self._uri: str | None = None
        self._sweep_dir: Path | None = None  # the sweep whose parent run this process writes under
        self._folder: Path | None = None  # what `attnbench sync` would upload

    def __reduce__(self):
        # A copy sent to another process (a joblib or submitit worker, with every job) is that process's one
        # instance: it connects to the store once, joins the sweep through the parent file, and at its exit
        # closes only the runs it opened.
        return _this_process_callback, ()

    def _open(self, config: DictConfig, experiment_id: str | None = None) -> SweepRecorder:
        """Connect, or stop the command with one line (exit code 1) if the store cannot be used: Hydra turns
        other exceptions from a callback into warnings and goes on."""
        if self._recorder is None or self._uri != tracking_uri(config):
            self._uri = uri = tracking_uri(config)
            try:
                session = StoreSession.open(uri, config.tracking.experiment, artifact_location(config, uri),
                                            experiment_id, redact=config.tracking.get("redact", False))
                if config.get("resume"):
                    resume.remember_done(session.done_cases())
            except Exception as e:  # noqa: BLE001 - a store that answers but fails is refused the same way
                raise SystemExit(f"attnbench: {e}" if isinstance(e, StoreProblem) else
                                 f"attnbench: MLflow store {mask(uri)} cannot be used: {first_line(e)}") from None
            if self._recorder is None:
                atexit.register(lambda: self._recorder.close_at_exit(outcome.interrupted_by,
                                                                     outcome.stop_reason))
            self._recorder = SweepRecorder(session, self._tracking_failed)
            closed = session.closed_stale
            log.info("Tracking to %s, experiment %s%s", mask(uri), session.experiment_id,
                     f"; closed {closed} runs whose process is gone" if closed else "")
        return self._recorder

    def _tracking_failed(self, what: str, error: BaseException) -> None:
        message = (f"attnbench: tracking failed: {what} in MLflow store {mask(self._uri or '?')}: {first_line(error)}. "
                   f"Every result is saved in its job folder: upload them with `attnbench sync {self._folder}` "
                   "once the store works")
        log.error(message)
        outcome.record_tracking_failure(message)

    # --- sweep ------------------------------------------------------------------------------
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._folder = Path(config.hydra.run.dir).resolve()
        self._open(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._folder = self._sweep_dir = Path(config.hydra.sweep.dir).resolve()
        if config.hydra.runtime.choices.get("hydra/sweeper") in SWEEPERS_THAT_SAY_JOBS_CHECKED:
            # Hydra calls this before any job's config is composed: a parent run opened now would outlive a sweep
            # refused for a bad swept value, and MLflow would be loaded just to refuse it.
            when_jobs_checked(OPEN_SWEEP, lambda: self._open_sweep(config))
        else:  # another sweeper says nothing before its first job, which may run in another process
            self._open_sweep(config)

    def _open_sweep(self, config: DictConfig) -> None:
        """The store checked, then the sweep's parent run (or its earlier one, resumed) and its link file."""
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        recorder = self._open(config)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            recorder.open_sweep(sweep_run(config, sweep_dir), resume.sweep_key(config) if config.resume else None)
        except Exception as e:  # noqa: BLE001
            raise SystemExit(f"attnbench: MLflow store {mask(self._uri)} cannot be used: {first_line(e)}") from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        recorder = self._recorder
        if recorder is None or recorder.parent_id is None:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = sweep_dir / SUMMARY_FILE
        found = results.read_folder(sweep_dir)  # a result file that cannot be read fails the parent, naming it
        count(found)  # the exit code says so too, with the summary callback removed
        records = found.records
        text = summary.read_text() if summary.is_file() else summary_text(records, sweep_title(config, sweep_dir),
                                                                          show=False, damaged=found.damaged)

        def report() -> tuple[list[Path], str]:
            from attnbench.analysis.sweep_report import report_sweep

            done = report_sweep(recorder.session.client, recorder.parent_id, sweep_dir)
            return done.files, done.description

        recorder.end_sweep(records, text, report, found.problem(sweep_dir))
        self.on_run_end(config)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._recorder is not None and self._recorder.failed:
            print(outcome.outcome.tracking_failure, file=sys.stderr)

    # --- job --------------------------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") and resume.done_in(case_key(config)):
            return  # a skipped job has no run: its case's run is the one that finished ok
        if config.hydra.mode == RunMode.MULTIRUN and self._sweep_dir != Path(config.hydra.sweep.dir).resolve():
            self._join_sweep(config)  # a worker process's first job of this sweep
        elif config.hydra.mode == RunMode.MULTIRUN:
            jobs_checked()  # the sweep's parent, if no sweeper opened it yet (one that runs jobs in this process)
        recorder = self._recorder
        choices = {f"choice.{group}": str(choice) for group, choice in config.hydra.runtime.choices.items()
                   if not group.startswith("hydra/") and choice is not None}
        recorder.start_job(_job_key(config), results.run_name(config), process_tags() | choices,
                           job_params(config), Path(config.hydra.runtime.output_dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        record = self._record_of(config, job_return)
        if self._recorder is None or not self._recorder.end_job(_job_key(config), record, config.dtype.value):
            outcome.record_status(record.job, record.status)  # counted even when tracking never started

    def _record_of(self, config: DictConfig, job_return: JobReturn) -> Record:
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, Record):
            return job_return.return_value
        # The task itself raised (the runner never does: a bug). Saved here, so that the job is not lost.
        try:
            exc = job_return.return_value  # a failed job's property raises what the task raised
        except Exception as raised:  # noqa: BLE001
            exc = raised
        job_dir = Path(config.hydra.runtime.output_dir)
        record = Record.begun(_job_key(config), results.run_name(config), job_dir, job_params(config),
                              {"case": case_key(config)})
        record = record.ended(Record(
            Status.error, first_line(exc) if exc else "the task returned nothing",
            traceback="".join(traceback.format_exception(exc)) if isinstance(exc, BaseException) else None))
        results.write(job_dir, record)
        outcome.record_status(record.job, Status.error)
        return record

    def _join_sweep(self, config: DictConfig) -> SweepRecorder:
        """Join the sweep's parent run, in the store and experiment it was created in."""
        self._sweep_dir = Path(config.hydra.sweep.dir).resolve()
        link = json.loads((self._sweep_dir / PARENT_FILE).read_text())
        recorder = self._open(config, experiment_id=link["experiment_id"])
        recorder.join_sweep(link["run_id"])
        return recorder


def _job_key(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.job.num", default="run"))


_instance: MlflowTrackingCallback | None = None


def _this_process_callback() -> MlflowTrackingCallback:
    global _instance
    if _instance is None:
        _instance = MlflowTrackingCallback()
    return _instance
