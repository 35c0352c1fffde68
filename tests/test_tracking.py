"""The MLflow callback in-process: runs are never left RUNNING by a stopped job, and never look finished when
they could not be fully logged."""

from __future__ import annotations

import json
import pickle
import shutil
import threading
import time
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from attnbench.core.record import Record
from attnbench.harness import outcome
from attnbench.harness.jobs_checked import jobs_checked
from attnbench.harness.tracking import MlflowTrackingCallback
from attnbench.store import results
from attnbench.store.tracking import upload


@pytest.fixture(autouse=True)
def fresh_outcome(monkeypatch):
    monkeypatch.setattr(outcome, "outcome", outcome.Outcome())


@pytest.fixture
def started(compose_cfg, tmp_path, empty_store_db):
    """A callback whose job run has been created, that job's config, and its saved result."""
    shutil.copyfile(empty_store_db, tmp_path / "mlflow.db")  # a store of its own, already migrated
    cfg = compose_cfg(f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", return_hydra_config=True)
    job_dir = tmp_path / "outputs"
    with open_dict(cfg):
        cfg.hydra.run.dir = cfg.hydra.runtime.output_dir = str(job_dir)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (job_dir / "run.log").write_text("a log line\n")
    record = Record.begun("run", "default", job_dir, {"seed": "0"}, {"case": "abc"})
    record = record.ended(Record("ok", metrics={"median_us": 1.0}))
    callback = MlflowTrackingCallback()
    callback.on_run_start(cfg)
    callback.on_job_start(cfg)
    (run_id,) = callback._recorder._runs.values()
    return callback, cfg, run_id, JobReturn(status=JobStatus.COMPLETED, _return_value=record)


def _fresh_view(cfg):
    return MlflowClient(tracking_uri=cfg.tracking.uri)


def test_a_stop_signal_while_a_job_is_recorded_leaves_its_run_to_the_exit_hook(started, monkeypatch):
    callback, cfg, run_id, job_return = started

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(upload, "finish_job_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        callback.on_job_end(cfg, job_return)
    assert callback._recorder.session.client.get_run(run_id).info.status == "RUNNING"

    outcome.outcome.interrupted_by = "SIGTERM"  # as the signal handler sets it
    callback._recorder.close_at_exit(outcome.interrupted_by)
    run = callback._recorder.session.client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["status"] == "interrupted" and "SIGTERM" in run.data.tags["reason"]
    assert run.data.params["shape.seq_len"] == str(cfg.shape.seq_len)  # its params, which come with its end
    assert callback._recorder._runs == {}  # closed once: a second exit hook has nothing to do


CALLS = ["log_batch", "log_artifacts", "log_artifact", "set_terminated"]


@pytest.mark.parametrize("store_dies", [False, True], ids=["one-call-fails", "store-dies"])
@pytest.mark.parametrize("call", CALLS)
def test_a_job_that_could_not_be_fully_logged_never_looks_finished(started, monkeypatch, call, store_dies):
    callback, cfg, run_id, job_return = started
    client = callback._recorder.session.client
    broken = {"yes": False}

    def failing(name, method):
        def wrapper(*args, **kwargs):
            if name == call or (store_dies and broken["yes"]):
                broken["yes"] = True
                raise MlflowException(f"{name}: the disk is full")
            return method(*args, **kwargs)
        return wrapper

    for name in ("log_batch", "log_artifacts", "log_artifact", "log_text", "set_tag", "set_terminated"):
        monkeypatch.setattr(client, name, failing(name, getattr(client, name)))
    callback.on_job_end(cfg, job_return)  # never raises: Hydra would only turn it into a warning

    run = _fresh_view(cfg).get_run(run_id)
    assert not (run.info.status == "FINISHED" and run.data.tags.get("status") is None)
    assert run.info.status in (("RUNNING",) if store_dies else ("RUNNING", "FAILED"))  # RUNNING: closed later
    assert "the disk is full" in outcome.outcome.tracking_failure and outcome.outcome.exit_code() == 2


def test_a_job_that_ends_normally_leaves_nothing_for_the_exit_hook(started):
    callback, cfg, run_id, job_return = started
    callback.on_job_end(cfg, job_return)
    callback._recorder.close_at_exit(outcome.interrupted_by)
    run = callback._recorder.session.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
    assert run.data.metrics["median_us"] == 1.0 and outcome.outcome.exit_code() == 0


def test_a_task_that_raised_is_recorded_as_an_error_with_its_traceback(started):
    callback, cfg, run_id, _ = started
    try:
        raise RuntimeError("a bug in the task")
    except RuntimeError as e:  # what Hydra's run_job keeps of a task that raised
        failed = JobReturn(status=JobStatus.FAILED, _return_value=e)
    callback.on_job_end(cfg, failed)
    callback._recorder.close_at_exit(outcome.interrupted_by)
    run = callback._recorder.session.client.get_run(run_id)
    assert run.data.tags["status"] == "error" and "a bug in the task" in run.data.tags["reason"]
    saved = results.read(Path(cfg.hydra.runtime.output_dir))
    assert saved.status == "error" and "RuntimeError: a bug in the task" in saved.traceback
    assert outcome.outcome.exit_code() == 1


def test_a_copy_sent_to_a_worker_starts_afresh(started):
    callback, _, _, _ = started
    callback._recorder.parent_id, callback._recorder.sweep_open = "parent", True
    copy = pickle.loads(pickle.dumps(callback))
    # It joins the sweep through the parent file, and at its exit closes only the runs it opened itself.
    assert copy is not callback and (copy._recorder, copy._sweep_dir) == (None, None)
    callback._recorder.sweep_open = False


# --- in a sweep: a finished job is recorded on a background thread while the next one runs ------------------
@pytest.fixture
def sweep(compose_cfg, tmp_path, empty_store_db):
    """A callback with its sweep's parent run open, and job(num): that job started, its config and its saved
    result."""
    from hydra.types import RunMode

    shutil.copyfile(empty_store_db, tmp_path / "mlflow.db")  # a store of its own, already migrated
    cfg = compose_cfg(f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "multirun")
        cfg.hydra.mode = RunMode.MULTIRUN
    callback = MlflowTrackingCallback()
    callback.on_multirun_start(cfg)
    jobs_checked()  # as the sweeper says once it has checked the jobs' configs: the parent run is opened

    def job(num: int):
        """Job `num` started (its run created on the background thread, maybe not yet), its config and return."""
        job_cfg = cfg.copy()
        job_dir = tmp_path / "multirun" / str(num)
        with open_dict(job_cfg):
            job_cfg.hydra.job.num = num
            job_cfg.hydra.runtime.output_dir = str(job_dir)
        job_dir.mkdir(parents=True)
        record = Record.begun(str(num), f"job {num}", job_dir, {"seed": "0"}, {"case": str(num)})
        record = record.ended(Record("ok", metrics={"median_us": 1.0 + num}))
        results.write(job_dir, record)
        callback.on_job_start(job_cfg)
        return job_cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=record)

    return callback, cfg, job


def _run_of(cfg, num: int) -> str:
    """The run a job's folder links to (written once the run exists)."""
    return json.loads((Path(cfg.hydra.sweep.dir) / str(num) / "mlflow_run.json").read_text())["run_id"]


def _held_until_drained(callback, monkeypatch, finish=None) -> threading.Event:
    """finish_job_run (or `finish`), made to wait until something drains the callback's background work (bounded,
    so that a failing test cannot hang): whatever a test sees before that is what it sees without the drain.
    Returns the event set when the first recording starts waiting (everything queued before it is done)."""
    finish = finish or upload.finish_job_run
    reached, release = threading.Event(), threading.Event()

    def held(*args, **kwargs):
        reached.set()
        release.wait(60)
        return finish(*args, **kwargs)

    drain = callback._recorder._background.drain
    monkeypatch.setattr(upload, "finish_job_run", held)
    monkeypatch.setattr(callback._recorder._background, "drain", lambda *a, **k: (release.set(), drain(*a, **k))[1])
    return reached


def test_in_a_sweep_a_job_is_recorded_while_the_next_one_runs_and_the_sweep_ends_with_both(sweep, monkeypatch):
    callback, cfg, job = sweep
    recording = _held_until_drained(callback, monkeypatch)
    first_cfg, first_return = job(0)
    callback.on_job_end(first_cfg, first_return)  # returns although its recording cannot proceed yet
    assert recording.wait(60) and callback._recorder.session.client.get_run(_run_of(cfg, 0)).info.status == "RUNNING"
    second_cfg, second_return = job(1)  # the next job starts meanwhile
    callback.on_job_end(second_cfg, second_return)
    callback.on_multirun_end(cfg)
    client = _fresh_view(cfg)
    for run_id, median in ((_run_of(cfg, 0), 1.0), (_run_of(cfg, 1), 2.0)):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
        assert run.data.metrics["median_us"] == median
    parent = client.get_run(callback._recorder.parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_ok"] == 2


def test_a_sweep_stopped_while_a_job_is_recorded_records_it_then_closes_the_running_one(sweep, monkeypatch):
    callback, cfg, job = sweep
    _held_until_drained(callback, monkeypatch)
    ended_cfg, ended_return = job(0)
    callback.on_job_end(ended_cfg, ended_return)
    job(1)  # Ctrl-C comes while this one runs (its run is queued behind the recording of the first)
    outcome.outcome.interrupted_by = "SIGINT"
    callback._recorder.close_at_exit(outcome.interrupted_by)
    client = _fresh_view(cfg)
    ended, running = client.get_run(_run_of(cfg, 0)), client.get_run(_run_of(cfg, 1))
    assert ended.info.status == "FINISHED" and ended.data.tags["status"] == "ok"  # what it did, not "interrupted"
    assert running.info.status == "KILLED" and running.data.tags["status"] == "interrupted"
    assert client.get_run(callback._recorder.parent_id).info.status == "KILLED"


def test_a_tracking_failure_on_the_background_thread_still_decides_the_exit_code(sweep, monkeypatch, capsys):
    callback, cfg, job = sweep

    def failing(*args, **kwargs):
        raise MlflowException("the disk is full")

    _held_until_drained(callback, monkeypatch, failing)
    job_cfg, job_return = job(0)
    callback.on_job_end(job_cfg, job_return)
    callback.on_multirun_end(cfg)  # waits for the recording: the failure is known before the exit code is
    assert outcome.outcome.exit_code() == 2 and "the disk is full" in capsys.readouterr().err
    client = _fresh_view(cfg)
    assert client.get_run(_run_of(cfg, 0)).info.status == "FAILED"
    assert client.get_run(callback._recorder.parent_id).info.status == "FAILED"


def test_a_run_that_could_not_be_created_in_the_background_fails_the_tracking_not_the_sweep(sweep, monkeypatch):
    callback, cfg, job = sweep

    def refused(*args, **kwargs):
        raise MlflowException("the database is locked")

    monkeypatch.setattr(callback._recorder.session.client, "create_run", refused)
    job_cfg, job_return = job(0)
    callback.on_job_end(job_cfg, job_return)  # the run never existed: nothing to record, nothing raised
    callback.on_multirun_end(cfg)
    assert outcome.outcome.exit_code() == 2 and "could not create the run of job 0" in outcome.outcome.tracking_failure
    assert not (Path(cfg.hydra.sweep.dir) / "0" / "mlflow_run.json").exists()
    parent = _fresh_view(cfg).get_run(callback._recorder.parent_id)
    assert parent.info.status == "FAILED" and "not every job is recorded" in parent.data.tags["reason"]


def test_a_quick_job_recorded_behind_another_does_not_end_before_its_run_started(sweep, monkeypatch):
    # An `unsupported` job ends milliseconds after it starts, while its run waits on the background thread behind
    # the previous job's recording: its run must start when the job did, not when the thread got to it (the UI
    # showed such runs with negative durations).
    callback, cfg, job = sweep
    _held_until_drained(callback, monkeypatch)
    first_cfg, first_return = job(0)
    callback.on_job_end(first_cfg, first_return)  # its recording holds the thread until the sweep ends
    quick_cfg, _ = job(1)
    record = Record.begun("1", "job 1", Path(quick_cfg.hydra.runtime.output_dir), {"seed": "0"}, {"case": "1"})
    record = record.ended(Record("unsupported", "no kernel for this device"))
    while int(time.time() * 1000) <= record.ended_ms:  # the clock past its end, so that a later start shows
        time.sleep(0.001)
    callback.on_job_end(quick_cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=record))
    callback.on_multirun_end(cfg)
    run = _fresh_view(cfg).get_run(_run_of(cfg, 1))
    assert run.data.tags["status"] == "unsupported"
    assert run.info.start_time <= record.started_ms <= record.ended_ms == run.info.end_time
