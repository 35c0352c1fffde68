"""`attnbench ls` and `attnbench show`: a store's sweeps newest first, with their jobs by status, winner and run
id; one sweep's jobs or one job; bad input in one line. Sweeps planted through the path real jobs take."""

from __future__ import annotations

import random
import shutil
import statistics
import time

import pytest
from mlflow.tracking import MlflowClient

from attnbench import cli
from attnbench.analysis.listing import winner_of
from attnbench.core.record import Record
from attnbench.store.tracking.upload import finish_job_run, finish_parent, start_run


def _plant(client, experiment: str, tmp_path, name: str, jobs: list[tuple[str, str]], winner: str | None) -> str:
    """A sweep's parent and its jobs (backend, status); ended (counts, a report's description) when winner is
    given, else left running."""
    parent = start_run(client, experiment, name, {}, {"sweep.key": name, "attnbench.command": f"python run.py -m {name}"})
    records = []
    for number, (backend, status) in enumerate(jobs):
        params = {"backend.name": backend, "compile": "false", "shape.seq_len": "64", "shape.q_len": "1",
                  "model.name": "attention", "mode": "fwd", "dtype": "float16"}
        record = Record.begun(str(number), backend, tmp_path / name / str(number), params, {"case": f"{name}{number}"})
        rng = random.Random(number)
        samples = [rng.gauss(100.0 * (number + 1), 1.0) for _ in range(30)] if status == "ok" else []
        metrics = {"median_us": statistics.median(samples), "gbyte": 0.001, "gflop": 0.004, "arith_intensity": 4.0,
                   "gbps": 10.0 / (number + 1), "tflops": 0.04, "rel_l2_err": 3e-4, "tolerance": 2.6e-3,
                   "first_call_s": 0.5} if samples else {}
        record = record.ended(Record(status, "" if samples else "memory-efficient attention runs on CUDA only",
                                     metrics=metrics, samples={"wall": samples} if samples else {},
                                     tags={"timing.headline": "wall", "kernel": backend,
                                           "problem": "B1 H2 S64 Q1 D8 none", "device": "cpu"}))
        run = start_run(client, experiment, backend, params, {"mlflow.parentRunId": parent, "hydra.job.num": str(number)})
        finish_job_run(client, run, record)
        records.append(record)
    if winner is not None:
        client.set_tag(parent, "mlflow.note.content", f"{winner} · approximate (not softmax, ranked apart): x\n\n| t |")
        finish_parent(client, parent, records, "summary")
    return parent


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_store_db):
    tmp = tmp_path_factory.mktemp("listing")
    shutil.copyfile(empty_store_db, tmp / "mlflow.db")  # a store as after its first use (conftest: `store`)
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("attnbench", artifact_location=(tmp / "artifacts").as_uri())
    older = _plant(client, experiment, tmp, "seed", [("math", "ok"), ("flash", "ok"), ("efficient", "unsupported")],
                   "**Winner: math (2× over flash)**")
    time.sleep(0.01)  # start times apart: newest first is an order
    newer = _plant(client, experiment, tmp, "decode", [("math", "ok"), ("naive", "ok")], None)  # still running
    return uri, client, older, newer


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ls_lists_sweeps_newest_first_with_jobs_by_status_winner_and_run_id(store, capsys):
    uri, _, older, newer = store
    code, out, err = _cli(capsys, "ls", "--uri", uri)
    assert code == 0, err
    lines = out.splitlines()
    decode = next(i for i, line in enumerate(lines) if newer in line)
    seed = next(i for i, line in enumerate(lines) if older in line)
    assert decode < seed  # newest first
    assert "decode (running)" in lines[decode] and "2 ok" in lines[decode]  # counted from its jobs while it runs
    assert "seed" in lines[seed] and "2 ok, 1 unsupported" in lines[seed]
    assert lines[seed + 1].strip() == "winner: math (2× over flash)"  # the approximate jobs' part left out
    assert max(len(line) for line in lines) <= 100

    code, out, _ = _cli(capsys, "ls", "--uri", uri, "--limit", "1")
    assert code == 0 and newer in out and older not in out


def test_show_prints_a_sweeps_jobs_and_one_job(store, capsys):
    uri, client, older, _ = store
    code, out, err = _cli(capsys, "show", older, "--uri", uri)
    assert code == 0, err
    text = " ".join(out.split())
    assert "winner math (2× over flash)" in text and "command python run.py -m seed" in text
    header = next(line for line in out.splitlines() if line.split()[:2] == ["run", "status"]).split()
    assert "GB/s" in header and "TFLOP/s" not in header  # a decode step on a CPU: read in bytes per second
    assert "[1] memory-efficient attention runs on CUDA only" in text

    (job,) = client.search_runs([client.get_run(older).info.experiment_id], filter_string="tags.`case` = 'seed1'")
    code, out, err = _cli(capsys, "show", job.info.run_id, "--uri", uri)
    assert code == 0, err
    text = " ".join(out.split())
    assert "job flash (ok)" in text and f"sweep {older}" in text and "problem B1 H2 S64 Q1 D8 none" in text
    assert "throughput 5 GB/s, memory-bound: a decode step" in text
    assert "error vs float64 0.0003 relative L2 (tolerance 0.0026)" in text and "first call 500 ms" in text


@pytest.mark.parametrize("args, code, message", [
    (["show", "0123456789abcdef"], 1, "attnbench show: unknown run id '0123456789abcdef'"),
    (["ls", "--experiment", "nope"], 1, "attnbench ls: no experiment 'nope' in store"),
])
def test_bad_input_is_one_line(store, capsys, args, code, message):
    uri = store[0]
    got, _, err = _cli(capsys, *args, "--uri", uri)
    assert got == code and message in err and len(err.strip().splitlines()) == 1, err


def test_a_limit_below_one_is_refused_before_the_store_is_read(capsys):
    with pytest.raises(SystemExit) as usage:
        cli.main(["ls", "--limit", "0", "--uri", "sqlite:////nonexistent/mlflow.db"])
    err = capsys.readouterr().err
    assert usage.value.code == 2 and "argument --limit: expected a whole number of 1 or more; got '0'" in err


def test_ls_on_an_empty_store_says_so(tmp_path, capsys, empty_store_db):
    shutil.copyfile(empty_store_db, tmp_path / "mlflow.db")  # a store with no run
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code, out, _ = _cli(capsys, "ls", "--uri", uri)
    assert code == 0 and "no sweep in" in out


def test_the_winner_is_read_from_the_start_of_a_reports_description():
    assert winner_of("**Winner: flash (2.31× over math)** · approximate (not softmax, ranked apart): …\n| x |") == (
        "flash (2.31× over math)")
    assert winner_of("**Winners:** S=1: a (2× over b); S=2: c (3× over d) · S=1: approximate …") == (
        "S=1: a (2× over b); S=2: c (3× over d)")
    assert winner_of("**No winner: flash ~ cudnn within noise**") == "no winner: flash ~ cudnn within noise"
    assert winner_of("a hand-written note") == ""
