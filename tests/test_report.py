"""The sweep's answer in MLflow: the report at the end of a sweep and from the store alone, what the parent and
child runs say at a glance, the UI's saved view, and the command that reproduces a sweep or a job."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import shutil

import pytest

from attnbench import cli
from attnbench.core.record import Record
from attnbench.store.tracking.describe import job_description, terminal_status
from conftest import SMALL_SWEEP, run_script, tracked_runs

SWEEP = SMALL_SWEEP


def test_a_job_describes_itself_in_one_line_with_units_scaled():
    ok = Record("ok", tags={"kernel": "flash"}, metrics={"median_us": 122.54, "tflops": 140.2})
    assert job_description(ok) == "123 µs · 140 TFLOP/s · flash"
    slow = Record("ok", metrics={"median_us": 2_345_678.0, "tflops": 0.0032}, tags={"kernel": "math"})
    assert job_description(slow) == "2.35 s · 3.2 GFLOP/s · math"
    failed = Record("unsupported", "needs\nCUDA  " + "x" * 500)
    line = job_description(failed)
    assert line.startswith("unsupported: needs CUDA x") and "\n" not in line and len(line) < 330


def test_a_memory_bound_job_describes_itself_in_bytes_per_second_as_the_report_reads_it():
    """A decode step's description read `61 µs · 0.27 TFLOP/s`: near zero against a peak it can never reach."""
    h200 = {"device_peak_tflops": 700.0, "device_peak_gbps": 4000.0}  # ridge: 175 FLOP/byte
    decode = Record("ok", tags={"kernel": "flash"}, metrics={
        "median_us": 61.2, "tflops": 0.27, "gbps": 2890.0, "arith_intensity": 7.9, **h200})
    assert job_description(decode) == "61.2 µs · 2.89 TB/s · flash"
    prefill = Record("ok", tags={"kernel": "flash"}, metrics={
        "median_us": 480.0, "tflops": 580.0, "gbps": 140.0, "arith_intensity": 2048.0, **h200})
    assert job_description(prefill) == "480 µs · 580 TFLOP/s · flash"
    on_cpu = Record("ok", tags={"kernel": "math"}, params={"shape.q_len": "1"},  # no ceilings: a decode step is
                    metrics={"median_us": 30.0, "tflops": 0.001, "gbps": 12.5, "arith_intensity": 2.0})
    assert job_description(on_cpu) == "30 µs · 12.5 GB/s · math"


def test_only_ok_jobs_close_finished_in_mlflow():
    assert terminal_status("ok") == "FINISHED" and terminal_status("interrupted") == "KILLED"
    assert {terminal_status(s) for s in ("unsupported", "oom", "wrong", "fallback", "skipped", "error")} == {"FAILED"}


@pytest.fixture(scope="module")
def sweep(small_sweep):
    """One tiny CPU sweep (conftest's, which test_console reads too): 2 lengths × math, naive (ok) and efficient
    (unsupported on CPU)."""
    return small_sweep.folder, small_sweep.store, small_sweep.client, small_sweep.parent, small_sweep.children


def _cli(capsys, store, *args: str) -> tuple[int, str, str]:
    code = cli.main([*args, "--uri", f"sqlite:///{store}/mlflow.db"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_sweep_ends_with_its_report_in_its_folder_and_on_its_parent(sweep):
    tmp, _, client, parent, _ = sweep
    folder = tmp / "multirun"
    rows = list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))
    expected = [(b, s, "unsupported" if b == "efficient" else "ok") for b in ("math", "naive", "efficient")
                for s in ("16", "32")]
    assert sorted((r["backend.name"], r["shape.seq_len"], r["status"]) for r in rows) == sorted(expected)
    assert all(float(r["median_us"]) > 0 for r in rows if r["status"] == "ok")
    summary = (folder / "summary.md").read_text()
    first, header = summary.splitlines()[0], next(line for line in summary.splitlines() if line.startswith("| problem"))
    # 2 samples a side cannot separate anything: every winner is a tie and every speedup `~`, never a number
    assert first.startswith("**Winners:**") and first.count("within noise") == 2
    assert header == "| problem | math | naive | efficient | winner |"
    time = r"[\d.]+ (µs|ms|s)"
    assert re.search(rf"\| seq_len=16 \| {time} (1×|~) \| {time} (1×|~) \| unsupported \|", summary)
    assert "**efficient** (2 jobs): unsupported: memory-efficient attention runs on CUDA only" in summary
    for plot in ("latency.png", "tflops.png"):  # a numeric axis varied: lines; no memory plot on a CPU
        assert (folder / plot).read_bytes().startswith(b"\x89PNG") and f"]({plot})" in summary
    assert not (folder / "memory.png").exists()

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "latency.png", "tflops.png", "summary.txt"} <= artifacts
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith(first)  # the same tables, each cell followed by an em space: MLflow pads no cell
    assert "| problem&emsp; | math&emsp; | naive&emsp; | efficient&emsp; | winner&emsp; |" in note
    assert f"get-artifact?path=latency.png&run_uuid={parent.info.run_id}" in note  # served by the UI's server
    assert parent.data.tags["attnbench.command"] == shlex.join(["python", "run.py", "-m", *SWEEP])


def test_children_say_their_answer_and_the_ones_that_are_not_ok_stand_out(sweep):
    _, _, client, _, children = sweep
    for child in children:
        note, status = child.data.tags["mlflow.note.content"], child.data.tags["status"]
        if status == "ok":
            assert child.info.status == "FINISHED"
            assert re.fullmatch(r"[\d.]+ (µs|ms|s) · [\d.]+ [kMGT]FLOP/s · (math|eager PyTorch ops)", note), note
            path = client.download_artifacts(child.info.run_id, "samples.json")
            samples = json.loads(open(path).read())
            assert samples["headline"] == "wall" and len(samples["samples"]["wall"]) == 2
        else:
            assert (status, child.info.status) == ("unsupported", "FAILED")  # a red mark in the runs table
            assert note.startswith("unsupported: memory-efficient attention runs on CUDA only")


def test_the_report_comes_from_mlflow_alone_with_another_baseline(sweep, capsys, tmp_path):
    tmp, store, client, parent, _ = sweep
    hidden = tmp / "multirun-hidden"
    (tmp / "multirun").rename(hidden)  # nothing of the sweep folder can be read
    try:
        code, out, err = _cli(capsys, store, "report", parent.info.run_id, "--baseline", "naive", "--out",
                              str(tmp_path / "again"))
    finally:
        hidden.rename(tmp / "multirun")
    assert code == 0, err
    again = tmp_path / "again"
    assert (again / "summary.csv").read_text() == (tmp / "multirun" / "summary.csv").read_text()
    summary = (again / "summary.md").read_text()
    assert "speedup against backend=naive" in summary and summary in out
    time = r"[\d.]+ (µs|ms|s)"
    assert re.search(rf"\| seq_len=32 \| {time} ~ \| {time} 1× \|", summary)  # naive is the baseline now
    assert client.get_run(parent.info.run_id).data.tags["mlflow.note.content"].startswith("**Winners:**")


@pytest.mark.parametrize("args, message", [
    (["report", "0123456789abcdef"], "unknown run id '0123456789abcdef'"),
    (["report", "--baseline", "flash"], "--baseline 'flash' is not a backend of this sweep: its backends are "
                                        "efficient, math, naive"),
    (["report", "--experiment", "nope"], "no experiment 'nope' in store"),
    (["compare", "--rerun", "0123456789abcdef"], "unknown run id"),
])
def test_bad_input_is_one_line_and_exit_1(sweep, capsys, args, message):
    _, store, _, _, _ = sweep
    code, out, err = _cli(capsys, store, *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_job_is_not_a_sweep(sweep, capsys):
    _, store, _, parent, children = sweep
    code, _, err = _cli(capsys, store, "report", children[0].info.run_id)
    assert code == 1 and f"is a job of sweep {parent.info.run_id}, not a sweep" in err


def test_the_ui_view_shows_the_sweeps_jobs_with_the_columns_that_answer(sweep, capsys):
    _, store, client, parent, _ = sweep
    code, out, err = _cli(capsys, store, "url", "--base", "http://ui:5000")
    experiment = parent.info.experiment_id
    assert code == 0, err
    runs_page = f"http://ui:5000/#/experiments/{experiment}/runs"
    assert f"{runs_page}/{parent.info.run_id}?workflowType=machine_learning\n" in out  # the "Model training" side
    assert f"{runs_page}?workflowType=machine_learning&viewStateShareKey=attnbench" in out
    saved = json.loads(client.get_experiment(experiment).tags["mlflow.sharedViewState.attnbench"])
    state = json.loads(saved["state"])
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`median_us`", True)
    assert state["selectedColumns"] == ["attributes.`Description`", "params.`shape.seq_len`", "tags.`status`",
                                        "metrics.`median_us`", "metrics.`tflops`", "params.`backend.name`"]
    assert saved["name"] == f"attnbench: {parent.info.run_name}" and isinstance(saved["createdAt"], int)


@pytest.mark.slow  # two more sweeps, each in a subprocess
def test_rerun_prints_the_commands_that_reproduce_a_job_and_the_sweep(sweep, capsys, tmp_path):
    tmp, store, client, parent, children = sweep
    child = next(c for c in children if c.data.tags["status"] == "ok")
    code, job_command, err = _cli(capsys, store, "compare", "--rerun", child.info.run_id)
    assert code == 0, err
    assert job_command.startswith("python run.py ") and " -m " not in job_command
    proc = run_script(*shlex.split(job_command)[2:], store=store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, _ = tracked_runs(store)
    single = next(p for p in parents if p.info.run_id != parent.info.run_id)
    assert single.data.tags["case"] == child.data.tags["case"]  # the same measurement

    code, sweep_command, err = _cli(capsys, store, "compare", "--rerun", parent.info.run_id)
    assert code == 0 and sweep_command.strip() == shlex.join(["python", "run.py", "-m", *SWEEP])
    (tmp_path / "second").mkdir()
    proc = run_script(*shlex.split(sweep_command)[2:], store=store, cwd=tmp_path / "second")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, children_now = tracked_runs(store)
    second = next(p for p in parents if "sweep.key" in p.data.tags and p.info.run_id != parent.info.run_id)

    def cases(run_id: str) -> list[str]:
        return sorted(c.data.tags["case"] for c in children_now if c.data.tags["mlflow.parentRunId"] == run_id)

    assert cases(second.info.run_id) == cases(parent.info.run_id) and len(cases(parent.info.run_id)) == 6

    # The two sweeps pair case by case; 2 samples a side never make a verdict: same, and no regression
    code, out, err = _cli(capsys, store, "compare", parent.info.run_id, second.info.run_id, "--fail-if-slower", "0")
    assert code == 0, err
    assert "6 cases compared: 4 same, 2 same status" in out and "warning" not in err


def test_a_report_that_fails_at_the_end_of_a_sweep_is_a_warning_and_changes_nothing(compose_cfg, tmp_path, monkeypatch,
                                                                                      caplog, empty_store_db):
    from omegaconf import open_dict

    from attnbench.analysis import sweep_report
    from attnbench.harness import outcome
    from attnbench.harness.jobs_checked import jobs_checked
    from attnbench.harness.tracking import MlflowTrackingCallback

    monkeypatch.setattr(outcome, "outcome", outcome.Outcome())
    shutil.copyfile(empty_store_db, tmp_path / "mlflow.db")  # a store of its own, already migrated
    cfg = compose_cfg(f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "multirun")

    def broken(*args, **kwargs):
        raise RuntimeError("the plotting library is broken")

    monkeypatch.setattr(sweep_report, "report_sweep", broken)
    callback = MlflowTrackingCallback()
    callback.on_multirun_start(cfg)
    jobs_checked()  # as the sweeper says before its first launch: the parent run is opened then
    callback.on_multirun_end(cfg)
    parent = callback._recorder.session.client.get_run(callback._recorder.parent_id)
    assert parent.info.status == "FINISHED" and outcome.outcome.exit_code() == 0
    (warning,) = [r.getMessage() for r in caplog.records if "report failed" in r.getMessage()]
    assert "the plotting library is broken" in warning and f"attnbench report {callback._recorder.parent_id}" in warning


def test_a_summary_too_long_for_a_description_keeps_the_answer():
    from attnbench.analysis.pivot import Problem
    from attnbench.analysis.sweep_report import _fit

    problems = [Problem("seq_len=512", [], None, "flash (2× over math)")]
    note = _fit("**Winner: flash (2× over math)**\n" + "| row |\n" * 2000, problems)
    assert len(note) <= 8000 and note.startswith("**Winner: flash (2× over math)**") and "summary.md" in note


@pytest.mark.slow
def test_approximate_backends_are_ranked_apart_with_their_error_and_never_win(tmp_path, capsys):
    from conftest import FAST_TIMING, NEVER_CONTENDED, sweep_into_fresh_store

    store, client, parent, children, stdout = sweep_into_fresh_store(
        tmp_path, "backend=math,linear,performer", "shape=tiny", "device=cpu", "mask=causal", *FAST_TIMING,
        NEVER_CONTENDED)
    code, out, _ = _cli(capsys, store, "report", parent.info.run_id, "--out", str(tmp_path / "report"))
    assert code == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    first = summary.splitlines()[0]
    assert first.startswith("**Winner: math (the only exact job that ran ok)**"), first
    apart = first.split("approximate (not softmax, ranked apart): ")[1]
    assert re.search(r"linear [\d.]+ (µs|ms), error 0\.\d+ vs softmax", apart), apart
    assert re.search(r"performer [\d.]+ (µs|ms), error 0\.\d+ vs softmax", apart), apart
    assert "over linear" not in summary and "over performer" not in summary
    assert re.search(r"\| [\d.]+ (µs|ms) \(approximate\) \|", summary)  # the pivot's cells say so too
    # The console table and each job's description say it as well.
    for name in ("linear", "performer"):
        line = next(line for line in stdout.splitlines() if line.lstrip().startswith(f"{name} "))
        assert "approximate, error 0." in line and "vs softmax" in stdout, line
        run = next(r for r in children if r.info.run_name == name)
        assert run.data.tags["mlflow.note.content"].startswith("approximate (error 0.")
        # Its TFLOP/s are its own formula's, not softmax attention's FLOPs over its time.
        assert run.data.tags["flops"].startswith("its own formula")
    math = next(r for r in children if r.info.run_name == "math")
    linear = next(r for r in children if r.info.run_name == "linear")
    assert float(linear.data.metrics["gflop"]) != pytest.approx(float(math.data.metrics["gflop"]))


def test_the_saved_views_description_column_fits_its_text_in_the_tables_font():
    """Chromium cut `59 µs · 556 MFLOP/s · eager PyTorch ops` in a 265-px column (a guess of 6.2 px a character): its
    text is 245 px of 12-px DejaVu Sans, and a cell pads 11 px a side."""
    from types import SimpleNamespace

    from attnbench.analysis.view import DESCRIPTION, widths

    def run(description: str):
        return SimpleNamespace(info=SimpleNamespace(run_name="naive"), data=SimpleNamespace(
            params={}, metrics={}, tags={"status": "ok", "mlflow.note.content": description}))

    assert widths([run("59 µs · 556 MFLOP/s · eager PyTorch ops")], [])[DESCRIPTION] >= 245 + 22
