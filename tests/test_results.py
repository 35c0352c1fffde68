"""Results are durable before they are tracked: saved in the job folders, printed and counted from there when
tracking fails, and uploaded later by `attnbench sync`, once — from wherever the folder is, each damaged file said
and the others uploaded, also after a sync killed part-way."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from attnbench import cli
from attnbench.store import results
from conftest import FAST_TIMING, NEVER_CONTENDED, run_script, tracked_runs

pytestmark = pytest.mark.slow
TINY = ["shape=tiny", "device=cpu", *FAST_TIMING, NEVER_CONTENDED]  # the report names a winner


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


def _copy_of_sweep(failing_store_sweep, to: Path) -> Path:
    """The sweep's folder as `cp -r` leaves it elsewhere: its results, link files, Hydra files and logs."""
    tmp, _, _ = failing_store_sweep
    shutil.copytree(tmp / "multirun", to, symlinks=True)
    return to


def _edit_result(job_dir: Path, **changes) -> None:
    path = job_dir / results.RESULT_FILE
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _uri(store: Path) -> str:
    return f"sqlite:///{store}/mlflow.db"


def test_sync_of_a_folder_from_another_machine_reads_it_where_it_is(failing_store_sweep, tmp_path, store):
    # Result files from before schema 3, or written elsewhere, name a folder that is not on this machine.
    sweep = _copy_of_sweep(failing_store_sweep, tmp_path / "copied")
    for job in ("0", "1"):
        _edit_result(sweep / job, schema=2, dir=f"/home/someone/else/multirun/{job}")
    proc = _sync(sweep, _uri(store))
    assert proc.returncode == 0 and "2 results uploaded" in proc.stdout, proc.stderr[-3000:]
    client, (parent,), children = tracked_runs(store)
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {".hydra", "result.json"}


def test_sync_reads_nothing_outside_the_folder_it_is_given(failing_store_sweep, tmp_path, store):
    sweep = _copy_of_sweep(failing_store_sweep, tmp_path / "sweep")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(sweep / "1", elsewhere)
    (elsewhere / "private.log").write_text("not for the store")
    _edit_result(sweep / "0", dir=str(elsewhere))  # a result file naming another folder
    _edit_result(elsewhere, id="another-result")
    (sweep / "2").symlink_to(elsewhere, target_is_directory=True)  # a job folder that is a link out of the sweep
    proc = _sync(sweep, _uri(store))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"{sweep / '2' / results.RESULT_FILE}: a link to {elsewhere / results.RESULT_FILE}, outside" in proc.stderr
    client, _, children = tracked_runs(store)
    assert sorted(c.data.tags["hydra.job.num"] for c in children) == ["0", "1"]
    uploaded = {a.path for c in children for a in client.list_artifacts(c.info.run_id)}
    assert "private.log" not in uploaded and "run.log" in uploaded


DAMAGED = {  # job folder → what its result.json holds, and what its one line says
    "2": ('{"status": "ok", "id": "cut-short', "not JSON (Unterminated string"),
    "3": ({"id": "ok-without-median", "metrics": {"job_s": 1.0}}, "an `ok` result without its median"),
    "4": ({"id": "slow-median", "metrics": {"median_us": "slow"}}, "metrics.median_us is 'slow', not a number"),
}


def test_each_damaged_result_is_said_the_others_are_uploaded_and_a_rerun_adds_nothing(failing_store_sweep,
                                                                                      tmp_path, store):
    sweep = _copy_of_sweep(failing_store_sweep, tmp_path / "sweep")
    for job, (content, _) in DAMAGED.items():
        shutil.copytree(sweep / "0", sweep / job)  # job 0 is `ok`: its Hydra files, its result changed
        if isinstance(content, dict):
            _edit_result(sweep / job, **content)
        else:
            (sweep / job / results.RESULT_FILE).write_text(content)
    for attempt in ("first", "again"):
        proc = _sync(sweep, _uri(store))
        assert proc.returncode == 1, f"{attempt}: {proc.stderr[-3000:]}"
        for job, (_, why) in DAMAGED.items():
            said = [line for line in proc.stderr.splitlines() if str(sweep / job / results.RESULT_FILE) in line]
            assert len(said) == 1 and why in said[0], f"{attempt}: {proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr and "store failed" not in proc.stderr
        assert ("2 results uploaded" if attempt == "first" else "0 results uploaded, 2 already") in proc.stdout
        _, (parent,), children = tracked_runs(store)
        assert sorted((c.data.tags["hydra.job.num"], c.data.tags["status"]) for c in children) == [
            ("0", "ok"), ("1", "unsupported")]
        assert parent.info.status == "FAILED" and parent.data.tags["reason"].startswith(
            "3 result files cannot be read: 2/result.json (not JSON")


KILLER = """
import os, signal, sys
from attnbench import cli
from attnbench.store.tracking import upload

point = sys.argv.pop(1)
write_link = upload.write_link

def killed_before_linking_job_1(path, *args):
    if path.name == "mlflow_run.json" and path.parent.name == "1":  # its run is created, not yet linked
        os.kill(os.getpid(), signal.SIGKILL)
    write_link(path, *args)

def killed_before_closing_the_parent(*args, **kwargs):  # every job uploaded
    os.kill(os.getpid(), signal.SIGKILL)

if point == "link":
    upload.write_link = killed_before_linking_job_1
else:
    upload.finish_parent = killed_before_closing_the_parent
sys.exit(cli.main())
"""


@pytest.mark.long
@pytest.mark.parametrize("point", ["link", "parent"])
def test_a_sync_killed_part_way_then_run_again_uploads_each_result_once_and_closes_the_parent(
        failing_store_sweep, tmp_path, store, point):
    sweep = _copy_of_sweep(failing_store_sweep, tmp_path / "sweep")
    killer = tmp_path / "killed_sync.py"
    killer.write_text(KILLER)
    killed = subprocess.run([sys.executable, str(killer), point, "sync", str(sweep), "--uri", _uri(store)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    again = _sync(sweep, _uri(store))
    assert again.returncode == 0, again.stderr[-3000:]
    client, (parent,), children = tracked_runs(store)
    assert sorted((c.data.tags["hydra.job.num"], c.data.tags["status"], c.info.status) for c in children) == [
        ("0", "ok", "FINISHED"), ("1", "unsupported", "FAILED")]
    assert parent.info.status == "FINISHED" and not {"status", "reason"} & parent.data.tags.keys()
    assert parent.data.metrics == {"jobs_ok": 1, "jobs_unsupported": 1}


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
