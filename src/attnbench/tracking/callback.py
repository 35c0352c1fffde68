"""Hydra callback that records a sweep in MLflow: one parent run per sweep, one child run per job.

Tracking lives here rather than in the task, so the timing code knows nothing about MLflow. The parent
run is created in on_multirun_start, before any job: parallel launchers that each created a fresh SQLite
store at once would corrupt its schema. Its id is written to the sweep folder, so jobs in other
processes (joblib, submitit) find it without relying on MLFLOW_RUN_ID.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import sys
import threading
import time
import traceback
from itertools import zip_longest
from pathlib import Path
from typing import Any

import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow.entities import Metric, Param, RunTag
from omegaconf import DictConfig, OmegaConf

from attnbench.environment import environment
from attnbench.report import render, summary_table
from attnbench.tracking.store import (
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE,
    artifact_location,
    chunks,
    flatten,
    job_params,
    project_root,
    safe_name,
    tracking_uri,
)

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent_run.json"
UNFINISHED_SWEEP = "the sweep stopped before all its jobs ran (a bad override or a crash): its output says why"
INTERRUPTED_SWEEP = "interrupted (Ctrl-C) before all its jobs ran"
INTERRUPTED_JOB = "the process ended while this job ran (Ctrl-C or a crash)"
EXIT_TIMEOUT_S = 15  # closing runs at exit: a tracking server that is down must not hold the exit for minutes
_errors = {"count": 0}


def sweep_had_errors() -> bool:
    """Whether any job of this process's run or sweep ended as `error` (for the exit code)."""
    return _errors["count"] > 0


def _job_key(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.job.num", default="run"))


def job_run_name(config: DictConfig) -> str:
    # Short enough for the UI's narrow name column; shape, dtype and the rest are param columns.
    name = str(config.backend.name)
    if config.compile:
        mode = config.compile_mode.value
        name += "+compile" if mode == "default" else f"+{mode}"
    return name


def parent_run_name(config: DictConfig) -> str:
    experiment = config.hydra.runtime.choices.get("experiment")
    return experiment or f"sweep {Path(config.hydra.sweep.dir).name}"


class MlflowTrackingCallback(Callback):
    def __init__(self) -> None:
        self._client = None
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        self._run_ids: dict[str, str] = {}  # per job: a threaded launcher shares this instance between jobs
        self._peaks_logged: set[str] = set()
        self._sweep_open = False  # the parent run is open: closed by on_multirun_end, else at exit

    def __getstate__(self) -> dict:
        # A copy sent to another process (joblib, submitit workers) starts afresh: it joins the sweep through
        # the parent file and, at its exit, closes only the runs it opened.
        return MlflowTrackingCallback().__dict__

    # --- connection -------------------------------------------------------------------------
    def _connect(self, config: DictConfig, uri: str | None = None, experiment_id: str | None = None):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            uri = uri or tracking_uri(config)
            client = MlflowClient(tracking_uri=uri)
            if experiment_id is None:
                name = config.tracking.experiment
                experiment = client.get_experiment_by_name(name)
                experiment_id = (
                    experiment.experiment_id if experiment
                    else client.create_experiment(name, artifact_location=artifact_location(config, uri))
                )
            self._experiment_id, self._client = experiment_id, client
            atexit.register(self._close_open_runs_at_exit)
            log.info("Tracking to %s, experiment %s", uri, experiment_id)
        return self._client

    # --- sweep ------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        client = self._connect(config)
        overrides = " ".join(config.hydra.overrides.task)
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        parent = client.create_run(
            self._experiment_id,
            run_name=parent_run_name(config),
            tags={
                "sweep.dir": str(sweep_dir),
                "mlflow.note.content": f"python run.py -m {overrides}".strip()[:MAX_TAG_VALUE],
            },
        )
        self._parent_id = parent.info.run_id
        self._sweep_open = True
        # Written before anything else can fail: jobs in other processes find their parent here.
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(json.dumps({
            "run_id": self._parent_id, "experiment_id": self._experiment_id, "tracking_uri": tracking_uri(config),
        }))
        sweep = {str(k): str(v) for k, v in (config.hydra.sweeper.get("params") or {}).items()}
        self._log_params(parent.info.run_id, flatten({"sweep": sweep | {"overrides": overrides or "(none)"}}))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._parent_id is None:
            return
        client = self._connect(config)
        parent_status = "FAILED"  # unless the summary below is made
        try:
            children = client.search_runs(
                [self._experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self._parent_id}'",
                max_results=10000,
            )
            statuses = [r.data.tags.get("status", "unknown") for r in children]
            # Jobs in other processes count here; `unknown` is a job whose result never reached the store.
            failed = statuses.count("error") + statuses.count("unknown")
            _errors["count"] = max(_errors["count"], failed)
            self._summarise(self._parent_id, children, parent_run_name(config))
            for status in set(statuses):
                client.log_metric(self._parent_id, f"jobs_{status}", statuses.count(status))
            parent_status = "FAILED" if "error" in statuses else "FINISHED"
        finally:
            self._sweep_open = False
            client.set_terminated(self._parent_id, parent_status)

    # --- runs left open at exit -------------------------------------------------------------
    def _close_open_runs_at_exit(self) -> None:
        """Close what a stopped sweep or job left RUNNING: a bad override found by the sweeper's validation, Ctrl-C
        (KeyboardInterrupt passes through Hydra), a crash. Not a kill -9: nothing runs then."""
        if not self._run_ids and not self._sweep_open:
            return
        # Set by the interpreter for an exception that ended the program, before atexit handlers run.
        ctrl_c = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
        closer = threading.Thread(target=self._close_open_runs, args=(ctrl_c,), daemon=True)
        closer.start()
        try:
            closer.join(timeout=EXIT_TIMEOUT_S)
        except KeyboardInterrupt:  # a second Ctrl-C: the user wants out now
            pass
        if closer.is_alive():
            log.warning("Gave up closing the open MLflow runs: the tracking store did not answer")

    def _close_open_runs(self, ctrl_c: bool) -> None:
        try:
            for key, run_id in list(self._run_ids.items()):
                self._client.set_tag(run_id, "status", "interrupted")
                self._client.set_tag(run_id, "reason", INTERRUPTED_JOB)
                self._client.set_terminated(run_id, "KILLED")
                del self._run_ids[key]
            if self._sweep_open:
                self._client.set_tag(self._parent_id, "reason", INTERRUPTED_SWEEP if ctrl_c else UNFINISHED_SWEEP)
                self._client.set_terminated(self._parent_id, "KILLED" if ctrl_c else "FAILED")
                self._sweep_open = False
        except Exception as exc:  # at exit, a store that went away can only be reported
            log.warning("Could not close the open MLflow runs: %s", exc)

    # --- job --------------------------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        tags = {}
        if config.hydra.mode == RunMode.MULTIRUN:
            if self._parent_id is None:  # a worker that did not inherit this instance from the sweep
                self._adopt_parent(config)
            tags["hydra.job.num"] = str(config.hydra.job.num)
            tags["mlflow.parentRunId"] = self._parent_id
        client = self._connect(config)
        for group, choice in config.hydra.runtime.choices.items():
            if not group.startswith("hydra/") and choice is not None:
                tags[f"choice.{group}"] = str(choice)
        run = client.create_run(self._experiment_id, run_name=job_run_name(config), tags=tags)
        self._run_ids[_job_key(config)] = run.info.run_id
        self._log_params(run.info.run_id, job_params(config))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        result = self._result_of(job_return)
        if result["status"] == "error":  # first: the exit code must not depend on tracking working
            _errors["count"] += 1
        key = _job_key(config)
        run_id = self._run_ids.get(key)
        if run_id is None:
            return
        try:
            self._record(config, run_id, result)
        except Exception:  # a tracking failure must not leave the run RUNNING (Ctrl-C leaves it to the exit hook)
            self._close_job_run(key, result)
            raise
        self._close_job_run(key, result)
        self._log_device_peaks(config, result["metrics"])
        if config.hydra.mode == RunMode.RUN:
            self._summarise(None, [self._client.get_run(run_id)], job_run_name(config))

    def _close_job_run(self, key: str, result: dict) -> None:
        self._client.set_terminated(self._run_ids[key], "FAILED" if result["status"] == "error" else "FINISHED")
        del self._run_ids[key]

    def _record(self, config: DictConfig, run_id: str, result: dict) -> None:
        client = self._client
        device = torch.device(result["tags"].get("device", "cpu"))
        tags = {"status": result["status"], "reason": result["reason"]}
        tags |= environment(device, project_root(config)) | result["tags"]
        now = int(time.time() * 1000)
        metrics = [Metric(safe_name(k), float(v), now, 0) for k, v in result["metrics"].items()
                   if v is not None and math.isfinite(float(v))]
        tag_list = [RunTag(safe_name(k), str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
        # One transaction for everything when it fits MLflow's per-batch limits (1000 entities, of them at most
        # 100 tags).
        for metric_batch, tag_batch in zip_longest(chunks(metrics, 900), chunks(tag_list, 100), fillvalue=[]):
            client.log_batch(run_id, metrics=metric_batch, tags=tag_batch)

        output_dir = Path(config.hydra.runtime.output_dir)
        hydra_dir = output_dir / (config.hydra.output_subdir or ".hydra")
        if hydra_dir.is_dir():
            client.log_artifacts(run_id, str(hydra_dir), artifact_path=".hydra")
        job_log = output_dir / f"{config.hydra.job.name}.log"
        if job_log.is_file():
            client.log_artifact(run_id, str(job_log))
        if result.get("traceback"):
            client.log_text(run_id, result["traceback"], "traceback.txt")

    # --- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _result_of(job_return: JobReturn) -> dict:
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
            return job_return.return_value
        # The task itself raised (attnbench.job never does; a bug or a KeyboardInterrupt-like exit could).
        exc = job_return._return_value
        return {
            "status": "error",
            "reason": f"{type(exc).__name__}: {exc}".splitlines()[0] if exc else "the task returned nothing",
            "metrics": {},
            "tags": {},
            "traceback": "".join(traceback.format_exception(exc)) if isinstance(exc, BaseException) else None,
        }

    def _log_device_peaks(self, config: DictConfig, metrics: dict) -> None:
        """The measured ceilings are a property of the machine, not of a job: params of the parent run."""
        if self._parent_id is None or "device_peak_tflops" not in metrics:
            return
        from mlflow.exceptions import MlflowException

        params = {f"peak.matmul_tflops.{config.dtype.value}": f"{metrics['device_peak_tflops']:.1f}",
                  "peak.copy_gbps": f"{metrics['device_peak_gbps']:.0f}"}
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
        record = json.loads((Path(config.hydra.sweep.dir).resolve() / PARENT_FILE).read_text())
        self._parent_id = record["run_id"]
        self._connect(config, uri=record["tracking_uri"], experiment_id=record["experiment_id"])

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for batch in chunks(items, MAX_PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=batch)

    def _summarise(self, parent_id: str | None, runs: list, title: str) -> None:
        text = render(summary_table(runs, title))
        if parent_id is not None:
            self._client.log_text(parent_id, text, "summary.txt")
