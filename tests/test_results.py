"""Results are durable before they are tracked: saved in the job folders, printed and counted from there when
tracking fails, and uploaded later by `attnbench sync`, once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from attnbench import cli
from attnbench.store import results
from conftest import FAST_TIMING, run_script, tracked_runs

pytestmark = pytest.mark.slow
TINY = ["shape=tiny", "device=cpu", *FAST_TIMING]


@pytest.fixture(scope="module")
def failing_store_sweep(tmp_path_factory):
    """A sweep whose store accepts runs but cannot take artifacts: tracking fails at the first job's upload."""
    tmp = tmp_path_factory.mktemp("failing_store")
    store = tmp / "mlruns"
    store.mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    client.create_experiment("attnbench", artifact_location="file:///dev/null/artifacts")  # not a folder
    proc = run_script("-m", "backend=math,efficient", *TINY, store=store, cwd=tmp)
    return tmp, store, proc


def test_each_job_saves_its_full_result_in_its_folder(failing_store_sweep):
    tmp, _, _ = failing_store_sweep
    ok, unsupported = results.read_all(tmp / "multirun")
    assert (ok.status, unsupported.status) == ("ok", "unsupported")
    assert ok.params["shape.seq_len"] == "16" and ok.params["backend.name"] == "math"
    assert ok.metrics["median_us"] > 0 and ok.samples["wall"] and all(s > 0 for s in ok.samples["wall"])
    assert ok.tags["case"] and ok.tags["env.torch"] and ok.tags["sdpa.kernel"] == "math"
    assert "CUDA only" in unsupported.reason and unsupported.id != ok.id


def test_a_tracking_failure_is_one_line_the_table_still_prints_and_the_exit_code_says_so(failing_store_sweep):
    tmp, store, proc = failing_store_sweep
    assert proc.returncode == 2, proc.stderr[-3000:]
    failures = [line for line in (proc.stdout + proc.stderr).splitlines() if "tracking failed" in line]
    assert failures and all("attnbench sync" in line and str(store) in line for line in failures)
    assert "Traceback" not in proc.stderr and "UserWarning" not in proc.stderr
    assert "unsupported" in proc.stdout and "math" in proc.stdout  # the table, from the saved results
    _, parents, children = tracked_runs(store)
    # No run looks like a success without its status.
    assert all(r.info.status != "FINISHED" or "status" in r.data.tags for r in parents + children)
    assert parents[0].info.status == "FAILED"


def _sync(folder: Path, uri: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnbench.cli", "sync", str(folder), "--uri", uri],
                          capture_output=True, text=True, timeout=300)


def test_sync_uploads_a_sweep_folder_and_a_second_sync_adds_nothing(failing_store_sweep, tmp_path, capsys):
    tmp, _, _ = failing_store_sweep
    first = _sync(tmp / "multirun", f"sqlite:///{tmp_path}/mlflow.db")
    assert first.returncode == 0 and "2 results uploaded" in first.stdout, first.stderr[-3000:]
    client, parents, children = tracked_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted((c.data.tags["status"], c.info.status) for c in children) == [
        ("ok", "FINISHED"), ("unsupported", "FAILED")]
    ok = next(c for c in children if c.data.tags["status"] == "ok")
    assert ok.data.metrics["median_us"] > 0 and ok.data.params["shape.seq_len"] == "16"
    assert {a.path for a in client.list_artifacts(ok.info.run_id)} >= {".hydra", "result.json", "samples.json"}
    parent_files = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"summary.txt", "summary.md", "summary.csv"} <= parent_files
    assert parents[0].data.tags["mlflow.note.content"].startswith("**Winner")  # sync writes the sweep's report too

    # The second sync in this process (the command's exit code and output are the first's): nothing new.
    code = cli.main(["sync", str(tmp / "multirun"), "--uri", f"sqlite:///{tmp_path}/mlflow.db"])
    second = capsys.readouterr()
    assert code == 0 and "0 results uploaded, 2 already" in second.out, second.err[-3000:]
    _, parents_after, children_after = tracked_runs(tmp_path)
    assert (len(parents_after), len(children_after)) == (1, 2)


def test_sync_of_a_folder_without_results_says_so(tmp_path):
    proc = _sync(tmp_path, f"sqlite:///{tmp_path}/mlflow.db")
    assert proc.returncode == 1 and "nothing to sync" in proc.stderr and "Traceback" not in proc.stderr


def test_a_damaged_result_file_in_a_sweep_fails_its_parent_and_the_exit_code(store, tmp_path):
    stray = tmp_path / "multirun" / "stray"
    stray.mkdir(parents=True)
    (stray / results.RESULT_FILE).write_text('{"status": "ok"')
    proc = run_script("-m", "backend=math", *TINY, store=store, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if str(stray / results.RESULT_FILE) in line]
    assert len(said) == 1 and "not JSON" in said[0] and "Traceback" not in proc.stderr
    assert "math" in proc.stdout  # the table of the results that can be read
    _, (parent,), (child,) = tracked_runs(store)
    assert child.data.tags["status"] == "ok" and parent.info.status == "FAILED"
    assert parent.data.tags["reason"].startswith("1 result file cannot be read: stray/result.json (not JSON")
