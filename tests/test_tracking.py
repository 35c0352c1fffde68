"""The MLflow callback in-process: runs are never left RUNNING by a stopped job, and never look finished when
they could not be fully logged."""

from __future__ import annotations

import pickle

import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from attnbench import outcome, results
from attnbench.tracking import callback as callback_module
from attnbench.tracking.callback import MlflowTrackingCallback


@pytest.fixture(autouse=True)
def fresh_outcome(monkeypatch):
    monkeypatch.setattr(outcome, "outcome", outcome.Outcome())


@pytest.fixture
def started(compose_cfg, tmp_path):
    """A callback whose job run has been created, that job's config, and its saved result."""
    cfg = compose_cfg(f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", return_hydra_config=True)
    job_dir = tmp_path / "outputs"
    with open_dict(cfg):
        cfg.hydra.run.dir = cfg.hydra.runtime.output_dir = str(job_dir)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (job_dir / "run.log").write_text("a log line\n")
    record = results.new_record("run", "default", job_dir, {"seed": "0"}, {"case": "abc"})
    record = results.finish(record, {"status": "ok", "reason": "", "metrics": {"median_us": 1.0}, "tags": {}})
    callback = MlflowTrackingCallback()
    callback.on_run_start(cfg)
    callback.on_job_start(cfg)
    (run_id,) = callback._runs.values()
    return callback, cfg, run_id, JobReturn(status=JobStatus.COMPLETED, _return_value=record)


def _fresh_view(cfg):
    return MlflowClient(tracking_uri=cfg.tracking.uri)


def test_a_stop_signal_while_a_job_is_recorded_leaves_its_run_to_the_exit_hook(started, monkeypatch):
    callback, cfg, run_id, job_return = started

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(callback_module, "finish_job_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        callback.on_job_end(cfg, job_return)
    assert callback._client.get_run(run_id).info.status == "RUNNING"

    outcome.outcome.interrupted_by = "SIGTERM"  # as the signal handler sets it
    callback._close_open_runs_at_exit()
    run = callback._client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["status"] == "interrupted" and "SIGTERM" in run.data.tags["reason"]
    assert run.data.params["shape.seq_len"] == str(cfg.shape.seq_len)  # its params, which come with its end
    assert callback._runs == {}  # closed once: a second exit hook has nothing to do


CALLS = ["log_batch", "log_artifacts", "log_artifact", "set_terminated"]


@pytest.mark.parametrize("store_dies", [False, True], ids=["one-call-fails", "store-dies"])
@pytest.mark.parametrize("call", CALLS)
def test_a_job_that_could_not_be_fully_logged_never_looks_finished(started, monkeypatch, call, store_dies):
    callback, cfg, run_id, job_return = started
    client = callback._client
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
    callback._close_open_runs_at_exit()
    run = callback._client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
    assert run.data.metrics["median_us"] == 1.0 and outcome.outcome.exit_code() == 0


def test_a_copy_sent_to_a_worker_starts_afresh(started):
    callback, _, _, _ = started
    callback._parent_id, callback._sweep_open = "parent", True
    copy = pickle.loads(pickle.dumps(callback))
    # It joins the sweep through the parent file, and at its exit closes only the runs it opened itself.
    assert (copy._client, copy._parent_id, copy._runs, copy._sweep_open) == (None, None, {}, False)
    callback._sweep_open = False
