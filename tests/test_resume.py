"""resume=true re-runs a sweep, skipping each case already `ok` in the experiment, in the same parent run."""

from __future__ import annotations

import pytest

from attnbench.harness.resume import sweep_key
from attnbench.store import results
from conftest import FAST_TIMING, run_script, tracked_runs

TINY = ["shape=tiny", "device=cpu", *FAST_TIMING]


def test_a_sweep_is_the_same_sweep_whatever_its_timing_tracking_or_resume(compose_cfg):
    def key(*overrides: str) -> str:
        return sweep_key(compose_cfg(*overrides, return_hydra_config=True))

    assert key("backend=math", "timing.max_job_s=60", "resume=true", "tracking.experiment=x") == key("backend=math")
    assert key("backend=math") != key("backend=flash") != key("experiment=seed_sdpa")


@pytest.mark.slow
def test_resume_skips_cases_already_ok_and_adds_the_others_to_the_same_parent(store, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    assert run_script("-m", "backend=math,efficient", *TINY, store=store, cwd=first).returncode == 0
    proc = run_script("-m", "backend=math,efficient", *TINY, "resume=true", store=store, cwd=second)
    assert proc.returncode == 0, proc.stderr[-3000:]

    skipped, rerun = results.read_all(second / "multirun")
    _, parents, children = tracked_runs(store)
    math_run = next(c for c in children if c.data.tags["status"] == "ok")
    assert skipped.status == "skipped" and math_run.info.run_id in skipped.reason
    assert rerun.status == "unsupported"  # not ok before: run again
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["status"] for c in children) == ["ok", "unsupported", "unsupported"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert "skipped" in proc.stdout  # the table shows what was skipped
