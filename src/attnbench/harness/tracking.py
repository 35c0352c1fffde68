"""Hydra callback that records a sweep in MLflow: one parent run per sweep, one child run per job.

Tracking lives here rather than in the task, so the timing code knows nothing about MLflow. Before the first job
the store is checked (attnbench.store.tracking.preflight): a store that cannot be used stops the command with one line,
before anything runs. After that, results are saved in the job folders before they reach this callback, so a
tracking failure loses nothing: it is reported in one line, tracking stops for the rest of the sweep, and the
command exits 2 (upload later with `attnbench sync`). The parent run is created before any job, and its id is
written to the sweep folder, so jobs in other processes (joblib, submitit) find it. In the sweep's own process a
job's run is created and recorded on a background thread, in order, while the jobs run
(attnbench.store.tracking.background); the end of the sweep and the exit wait for it.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import traceback
from functools import partial
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow.entities import RunTag
from omegaconf import DictConfig, OmegaConf

from attnbench.core.record import Record, Status
from attnbench.harness import outcome, resume
from attnbench.harness.case import case_key
from attnbench.harness.summary import SUMMARY_FILE, summary_text
from attnbench.harness.sweep import sweep_run, sweep_title
from attnbench.store import results
from attnbench.store.credentials import mask
from attnbench.store.tracking.background import Background
from attnbench.store.tracking.names import PARENT_FILE, RUN_FILE
from attnbench.store.tracking.preflight import StoreProblem, first_line, open_store
from attnbench.store.tracking.stale import close_running_children, close_stale_runs, is_gone, process_tags
from attnbench.store.tracking.store import artifact_location, job_params, tracking_uri
from attnbench.store.tracking.upload import (
    batches,
    finish_job_run,
    finish_parent,
    mark_unrecorded,
    param_list,
    start_parent,
    start_run,
    write_link,
)

log = logging.getLogger(__name__)

UNFINISHED_SWEEP = "the sweep stopped before all its jobs ran (a bad override or a crash): its output says why"
INTERRUPTED_SWEEP = "stopped by {signal} before all its jobs ran"
INTERRUPTED_JOB = "stopped by {signal} while this job ran"
EXIT_TIMEOUT_S = 15  # closing runs at exit: a tracking server that is down must not hold the exit for minutes


def _job_key(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.job.num", default="run"))


def _job_dir(config: DictConfig) -> Path:
    return Path(config.hydra.runtime.output_dir)


class MlflowTrackingCallback(Callback):
    def __init__(self) -> None:
        self._client = None
        self._uri: str | None = None
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        self._parent_dir: Path | None = None  # the sweep folder whose parent run this is
        self._exit_hook = False
        self._sweep_open = False  # the parent run is open: closed by on_multirun_end, else at exit
        self._runs: dict[str, str] = {}  # job → its open run; a threaded launcher shares this instance
        self._tracked: set[str] = set()  # jobs whose run is created (or queued to be) and not yet recorded
        self._params: dict[str, dict[str, str]] = {}  # job → its params, logged when it ends (or at exit)
        self._peaks_logged: set[str] = set()
        self._failed = False  # tracking failed once: the rest of the sweep is only saved locally
        self._folder: Path | None = None  # what `attnbench sync` would upload
        self._background = Background("attnbench-tracking")  # finished jobs recorded while the next one runs

    def __reduce__(self):
        # A copy sent to another process (a joblib or submitit worker, with every job) is that process's one
        # instance: it connects to the store once, joins the sweep through the parent file, and at its exit
        # closes only the runs it opened.
        return _this_process_callback, ()

    # --- store ------------------------------------------------------------------------------
    def _open(self, config: DictConfig, experiment_id: str | None = None) -> None:
        """Connect, or stop the command with one line if the store cannot be used."""
        if self._client is not None and self._uri == tracking_uri(config):
            return
        self._uri = tracking_uri(config)
        try:
            client, found_id = open_store(self._uri, config.tracking.experiment, artifact_location(config, self._uri))
            self._client, self._experiment_id = client, experiment_id or found_id
            closed = close_stale_runs(client, self._experiment_id)
            if config.get("resume"):
                resume.remember_done(_done_cases(client, self._experiment_id))
        except Exception as e:  # noqa: BLE001 - a store that answers but fails is refused the same way
            self._refuse(e)
        if not self._exit_hook:
            atexit.register(self._close_open_runs_at_exit)
            self._exit_hook = True
        log.info("Tracking to %s, experiment %s%s", mask(self._uri), self._experiment_id,
                 f"; closed {closed} runs whose process is gone" if closed else "")

    def _refuse(self, error: Exception) -> None:
        """Stop the command before any job: one line, exit code 1 (Hydra turns other exceptions from a callback
        into warnings and goes on)."""
        problem = error if isinstance(error, StoreProblem) else (
            f"MLflow store {mask(self._uri or '?')} cannot be used: {first_line(error)}")
        raise SystemExit(f"attnbench: {problem}") from None

    def _tracking_failed(self, what: str, error: BaseException) -> None:
        message = (f"attnbench: tracking failed: {what} in MLflow store {mask(self._uri or '?')}: {first_line(error)}. "
                   f"Every result is saved in its job folder: upload them with `attnbench sync {self._folder}` "
                   "once the store works")
        if not self._failed:
            log.error(message)
        self._failed = True
        outcome.record_tracking_failure(message)

    # --- sweep ------------------------------------------------------------------------------
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._folder = Path(config.hydra.run.dir).resolve()
        self._open(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self._folder = self._parent_dir = Path(config.hydra.sweep.dir).resolve()
        self._open(config)
        try:
            self._parent_id = (config.resume and self._reopen_parent(resume.sweep_key(config), sweep_dir)) or (
                start_parent(self._client, self._experiment_id, sweep_run(config, sweep_dir)))
        except Exception as e:  # noqa: BLE001
            self._refuse(e)
        self._sweep_open = True
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_link(sweep_dir / PARENT_FILE, self._parent_id, self._experiment_id, self._uri)

    def _reopen_parent(self, key: str, sweep_dir: Path) -> str | None:
        """The latest parent of this sweep, open again for the resumed jobs (unless its process still runs it)."""
        found = self._client.search_runs([self._experiment_id], filter_string=f"tags.`sweep.key` = '{key}'",
                                         order_by=["attributes.start_time DESC"], max_results=1)
        if not found or (found[0].info.status == "RUNNING" and not is_gone(found[0].data.tags)):
            return None
        parent = found[0].info.run_id
        self._client.update_run(parent, status="RUNNING")
        if "reason" in found[0].data.tags:  # why it stopped last time: no longer true
            self._client.delete_tag(parent, "reason")
        for name, value in process_tags().items() | {"sweep.resumed_dir": str(sweep_dir)}.items():
            self._client.set_tag(parent, name, value)
        log.info("Resuming sweep %s (parent run %s)", key, parent)
        return parent

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._parent_id is None:
            return
        self._background.drain()  # every job recorded before the report reads them and the parent closes
        self._sweep_open = False
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = sweep_dir / SUMMARY_FILE
        records = results.read_all(sweep_dir)
        try:
            if self._failed:  # one bounded attempt to say so on the parent; `attnbench sync` completes it
                self._client.set_tag(self._parent_id, "reason", "tracking failed: not every job is recorded")
                self._client.set_terminated(self._parent_id, "FAILED")
            else:
                self._report(sweep_dir)
                text = (summary.read_text() if summary.is_file()
                        else summary_text(records, sweep_title(config, sweep_dir), show=False))
                finish_parent(self._client, self._parent_id, records, text)
        except Exception as e:  # noqa: BLE001
            self._tracking_failed("could not close the sweep's parent run", e)
        if self._failed:
            print(outcome.outcome.tracking_failure, file=sys.stderr)

    def _report(self, sweep_dir: Path) -> None:
        """The sweep's report (attnbench.analysis.sweep_report), before its parent closes: a closed parent is complete.
        Only the report is lost if it fails: the jobs' results, their runs and the exit code stay as they are."""
        try:
            from attnbench.analysis.sweep_report import report_sweep

            report_sweep(self._client, self._parent_id, sweep_dir)
        except Exception as e:  # noqa: BLE001 - a report is a view of results that are already recorded
            log.warning("attnbench: the sweep's report failed (%s); its results are recorded: `attnbench report %s` "
                        "writes it again", first_line(e), self._parent_id)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._failed:
            print(outcome.outcome.tracking_failure, file=sys.stderr)

    # --- job --------------------------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self._failed or (config.get("resume") and resume.done_in(case_key(config))):
            return  # a skipped job has no run: its case's run is the one that finished ok
        tags = process_tags()
        if config.hydra.mode == RunMode.MULTIRUN:
            if self._parent_dir != Path(config.hydra.sweep.dir).resolve():  # a worker's first job of this sweep
                self._adopt_parent(config)
            tags |= {"hydra.job.num": str(config.hydra.job.num), "mlflow.parentRunId": self._parent_id}
        for group, choice in config.hydra.runtime.choices.items():
            if not group.startswith("hydra/") and choice is not None:
                tags[f"choice.{group}"] = str(choice)
        key = _job_key(config)
        self._tracked.add(key)
        self._in_order(partial(self._start_job, key, results.run_name(config), tags, job_params(config),
                               _job_dir(config)))

    def _start_job(self, key: str, name: str, tags: dict[str, str], params: dict[str, str], job_dir: Path) -> None:
        if self._failed:  # an earlier call failed: the rest of the sweep is saved in its job folders only
            return
        try:  # the params come with the job's results, in the same call as its metrics and tags
            run_id = start_run(self._client, self._experiment_id, name, {}, tags)
        except Exception as e:  # noqa: BLE001
            self._tracking_failed(f"could not create the run of job {key}", e)
            return
        self._runs[key] = run_id
        self._params[key] = params
        write_link(job_dir / RUN_FILE, run_id, self._experiment_id, self._uri)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        key = _job_key(config)
        if key not in self._tracked:
            if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, Record):
                # counted even when tracking never started
                outcome.record_status(key, job_return.return_value.status)
            return
        self._tracked.discard(key)
        record = self._record_of(config, job_return)
        self._in_order(partial(self._record_job, key, record, self._device_peaks(config, record)))

    def _in_order(self, work) -> None:
        if self._sweep_open:  # the sweep's process: on with the jobs while the store is written
            self._background.submit(work)
        else:  # a worker process (joblib, submitit): the sweep may end, and read the store, once its task returns
            work()

    def _record_job(self, key: str, record: Record, peaks: dict[str, str]) -> None:
        run_id = self._runs.get(key)
        if run_id is None:  # its run could not be created (said once): the result is in its job folder
            outcome.record_status(key, record.status)
            return
        try:
            finish_job_run(self._client, run_id, record)
            self._log_device_peaks(peaks)
        except Exception as e:  # noqa: BLE001 - the result is saved; tracking is what failed
            self._tracking_failed(f"could not record job {key}", e)
            try:
                mark_unrecorded(self._client, run_id, record, first_line(e))
            except Exception:  # noqa: BLE001 - left RUNNING: the next sweep closes it as KILLED
                pass
        del self._runs[key]  # not on Ctrl-C: the exit hook closes that run
        self._params.pop(key, None)

    # --- runs left open at exit -------------------------------------------------------------
    def _close_open_runs_at_exit(self) -> None:
        """Close what a stopped sweep or job left RUNNING: a bad override found by the sweeper's validation, a
        signal, a crash. Not a kill -9: nothing runs then (the next sweep closes those runs)."""
        if self._failed or (not self._runs and not self._sweep_open):
            return
        closer = threading.Thread(target=self._close_open_runs, daemon=True)
        closer.start()
        try:
            closer.join(timeout=EXIT_TIMEOUT_S)
        except KeyboardInterrupt:  # a second Ctrl-C: the user wants out now
            pass
        if closer.is_alive():
            log.warning("Gave up closing the open MLflow runs: the tracking store did not answer")

    def _close_open_runs(self) -> None:
        self._background.drain()  # finished jobs first: their results, not "interrupted", are what they did
        signal = outcome.interrupted_by()
        try:
            for key, run_id in list(self._runs.items()):
                reason = RunTag("reason", INTERRUPTED_JOB.format(signal=signal or "a crash"))
                for params, _, tags in batches(param_list(self._params.get(key, {})), [], [reason],
                                               RunTag("status", "interrupted")):
                    self._client.log_batch(run_id, params=params, tags=tags)
                self._client.set_terminated(run_id, "KILLED")
                del self._runs[key]
            if self._sweep_open:  # this process runs the sweep: the jobs that other processes ran stop with it
                close_running_children(self._client, self._experiment_id, self._parent_id,
                                       INTERRUPTED_JOB.format(signal=signal or "a crash"))
                reason = INTERRUPTED_SWEEP.format(signal=signal) if signal else UNFINISHED_SWEEP
                self._client.set_tag(self._parent_id, "reason", reason)
                self._client.set_terminated(self._parent_id, "KILLED" if signal else "FAILED")
                self._sweep_open = False
        except Exception as e:  # noqa: BLE001 - at exit, a store that went away can only be reported
            log.warning("Could not close the open MLflow runs: %s", first_line(e))

    # --- helpers ----------------------------------------------------------------------------
    def _record_of(self, config: DictConfig, job_return: JobReturn) -> Record:
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, Record):
            return job_return.return_value
        # The task itself raised (the runner never does: a bug). Saved here, so that the job is not lost.
        try:
            exc = job_return.return_value  # a failed job's property raises what the task raised
        except Exception as raised:  # noqa: BLE001
            exc = raised
        record = Record.begun(_job_key(config), results.run_name(config), _job_dir(config), job_params(config),
                              {"case": case_key(config)})
        record = record.ended(Record(
            Status.error, first_line(exc) if exc else "the task returned nothing",
            traceback="".join(traceback.format_exception(exc)) if isinstance(exc, BaseException) else None))
        results.write(_job_dir(config), record)
        outcome.record_status(record.job, Status.error)
        return record

    def _device_peaks(self, config: DictConfig, record: Record) -> dict[str, str]:
        """The measured ceilings are a property of the machine, not of a job: params of the parent run (one set
        per GPU when the jobs were spread over GPUs)."""
        metrics = record.metrics
        if self._parent_id is None or "device_peak_tflops" not in metrics:
            return {}
        gpu = record.tags.get("placement.gpu_index") if record.tags.get("placement.launcher") == "gpus" else None
        suffix = f".gpu{gpu}" if gpu is not None else ""
        return {f"peak.matmul_tflops.{config.dtype.value}{suffix}": f"{metrics['device_peak_tflops']:.1f}",
                f"peak.copy_gbps{suffix}": f"{metrics['device_peak_gbps']:.0f}"}

    def _log_device_peaks(self, params: dict[str, str]) -> None:
        from mlflow.exceptions import MlflowException

        for key, value in params.items():
            if key in self._peaks_logged:
                continue
            try:
                self._client.log_param(self._parent_id, key, value)
            except MlflowException:
                pass  # another worker of a parallel sweep logged its own measurement first: keep that one
            self._peaks_logged.add(key)

    def _adopt_parent(self, config: DictConfig) -> None:
        """Join the sweep's parent run, in the store and experiment it was created in."""
        self._parent_dir = Path(config.hydra.sweep.dir).resolve()
        link = json.loads((self._parent_dir / PARENT_FILE).read_text())
        self._parent_id = link["run_id"]
        self._open(config, experiment_id=link["experiment_id"])


_instance: MlflowTrackingCallback | None = None


def _this_process_callback() -> MlflowTrackingCallback:
    global _instance
    if _instance is None:
        _instance = MlflowTrackingCallback()
    return _instance


def _done_cases(client, experiment_id: str) -> dict[str, str]:
    """case → run, for every run of the experiment that finished ok."""
    done: dict[str, str] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string="tags.status = 'ok'", max_results=1000,
                                  page_token=token)
        for run in page:
            if "case" in run.data.tags:
                done.setdefault(run.data.tags["case"], run.info.run_id)
        token = page.token
        if not token:
            return done
