"""Every way a sweep ends is recorded, and the exit code says what happened: signals, kill -9, runaway and
crashing jobs, a job that could not be fully logged, a failing job with the MLflow callback removed."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from attnbench.harness import outcome
from attnbench.store import results
from conftest import FAST_TIMING, FIXTURES, job_is_running, run_script, start_script, tracked_runs, wait_until

pytestmark = pytest.mark.slow
TINY = ["shape=tiny", "device=cpu", *FAST_TIMING]
# A job that never finishes on its own: it samples until it is stopped.
RUNAWAY = ["shape=tiny", "device=cpu", "timing.min_time_s=1e9", "timing.max_reps=1000000000"]
FAILING = FIXTURES / "run_with_failing_workloads.py"
FIXTURE_CONF = f"hydra.searchpath=[file://{FIXTURES}/conf]"


def _stopped_while_job_0_runs(tmp_path: Path, store: Path, signum: int, *args: str):
    proc = start_script("-m", "seed=1,2,3", *RUNAWAY, *args, store=store, cwd=tmp_path)
    wait_until(lambda: job_is_running(tmp_path / "multirun" / "0") or proc.poll() is not None, "job 0 runs")
    proc.send_signal(signum)
    proc.wait(timeout=120)
    return proc, (tmp_path / "stderr.txt").read_text()


@dataclass
class Stopped:
    folder: Path  # the sweep's cwd: multirun/ in it
    store: Path
    returncode: int
    stderr: str
    parents: list  # the runs as they were right after the stop
    children: list


@pytest.fixture(scope="module")
def stopped_by(tmp_path_factory, empty_store_db):
    """stopped_by(signum): a sweep of runaway jobs stopped by that signal while job 0 ran, each signal's once per
    module. Its runs are read right after the stop: a later test may resume the sweep in the same store."""
    done: dict[int, Stopped] = {}

    def _stopped(signum: int) -> Stopped:
        if signum not in done:
            folder = tmp_path_factory.mktemp(f"stopped_by_{signal.Signals(signum).name}")
            store = folder / "mlruns"
            store.mkdir()
            shutil.copyfile(empty_store_db, store / "mlflow.db")
            proc, stderr = _stopped_while_job_0_runs(folder, store, signum)
            _, parents, children = tracked_runs(store)
            done[signum] = Stopped(folder, store, proc.returncode, stderr, parents, children)
        return done[signum]

    return _stopped


# SIGHUP takes the same handler and the same path in the sweep process; it is checked in-process below.
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_records_the_running_job_and_the_sweep_as_killed(stopped_by, signum):
    stopped = stopped_by(signum)
    stderr, parents, children = stopped.stderr, stopped.parents, stopped.children
    name = signal.Signals(signum).name
    assert stopped.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and f"attnbench: stopped by {name}" in stderr
    assert [(c.info.status, c.data.tags["status"]) for c in children] == [("KILLED", "interrupted")]
    assert name in children[0].data.tags["reason"]
    assert parents[0].info.status == "KILLED" and name in parents[0].data.tags["reason"]
    saved = results.read(stopped.folder / "multirun" / "0")
    assert saved.status == "interrupted" and name in saved.reason
    assert not (stopped.folder / "multirun" / "1").exists()


def test_sighup_stops_a_sweep_as_sigterm_does(monkeypatch):
    """A closed terminal (SIGHUP) reaches the same handler as SIGINT and SIGTERM, whose sweeps are stopped above,
    and names itself: in the reasons (outcome.interrupted_by) and in the exit code, 128 + 1."""
    before = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGINT", "SIGTERM", "SIGHUP")}
    monkeypatch.setattr(outcome, "outcome", outcome.Outcome())
    try:
        outcome.handle_stop_signals()
        handlers = {name: signal.getsignal(getattr(signal, name)) for name in before}
    finally:
        for name, handler in before.items():
            signal.signal(getattr(signal, name), handler)
    assert handlers["SIGHUP"] is handlers["SIGTERM"] is handlers["SIGINT"]
    with pytest.raises(outcome.Interrupted) as stopped:
        handlers["SIGHUP"](signal.SIGHUP, None)
    assert isinstance(stopped.value, KeyboardInterrupt) and str(stopped.value) == "SIGHUP"
    assert outcome.interrupted_by() == "SIGHUP" and outcome.outcome.exit_code() == 128 + signal.SIGHUP


def test_an_interrupted_sweep_resumes_into_its_parent_with_other_timing(stopped_by):
    stopped = stopped_by(signal.SIGTERM)  # the sweep stopped above, or stopped now
    store = stopped.store
    resumed = stopped.folder / "resumed"
    resumed.mkdir()
    # The same sweep (seed=1,2,3) with timing that lets the jobs finish: timing does not change a case.
    proc = run_script("-m", "seed=1,2,3", *TINY, "resume=true", store=store, cwd=resumed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, children = tracked_runs(store)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and "reason" not in parents[0].data.tags
    assert sorted(c.data.tags["status"] for c in children) == ["interrupted", "ok", "ok", "ok"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.long
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_runs_left_running_by_a_killed_sweep_are_closed_by_the_next_one(store, tmp_path):
    proc = start_script("-m", "seed=1,2", *RUNAWAY, store=store, cwd=tmp_path)
    wait_until(lambda: job_is_running(tmp_path / "multirun" / "0"), "job 0 runs")
    workers = _children_of(proc.pid)
    proc.kill()  # kill -9: nothing of the sweep process runs any more
    proc.wait(timeout=60)
    # Its worker notices it was orphaned and stops the runaway job.
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "the orphaned worker exits", 60)
    _, parents, children = tracked_runs(store)
    assert [r.info.status for r in parents + children] == ["RUNNING", "RUNNING"]

    later = tmp_path / "later"
    later.mkdir()
    assert run_script(*TINY, store=store, cwd=later).returncode == 0
    client, parents, children = tracked_runs(store)
    killed = [r for r in parents + children if str(proc.pid) in r.data.tags.get("reason", "")]
    assert sorted(r.info.status for r in killed) == ["KILLED", "KILLED"]
    assert [c.data.tags["status"] for c in children] == ["interrupted"]


@pytest.mark.long
def test_a_runaway_kernel_call_times_out_and_the_sweep_goes_on(store, tmp_path):
    # S = 10⁶: a single flash-attention call of ~10¹⁴ FLOPs, minutes of C++ that no Python signal interrupts.
    proc = run_script("-m", "shape.seq_len=1000000,16", "backend=flash", "timing.max_job_s=5", *TINY,
                      store=store, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    runaway, normal = results.read_all(tmp_path / "multirun")
    assert runaway.status == "timeout" and "timing.max_job_s=5" in runaway.reason
    assert normal.status == "ok", normal.reason
    _, parents, children = tracked_runs(store)
    by_status = {c.data.tags["status"]: c.info.status for c in children}
    assert by_status == {"timeout": "FAILED", "ok": "FINISHED"} and parents[0].info.status == "FAILED"
    assert "timeout" in proc.stdout  # the table


def test_a_crashing_job_is_recorded_and_the_sweep_goes_on(failing_sweep):
    # model=broken,crashing,<default>: the exception is test_e2e's
    sweep = failing_sweep
    assert sweep.returncode == 1, (sweep.folder / "stderr.txt").read_text()[-3000:]
    broken, crashed, normal = results.read_all(sweep.folder / "multirun")
    assert broken.status == "error"
    assert crashed.status == "crashed" and "SIGABRT" in crashed.reason
    assert normal.status == "ok", normal.reason  # in the worker that replaced the crashed one
    _, _, children = tracked_runs(sweep.store)
    assert sorted((c.data.tags["status"], c.info.status) for c in children) == [
        ("crashed", "FAILED"), ("error", "FAILED"), ("ok", "FINISHED")]


@pytest.mark.parametrize("removed", [["mlflow"], ["mlflow", "summary"]])
def test_a_failed_job_exits_nonzero_without_the_callbacks(store, tmp_path, removed):
    proc = run_script("model=broken", *TINY, FIXTURE_CONF, *[f"~hydra.callbacks.{name}" for name in removed],
                      store=store, cwd=tmp_path, script=FAILING)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert results.read(tmp_path / "outputs").status == "error"


@contextlib.contextmanager
def _small_disk(folder: Path, size: str):
    """A tmpfs of `size` at `folder` (root and a kernel that lets it mount; else the test skips, saying why)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or 'not root'}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _stopped_for_a_full_disk(proc, store: Path, sweep_dir: Path, before: int) -> None:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    full = [line for line in proc.stderr.splitlines() if line.startswith(f"the disk of {sweep_dir} is full (")]
    assert len(full) == 1 and "resume=true" in full[0], proc.stderr[-3000:]
    _, (parent,), children = tracked_runs(store)
    assert parent.info.status == "FAILED" and parent.data.tags["reason"] == full[0]
    assert len(children) == before and {(c.info.status, c.data.tags["status"]) for c in children} == {
        ("FINISHED", "ok")}  # the jobs before the full disk, recorded whole
    assert [r.status for r in results.read_all(sweep_dir)] == ["ok"] * before  # and kept on the disk


def test_a_full_disk_stops_the_sweep_before_its_next_job_in_one_line(tmp_path, store):
    # 1.3 MB: room for a dozen tiny jobs before less than the 1 MB a job needs is left.
    with _small_disk(tmp_path / "disk", "1300k") as disk:
        proc = run_script("-m", "seed=range(100)", *TINY, store=store, cwd=disk)  # the sweep folder on it
        ran = len(results.read_all(disk / "multirun"))
        assert 0 < ran < 100, proc.stderr[-3000:]
        _stopped_for_a_full_disk(proc, store, disk / "multirun", ran)


def test_a_write_the_full_disk_refuses_mid_sweep_is_the_same_one_line(tmp_path, store):
    proc = run_script("-m", "seed=range(6)", *TINY, store=store, cwd=tmp_path,
                      script=FIXTURES / "run_with_a_write_failing.py")
    _stopped_for_a_full_disk(proc, store, tmp_path / "multirun", 3)
