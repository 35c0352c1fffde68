"""A shared tracking server (`make server`): a sweep sent to it with tracking.uri=http://… is recorded whole, on
SQLite and on PostgreSQL, and each job costs the store as few calls as MLflow allows."""

from __future__ import annotations

import collections
import importlib.util
import re
import shutil
import socket

import pytest
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from attnbench import cli
from attnbench.core.record import Record
from attnbench.store import results
from attnbench.store.tracking import sweeps
from attnbench.store.tracking.names import SAMPLES_FILE
from attnbench.store.tracking.serve import problem
from attnbench.store.tracking.upload import (
    MAX_METRICS_PER_BATCH,
    MAX_TAGS_PER_BATCH,
    batches,
    finish_job_run,
    start_run,
)
from conftest import run_script
from servers import free_port, mlflow_server, postgres

# As benchmarks/overhead.py: one timed call each, so that the sweep's time is the harness's.
TRIVIAL = ["shape=tiny", "device=cpu", "dtype=float32", "timing.warmup_s=0", "timing.min_time_s=0",
           "timing.min_reps=1", "timing.max_reps=1"]
JOBS = 6


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory, empty_store_db):
    folder = tmp_path_factory.mktemp("server")
    shutil.copyfile(empty_store_db, folder / "mlflow.db")  # already migrated: the server starts a second sooner
    with mlflow_server(f"sqlite:///{folder}/mlflow.db", folder / "artifacts") as url:
        yield url, folder / "artifacts"


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server_pg")
    with postgres() as database, mlflow_server(database, folder / "artifacts") as url:
        yield url, folder / "artifacts"


def _sweep_into(url: str, cwd) -> tuple[MlflowClient, object, list]:
    """Run a sweep of JOBS trivial jobs into the server; (client, its parent run, its child runs)."""
    proc = run_script("-m", *TRIVIAL, f"seed=range({JOBS})", f"tracking.uri={url}", store=None, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("attnbench")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [p.info.run_name for p in parents]
    return client, parents[0], [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def _check_whole(client: MlflowClient, parent, children: list, artifacts) -> None:
    """One finished parent with every job exactly once, each complete, its files uploaded through the server."""
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_ok"] == JOBS
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(int(c.data.tags["hydra.job.num"]) for c in children) == list(range(JOBS))  # none lost, none twice
    assert sorted(int(c.data.params["seed"]) for c in children) == list(range(JOBS))
    for child in children:
        assert (child.info.status, child.data.tags["status"]) == ("FINISHED", "ok")
        assert child.data.metrics["median_us"] > 0 and child.data.params["shape.seq_len"] == "16"
        assert child.info.artifact_uri.startswith("mlflow-artifacts:")  # uploads go through the server
    # ... into its artifact folder: the server's --artifacts-destination
    assert len({p.parent for p in artifacts.rglob(SAMPLES_FILE)}) == JOBS


@pytest.mark.slow
def test_a_sweep_into_a_server_on_sqlite_is_recorded_whole_and_reported_from_it(sqlite_server, tmp_path):
    url, artifacts = sqlite_server
    client, parent, children = _sweep_into(url, tmp_path)
    _check_whole(client, parent, children, artifacts)
    assert "summary.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}  # the end-of-sweep report
    # The report and the comparison read everything from the server, as from any machine that reaches it.
    assert cli.main(["report", parent.info.run_id, "--uri", url, "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "summary.csv").read_text().count("\n") == JOBS + 1  # a header, a line per job
    assert cli.main(["compare", parent.info.run_id, parent.info.run_id, "--uri", url]) == 0


@pytest.mark.slow
def test_a_sweep_into_a_server_on_postgresql_is_recorded_whole(postgres_server, tmp_path):
    url, artifacts = postgres_server
    client, parent, children = _sweep_into(url, tmp_path)
    _check_whole(client, parent, children, artifacts)


def _record(job_dir, status: str = "ok") -> Record:
    """A job's saved result with its folder's files, as the runner leaves them."""
    (job_dir / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (job_dir / ".hydra" / name).write_text("seed: 0\n")
    (job_dir / "run.log").write_text("a log line\n")
    record = Record.begun("0", "math", job_dir, {f"p{i}": str(i) for i in range(40)}, {"case": "abc"})
    record = record.ended(Record(status, tags={f"t{i}": "x" for i in range(30)},
                                 metrics={f"m{i}": float(i) for i in range(30)}, samples={"wall": [1.0]}))
    results.write(job_dir, record)
    return record


def _count_requests(monkeypatch) -> collections.Counter:
    """Every HTTP request MLflow's client sends from now on, as 'METHOD endpoint' (run ids and file names out)."""
    sent: collections.Counter = collections.Counter()
    send = requests.Session.request

    def counted(self, method, url, *args, **kwargs):
        endpoint = re.sub(r"/mlflow-artifacts/artifacts/.*", "/mlflow-artifacts/artifacts/FILE", url.split("?")[0])
        if not endpoint.endswith("/server-info"):  # asked once per process (the first download), not per job
            sent[f"{method} {endpoint.split('/api/', 1)[1]}"] += 1
        return send(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", counted)
    return sent


@pytest.mark.slow  # starts an MLflow server
def test_a_job_costs_the_server_one_call_per_step_and_one_per_file(sqlite_server, tmp_path, monkeypatch):
    from attnbench.store.tracking.preflight import apply_mlflow_settings

    apply_mlflow_settings()  # as every attnbench client is set up (alone, this test ran without it: one more GET)
    url, _ = sqlite_server
    client = MlflowClient(tracking_uri=url)
    experiment = client.create_experiment("calls")
    record = _record(tmp_path / "job")
    sent = _count_requests(monkeypatch)
    run_id = start_run(client, experiment, "math", {}, {"case": "abc"})
    finish_job_run(client, run_id, record)
    files = 6  # .hydra's three, run.log, result.json, samples.json
    assert sent == {"POST 2.0/mlflow/runs/create": 1,  # with its tags
                    "GET 2.0/mlflow/runs/get": 1,  # where its artifacts go (the client asks once per run)
                    "PUT 2.0/mlflow-artifacts/artifacts/FILE": files,
                    "POST 2.0/mlflow/runs/log-batch": 1,  # 40 params, 30 metrics, 35 tags, the status last
                    "POST 2.0/mlflow/runs/update": 1}  # closed
    run = client.get_run(run_id)
    assert (len(run.data.params), len(run.data.metrics), run.data.tags["status"]) == (40, 30, "ok")
    sent.clear()
    assert sweeps.records(client, [run])[0].samples == {"wall": [1.0]}  # what the report reads of each job
    assert sent == {"GET 2.0/mlflow-artifacts/artifacts": 1, "GET 2.0/mlflow-artifacts/artifacts/FILE": 1}


def test_batches_keep_within_mlflow_limits_with_the_status_last():
    params = [Param(f"p{i}", "v") for i in range(150)]
    metrics = [Metric(f"m{i}", 1.0, 0, 0) for i in range(2 * MAX_METRICS_PER_BATCH + 1)]
    tags = [RunTag(f"t{i}", "v") for i in range(2 * MAX_TAGS_PER_BATCH)]
    calls = batches(params, metrics, tags, RunTag("status", "ok"))
    assert all(len(p) <= 100 and len(t) <= 100 and len(p) + len(m) + len(t) <= 1000 for p, m, t in calls)
    assert calls[-1][2][-1].key == "status" and sum(t.key == "status" for _, _, ts in calls for t in ts) == 1
    assert sum(map(len, (x for call in calls for x in call))) == len(params) + len(metrics) + len(tags) + 1
    assert len(batches(params[:40], metrics[:30], tags[:30], RunTag("status", "ok"))) == 1


def test_make_server_refuses_in_one_line_what_mlflow_could_not_serve(tmp_path):
    fine = f"sqlite:///{tmp_path}/mlflow.db"
    assert problem(fine, free_port()) is None
    assert "is not a database URL" in problem("nonsense", free_port())
    if importlib.util.find_spec("MySQLdb") is None:  # MySQL's driver, which attnbench does not install
        assert "needs the database driver 'MySQLdb'" in problem("mysql://bob:pw@127.0.0.1/x", free_port())
    refused = problem(f"postgresql://bob:s3cret@127.0.0.1:{free_port()}/x", free_port())
    assert "cannot be opened" in refused and "s3cret" not in refused and "\n" not in refused
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"make server PORT={port + 1}" in problem(fine, port)


def test_make_server_starts_again_while_a_stopped_servers_connections_linger(tmp_path):
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as MLflow's server (uvicorn) binds
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server's end closes first: it lingers in TIME_WAIT for a minute, as after a crash
        client.close()
    assert problem(f"sqlite:///{tmp_path}/mlflow.db", port) is None
