"""The MLflow callback in-process: runs are never left RUNNING, whatever stops a job."""

from __future__ import annotations

import pickle
import sys

import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow.exceptions import MlflowException

from attnbench.tracking.callback import INTERRUPTED_JOB, MlflowTrackingCallback

OK = {"status": "ok", "reason": "", "metrics": {"median_us": 1.0}, "tags": {}}


@pytest.fixture
def started(compose_cfg, tmp_path):
    """A callback whose job run has been created, and that job's config."""
    cfg = compose_cfg(f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", return_hydra_config=True)
    callback = MlflowTrackingCallback()
    callback.on_job_start(cfg)
    (run_id,) = callback._run_ids.values()
    return callback, cfg, run_id


def _fail_with(exc):
    def record(*args):
        raise exc
    return record


def test_ctrl_c_while_a_job_is_recorded_leaves_its_run_to_the_exit_hook(started, monkeypatch):
    callback, cfg, run_id = started
    monkeypatch.setattr(callback, "_record", _fail_with(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        callback.on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=OK))
    assert callback._client.get_run(run_id).info.status == "RUNNING"

    monkeypatch.setattr(sys, "last_value", KeyboardInterrupt(), raising=False)  # as the interpreter sets it
    callback._close_open_runs_at_exit()
    run = callback._client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["status"] == "interrupted" and run.data.tags["reason"] == INTERRUPTED_JOB
    assert callback._run_ids == {}  # closed once: a second exit hook has nothing to do


def test_a_tracking_failure_while_recording_still_closes_the_run(started, monkeypatch):
    callback, cfg, run_id = started
    monkeypatch.setattr(callback, "_record", _fail_with(MlflowException("store went away")))
    with pytest.raises(MlflowException):  # Hydra turns it into a warning; the sweep goes on
        callback.on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=OK))
    assert callback._client.get_run(run_id).info.status == "FINISHED"
    assert callback._run_ids == {}


def test_a_job_that_ends_normally_leaves_nothing_for_the_exit_hook(started, monkeypatch):
    callback, cfg, run_id = started
    monkeypatch.setattr(callback, "_record", lambda *args: None)
    callback.on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=OK))
    callback._close_open_runs_at_exit()
    assert callback._client.get_run(run_id).info.status == "FINISHED"


def test_a_copy_sent_to_a_worker_starts_afresh(started):
    callback, _, _ = started
    callback._parent_id, callback._sweep_open = "parent", True
    copy = pickle.loads(pickle.dumps(callback))
    # It joins the sweep through the parent file, and at its exit closes only the runs it opened itself.
    assert (copy._client, copy._parent_id, copy._run_ids, copy._sweep_open) == (None, None, {}, False)
    callback._sweep_open = False
