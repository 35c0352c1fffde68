"""The store is checked before the first job: an unusable one is refused in one line, in seconds; a fresh SQLite
store survives sweeps started together."""

from __future__ import annotations

import shutil
import socket
import sqlite3

import pytest
from mlflow.tracking import MlflowClient

from attnbench.store.tracking.preflight import StoreProblem, open_store
from conftest import FAST_TIMING, run_script, start_script, tracked_runs

TINY = ["shape=tiny", "device=cpu", *FAST_TIMING]


def _deleted_experiment(tmp_path, empty_db):
    shutil.copyfile(empty_db, tmp_path / "mlflow.db")  # a store as after its first use (conftest: `store`)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    client.delete_experiment(client.create_experiment("attnbench"))
    return f"sqlite:///{tmp_path}/mlflow.db", "attnbench"


def _corrupt_file(tmp_path, _):
    (tmp_path / "mlflow.db").write_bytes(b"this is not a database" * 100)
    return f"sqlite:///{tmp_path}/mlflow.db", "attnbench"


@pytest.mark.parametrize("store, expected", [
    (lambda tmp, _: ("", "attnbench"), "is empty"),
    (lambda tmp, _: ("not-a-uri", "attnbench"), "is not a URI"),
    (lambda tmp, _: ("sqlite:///relative/mlflow.db", "attnbench"), "is not absolute"),
    (lambda tmp, _: (f"sqlite:///{tmp}/missing/mlflow.db", "attnbench"), "{tmp}/missing does not exist"),
    (lambda tmp, _: (f"sqlite:///{tmp}/mlflow.db", ""), "tracking.experiment=''"),
    (lambda tmp, _: (f"sqlite:///{tmp}/mlflow.db", "  "), "tracking.experiment='  '"),
    (_deleted_experiment, "is deleted: restore it"),
    (_corrupt_file, "file is not a database"),
], ids=["empty", "not-a-uri", "relative", "missing-folder", "no-name", "blank-name", "deleted", "corrupt"])
def test_an_unusable_store_is_refused_naming_the_problem(tmp_path, empty_store_db, store, expected):
    uri, experiment = store(tmp_path, empty_store_db)
    with pytest.raises(StoreProblem) as refused:
        open_store(uri, experiment, None)
    message = str(refused.value)
    assert expected.format(tmp=tmp_path) in message and "\n" not in message


@pytest.mark.slow
def test_an_unusable_store_stops_the_command_before_any_job(tmp_path):
    proc = run_script("-m", "seed=1,2", *TINY, store=None, cwd=tmp_path,
                      env={"MLFLOW_TRACKING_URI": "sqlite:////etc/hostname/sub/mlflow.db"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("attnbench: tracking URI")
    assert "/etc/hostname/sub does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "multirun" / "0").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_an_unreachable_server_is_refused_within_seconds_and_its_password_never_shown(tmp_path):
    uri = f"http://alice:s3cret@127.0.0.1:{_free_port()}"
    # MLflow's own retries would take ~4 minutes; the timeout makes a regression fail instead of hang.
    proc = run_script("-m", "seed=1,2", *TINY, f"tracking.uri={uri}", store=None, cwd=tmp_path, timeout=90)
    assert proc.returncode == 1
    assert "attnbench: MLflow store http://alice:***@127.0.0.1" in proc.stderr and "cannot be used" in proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    assert not (tmp_path / "multirun" / "0").exists()


@pytest.mark.slow
@pytest.mark.long
def test_sweeps_started_together_on_a_fresh_store_are_all_recorded(fresh_store, tmp_path):
    store = fresh_store  # no database yet: the four sweeps race to create it
    folders = [tmp_path / f"sweep{i}" for i in range(4)]
    procs = []
    for folder in folders:
        folder.mkdir()
        procs.append(start_script("-m", "seed=1,2", *TINY, store=store, cwd=folder))
    for proc, folder in zip(procs, folders):
        assert proc.wait(timeout=600) == 0, (folder / "stderr.txt").read_text()[-3000:]
    _, parents, children = tracked_runs(store)
    assert len(parents) == 4 and all(p.info.status == "FINISHED" for p in parents), [
        (p.info.status, p.data.tags.get("reason"), p.data.metrics) for p in parents]
    assert sorted(c.data.tags["mlflow.parentRunId"] for c in children) == sorted(
        p.info.run_id for p in parents for _ in range(2))
    tables = [row[0] for row in sqlite3.connect(store / "mlflow.db").execute(
        "select name from sqlite_master where type='table'")]
    assert "runs" in tables and not [t for t in tables if t.startswith("_alembic_tmp")]
    # The schema is current: MLflow opens it without asking for a migration.
    MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db").search_experiments()
