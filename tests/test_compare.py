"""`attnbench compare`: two sweeps planted in a store (through the same upload path as real jobs), paired by case,
judged from both runs' samples; a regression fails CI, an equal pair is `same`, different machines are warned."""

from __future__ import annotations

import random
import shutil
import statistics

import pytest
from mlflow.tracking import MlflowClient

from attnbench import cli
from attnbench.analysis.compare import compare_runs
from attnbench.core.record import Record
from attnbench.store.tracking.upload import finish_job_run, start_run

H100 = {"env.device_name": "NVIDIA H100 80GB HBM3", "env.torch": "2.13.0", "env.git_commit": "aaa"}
H200 = {"env.device_name": "NVIDIA H200", "env.torch": "2.14.0", "env.git_commit": "bbb"}


def _samples(center: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(center, center * 0.01) for _ in range(50)]


def _sweep(client, experiment_id: str, tmp_path, name: str, jobs: list[tuple], env: dict,
           metrics: dict | None = None) -> str:
    """A parent run with one child per (case, backend, seq_len, status, samples), recorded as a real job is."""
    parent = start_run(client, experiment_id, name, {}, {"sweep.key": name})
    for number, (case, backend, seq_len, status, samples) in enumerate(jobs):
        params = {"backend.name": backend, "shape.seq_len": str(seq_len), "compile": "false"}
        record = Record.begun(str(number), backend, tmp_path / name / str(number), params, {"case": case})
        measured = ({"median_us": statistics.median(samples)} | (metrics or {})) if samples else {}
        record = record.ended(Record(status, "" if samples else "out of memory", metrics=measured,
                                     samples={"events": samples} if samples else {},
                                     tags={"timing.headline": "events"} | env))
        run = start_run(client, experiment_id, backend, params, {"mlflow.parentRunId": parent,
                                                                 "hydra.job.num": str(number)})
        finish_job_run(client, run, record)
    client.set_terminated(parent)
    return parent


@pytest.fixture(scope="module")
def planted(tmp_path_factory, empty_store_db):
    tmp = tmp_path_factory.mktemp("compare")
    shutil.copyfile(empty_store_db, tmp / "mlflow.db")  # a store as after its first use (conftest: `store`)
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("attnbench", artifact_location=(tmp / "artifacts").as_uri())
    before = _sweep(client, experiment, tmp, "before", [
        ("c1", "flash", 512, "ok", _samples(100, 1)),
        ("c2", "flash", 1024, "ok", _samples(400, 2)),
        ("c3", "math", 512, "ok", _samples(1000, 3)),
        ("c5", "cudnn", 512, "ok", _samples(90, 4))], H100)
    after = _sweep(client, experiment, tmp, "after", [
        ("c1", "flash", 512, "ok", _samples(100, 5)),  # the same kernel again: equal within noise
        ("c2", "flash", 1024, "ok", _samples(520, 6)),  # 30% slower
        ("c3", "math", 512, "oom", []),  # no longer runs
        ("c4", "math", 1024, "ok", _samples(4000, 7))], H200)
    other = _sweep(client, experiment, tmp, "other", [("c9", "naive", 64, "ok", _samples(10, 8))], H100)
    return uri, client, before, after, other


def _cli(capsys, uri: str, *args: str) -> tuple[int, str, str]:
    code = cli.main(["compare", *args, "--uri", uri])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_planted_regression_is_slower_an_equal_pair_is_same_and_a_lost_job_is_broken(planted):
    _, client, before, after, _ = planted
    result = compare_runs(client, before, after)
    verdicts = {pair.label: pair.verdict for pair in result.pairs}
    assert verdicts == {"flash, seq_len=512": "same", "flash, seq_len=1024": "slower", "math, seq_len=512": "broken"}
    slower = next(p for p in result.pairs if p.verdict == "slower")
    assert slower.ratio == pytest.approx(1.3, rel=0.02)
    assert slower.regressed(10) and not slower.regressed(50)  # 30% slower: past 10%, not past 50%
    assert (result.only_a, result.only_b) == (1, 1)
    assert result.mismatches == ["card differs: A NVIDIA H100 80GB HBM3, B NVIDIA H200",
                                 "torch differs: A 2.13.0, B 2.14.0"]
    assert result.notes == ["git_commit differs: A aaa, B bbb"]


def test_fail_if_slower_exits_3_on_a_regression_and_0_without(planted, capsys):
    uri, _, before, after, _ = planted
    code, out, err = _cli(capsys, uri, before, after, "--force")  # another card and torch: only when forced
    assert code == 0 and "3 cases compared: 1 broken, 1 same, 1 slower; 1 only in A, 1 only in B" in out
    assert "warning: card differs" in err and "warning: torch differs" in err

    code, _, err = _cli(capsys, uri, before, after, "--fail-if-slower", "10", "--force")
    assert code == 3 and "2 cases regressed" in err and "flash, seq_len=1024" in err and "math, seq_len=512" in err

    code, out, _ = _cli(capsys, uri, after, before, "--fail-if-slower", "0", "--force")  # the other way
    assert code == 0 and "1 faster, 1 fixed, 1 same" in out


def test_two_jobs_compare_directly(planted):
    _, client, before, after, _ = planted
    children = {run.info.run_id: run for run in client.search_runs(
        [client.get_run(before).info.experiment_id], filter_string="tags.`case` = 'c1'")}
    a, b = sorted(children, key=lambda run_id: children[run_id].data.tags["mlflow.parentRunId"] != before)
    (pair,) = compare_runs(client, a, b).pairs
    assert pair.verdict == "same"


def test_runs_without_a_case_in_common_or_unknown_are_refused_in_one_line(planted, capsys):
    uri, _, before, _, other = planted
    code, _, err = _cli(capsys, uri, before, other)
    assert code == 1 and f"runs {before} and {other} have no case in common (4 and 1 cases)" in err
    code, _, err = _cli(capsys, uri, before, "feedbeef")
    assert code == 1 and "unknown run id 'feedbeef'" in err and len(err.strip().splitlines()) == 1


def test_compare_takes_two_runs_or_rerun(planted, capsys):
    uri, _, before, _, _ = planted
    with pytest.raises(SystemExit) as usage:
        cli.main(["compare", before, "--uri", uri])
    assert usage.value.code == 2 and "compare takes two runs (RUN_A RUN_B) or --rerun RUN_ID; got 1 runs" in (
        capsys.readouterr().err)


def _launch_bound_sweep(client, experiment_id: str, tmp_path, name: str, events: float, wall: float) -> str:
    parent = start_run(client, experiment_id, name, {}, {"sweep.key": name})
    params = {"backend.name": "default", "model.name": "causal_self_attention", "compile": "false"}
    record = Record.begun("0", "default", tmp_path / name / "0", params, {"case": "module"})
    samples = {"events": _samples(events, 11), "wall": _samples(wall, 12)}
    record = record.ended(Record(
        "ok", samples=samples,
        metrics={"median_us": statistics.median(samples["events"]), "kernel_us": 27.0,
                 "wall_median_us": statistics.median(samples["wall"])},
        tags={"timing.headline": "events", "launch_bound": "events far above the kernels: launch-bound"}))
    run = start_run(client, experiment_id, "default", params, {"mlflow.parentRunId": parent, "hydra.job.num": "0"})
    finish_job_run(client, run, record)
    client.set_terminated(parent)
    return parent


def test_a_launch_bound_case_is_compared_by_wall_time_per_call(tmp_path, store):
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.create_experiment("attnbench", artifact_location=(tmp_path / "artifacts").as_uri())
    # B's events look 20% faster (host gaps), but each call in a Python loop is 30% slower.
    a = _launch_bound_sweep(client, experiment, tmp_path, "a", events=100, wall=110)
    b = _launch_bound_sweep(client, experiment, tmp_path, "b", events=80, wall=143)
    (pair,) = compare_runs(client, a, b).pairs
    assert pair.label.endswith("(wall per call)")
    assert pair.verdict == "slower" and pair.ratio == pytest.approx(1.3, rel=0.03)


def test_sweeps_on_another_card_torch_or_thread_count_are_refused_unless_forced(planted, tmp_path, capsys):
    uri, client, before, after, _ = planted
    code, out, err = _cli(capsys, uri, before, after)
    assert code == 1 and not out  # nothing compared
    assert "refused" in err and "card differs: A NVIDIA H100 80GB HBM3, B NVIDIA H200" in err
    assert "torch differs: A 2.13.0, B 2.14.0" in err and "--force" in err and len(err.strip().splitlines()) == 1
    experiment = client.get_run(before).info.experiment_id
    one = _sweep(client, experiment, tmp_path, "one", [("c1", "flash", 512, "ok", _samples(100, 1))],
                 H100 | {"threads.intra_op": "1"})
    two = _sweep(client, experiment, tmp_path, "two", [("c1", "flash", 512, "ok", _samples(100, 2))],
                 H100 | {"threads.intra_op": "2"})
    code, _, err = _cli(capsys, uri, one, two)
    assert code == 1 and "torch threads differs: A 1, B 2" in err


def test_a_contended_side_gets_no_verdict_and_other_clocks_are_said(tmp_path, store):
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.create_experiment("attnbench", artifact_location=(tmp_path / "artifacts").as_uri())
    a = _sweep(client, experiment, tmp_path, "a", [("c1", "math", 64, "ok", _samples(100, 1))], H100,
               {"gpu_sm_clock_mhz": 1980.0})
    b = _sweep(client, experiment, tmp_path, "b", [("c1", "math", 64, "ok", _samples(300, 2))],
               H100 | {"contended": "its threads waited for a core 40% of the time"}, {"gpu_sm_clock_mhz": 1680.0})
    result = compare_runs(client, a, b)
    (pair,) = result.pairs
    assert pair.verdict == "contended (no verdict)" and not pair.regressed(0)
    assert any("SM clock differs: A ran at 1980 MHz, B at 1680 MHz" in w for w in result.warnings)


def test_an_approximate_pair_says_so_with_its_error_against_softmax(tmp_path, store):
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.create_experiment("attnbench", artifact_location=(tmp_path / "artifacts").as_uri())
    linear = H100 | {"approximate": "true"}
    a = _sweep(client, experiment, tmp_path, "a", [("c1", "linear", 64, "ok", _samples(100, 1))], linear,
               {"rel_l2_err": 0.52})
    b = _sweep(client, experiment, tmp_path, "b", [("c1", "linear", 64, "ok", _samples(100, 2))], linear,
               {"rel_l2_err": 0.52})
    (pair,) = compare_runs(client, a, b).pairs
    assert pair.label == "linear (approximate: error 0.52 vs softmax)"


def test_a_memory_bound_case_shows_bs_throughput_in_gb_per_s(tmp_path, store, capsys):
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.create_experiment("attnbench", artifact_location=(tmp_path / "artifacts").as_uri())
    # a decode step on an H200: 4 FLOP/byte, far below the ridge of its ceilings (~160 FLOP/byte)
    decode = {"gbyte": 0.1, "gflop": 0.4, "arith_intensity": 4.0, "gbps": 1000.0, "tflops": 4.0,
              "device_peak_tflops": 700.0, "device_peak_gbps": 4400.0}
    a = _sweep(client, experiment, tmp_path, "a", [("c1", "cudnn", 8192, "ok", _samples(100, 1))], H100, decode)
    b = _sweep(client, experiment, tmp_path, "b", [("c1", "cudnn", 8192, "ok", _samples(100, 2))], H100, decode)
    code, out, err = _cli(capsys, f"sqlite:///{store}/mlflow.db", a, b)
    assert code == 0, err
    assert "B's throughput" in out and "1 TB/s" in out and "TFLOP/s" not in out
