"""The real script in a subprocess against a throw-away MLflow store: what a user gets."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from conftest import FAST_TIMING, run_script
from conftest import tracked_runs as _runs

pytestmark = pytest.mark.slow
TINY = ["shape=tiny", "device=cpu", *FAST_TIMING]


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def test_seed_sweep_gives_one_parent_and_six_children(store, tmp_path, compose_cfg):
    default_model = compose_cfg().model.name
    proc = run_script("-m", "backend=math,flash,efficient", "compile=true,false", *TINY, store=store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, parents, children = _runs(store)
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert "summary.txt" in _artifacts(client, parent.info.run_id)
    assert "efficient" in proc.stdout and "unsupported" in proc.stdout  # the printed table
    table = (tmp_path / "multirun" / "summary.txt").read_text()
    assert table in proc.stdout and max(len(line) for line in table.splitlines()) <= 100

    combos = {(c.data.params["backend.name"], c.data.params["compile"]) for c in children}
    assert combos == {(b, c) for b in ("math", "flash", "efficient") for c in ("true", "false")}
    for child in children:
        p, m, t = child.data.params, child.data.metrics, child.data.tags
        assert (p["shape.batch"], p["shape.seq_len"], p["dtype"]) == ("2", "16", "float16")
        assert p["model.name"] == default_model
        assert not any(k.startswith("hydra") for k in p)
        assert t["env.torch"] and t["env.python"] and t["env.hostname"] and t["env.git_commit"]
        assert ".hydra" in _artifacts(client, child.info.run_id)
        assert {a.rsplit("/", 1)[-1] for a in _artifacts(client, child.info.run_id, ".hydra")} >= {
            "config.yaml", "overrides.yaml", "hydra.yaml"}
        assert len(child.info.run_name) <= 18
        if p["backend.name"] == "efficient":
            assert t["status"] == "unsupported" and t["reason"].strip()
            continue
        assert t["status"] == "ok", t.get("reason")
        assert t["sdpa.kernel"] in (p["backend.name"], "decomposed")
        for key in ("median_us", "tflops", "wall_median_us", "wall_p90_us", "first_call_s"):
            assert m[key] > 0, key
        if p["compile"] == "true":
            assert m["compile_s"] > 0 and m["dynamo_graphs"] >= 1
            assert child.info.run_name.endswith("+compile")
        else:
            assert "compile_s" not in m and t["sdpa.kernel"] == p["backend.name"]


def test_a_single_run_is_one_run_without_parent(store, tmp_path):
    proc = run_script("backend=math", *TINY, store=store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, children = _runs(store)
    assert len(parents) == 1 and not children
    assert parents[0].data.tags["status"] == "ok" and parents[0].info.run_name == "math"
    assert "math" in proc.stdout
    assert "job 1/1 · backend=math shape=tiny device=cpu" in proc.stdout  # its progress lines: one job of one


def test_an_unexpected_failure_is_recorded_and_the_sweep_goes_on(failing_sweep):
    # model=broken,crashing,<default>: the crash is test_endings'
    sweep = failing_sweep
    assert sweep.returncode == 1, (sweep.folder / "stderr.txt").read_text()[-3000:]
    client, parents, children = _runs(sweep.store)
    assert len(children) == 3
    by_model = {c.data.params["model.name"]: c for c in children}
    broken = by_model["broken"]
    assert broken.data.tags["status"] == "error" and "always fails" in broken.data.tags["reason"]
    assert broken.info.status == "FAILED"
    assert "traceback.txt" in _artifacts(client, broken.info.run_id)
    assert by_model[sweep.default_model].data.tags["status"] == "ok"
    assert parents[0].info.status == "FAILED" and parents[0].data.metrics["jobs_error"] == 1


def test_a_bad_value_in_a_sweep_stops_it_before_any_job_or_run(store, tmp_path):
    proc = run_script("-m", "dtype=float16,float8", *TINY, store=store, cwd=tmp_path)
    assert proc.returncode != 0
    assert "float8" in proc.stderr and "dtype" in proc.stderr and "bfloat16" in proc.stderr
    assert not (tmp_path / "multirun" / "0").exists()  # no job started
    _, parents, children = _runs(store)
    assert (parents, children) == ([], [])  # the parent run waits for every job's config to be checked
