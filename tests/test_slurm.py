"""hydra/launcher=slurm_cpu on a real one-node Slurm cluster (tests/slurm_cluster.py, brought up once per test run):
a sweep as a job array, a task cancelled from outside, Ctrl-C of the sweep, Slurm's time limit, and a request the
partition can never run. Skipped, with the reason, where Slurm is not installed (`make slurm-install`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

import slurm_cluster
from attnbench.store import results
from attnbench.store.tracking.names import PARENT_FILE
from conftest import NEVER_CONTENDED, REPO, _command, run_script, tracked_runs, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
# The sweeps on the cluster take 14-82 s each (Slurm checks time limits every 30 s): they are `long`, so `make test`
# stays within 8 minutes on 2 cores and CI runs them in `make test-long`; `pytest -m slurm` runs them all.

TRIVIAL = ["shape=tiny", "device=cpu", "dtype=float32", "timing.warmup_s=0", "timing.min_time_s=0",
           "timing.min_reps=1", "timing.max_reps=1", NEVER_CONTENDED]
# A job that times for this long once its run exists: long enough to be caught running, whatever the machine's load
# (the timing loop's wall time is at least the sum of its samples).
TIMED_FOR_S = 10
UNENDING = ["timing.max_reps=1000000000", "timing.max_job_s=null"]


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory) -> dict[str, str]:
    """The cluster's clients' environment (SLURM_CONF); its daemons run for the whole test run."""
    problem = slurm_cluster.missing()
    if problem:
        pytest.skip(problem)
    folder = tmp_path_factory.mktemp("slurm")
    env = slurm_cluster.up(folder)
    yield env
    slurm_cluster.down(folder)


@pytest.fixture
def cluster(slurm_env):
    """The cluster, with no job of an earlier test left in its queue after each test."""
    yield slurm_env
    _slurm(slurm_env, "scancel", "--user", "root")
    wait_until(lambda: not _slurm(slurm_env, "squeue", "-h", "-o", "%i"), "the queue is empty", 120)


def _slurm(env: dict[str, str], *command: str) -> str:
    return subprocess.run(command, env=os.environ | env, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def _array(printed: str) -> str:
    found = re.search(r"submitted as Slurm job array (\d+)", printed)
    assert found, f"no array id in:\n{printed[-3000:]}"
    return found.group(1)


def _queued_array(env: dict[str, str]) -> str:
    """The one job array in the queue (each test leaves the queue empty)."""
    (array,) = set(_slurm(env, "squeue", "-h", "-o", "%F").split())
    return array


def _start(tmp_path: Path, store: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    """The sweep, left running in its own session (as a terminal's foreground job), its output in files."""
    cmd, environment = _command(("-m", *args), store, tmp_path, REPO / "run.py", env)
    return subprocess.Popen(cmd, cwd=tmp_path, env=environment, stdout=(tmp_path / "stdout.txt").open("w"),
                            stderr=(tmp_path / "stderr.txt").open("w"), start_new_session=True)


def _running_jobs(store: Path, sweep_dir: Path) -> set[str]:
    """The jobs whose run is open: each is inside its task."""
    if not (sweep_dir / PARENT_FILE).is_file():  # the sweep is still creating the store
        return set()
    _, _, children = tracked_runs(store)
    return {run.data.tags["hydra.job.num"] for run in children if run.info.status == "RUNNING"}


@pytest.mark.long
def test_a_cpu_sweep_runs_as_one_slurm_array(tmp_path: Path, store: Path, cluster) -> None:
    done = run_script("-m", "hydra/launcher=slurm_cpu", *TRIVIAL, "seed=0,1,2", store=store, cwd=tmp_path,
                      env=cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    array = _array(done.stdout)
    assert done.stdout.index(f"`squeue -j {array}`") < done.stdout.index("job 1/3")  # the array first
    for job in (1, 2, 3):
        assert re.search(rf"job {job}/3 · .* · running on \S+ \(Slurm task {array}_{job - 1}\)", done.stdout)
        assert re.search(rf"job {job}/3 · .* · ok after ", done.stdout)
    client, (parent,), children = tracked_runs(store)
    assert parent.info.status == "FINISHED"
    assert "summary.txt" in {artifact.path for artifact in client.list_artifacts(parent.info.run_id)}
    table = (tmp_path / "multirun" / "summary.txt").read_text()
    assert table in done.stdout and table.count(" ok ") == 3
    assert parent.data.tags["attnbench.command"].startswith("python run.py -m hydra/launcher=slurm_cpu ")
    tags = {run.data.tags["hydra.job.num"]: run.data.tags for run in children}
    assert {run.info.status for run in children} == {"FINISHED"}
    assert {job: t["status"] for job, t in tags.items()} == {"0": "ok", "1": "ok", "2": "ok"}
    assert {job: t["placement.slurm_job"] for job, t in tags.items()} == {str(i): f"{array}_{i}" for i in range(3)}
    assert {t["placement.launcher"] for t in tags.values()} == {"slurm_cpu"}


@pytest.mark.long
def test_a_task_cancelled_by_slurm_costs_its_job_alone(tmp_path: Path, store: Path, cluster) -> None:
    sweep_dir = tmp_path / "multirun"
    args = ["hydra/launcher=slurm_cpu", *TRIVIAL, *UNENDING, f"timing.min_time_s={TIMED_FOR_S}", "seed=0,1"]
    sweep = _start(tmp_path, store, cluster, *args)
    try:
        wait_until(lambda: "1" in _running_jobs(store, sweep_dir), "job 1 runs in its task")
        array = _queued_array(cluster)
        _slurm(cluster, "scancel", f"{array}_1")  # from outside, as a user or an administrator would
        assert sweep.wait(timeout=300) == 1  # a job did not do what it was asked: the exit code says so
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    saved = {record.job: record for record in results.read_all(sweep_dir)}
    assert {job: str(record.status) for job, record in saved.items()} == {"0": "ok", "1": "interrupted"}
    assert saved["1"].reason.startswith("cancelled by Slurm (scancel, or an administrator) while this job ran")
    _, (parent,), children = tracked_runs(store)
    assert parent.info.status == "KILLED"  # a job of it was stopped
    by_job = {run.data.tags["hydra.job.num"]: run for run in children}
    assert {job: (run.info.status, run.data.tags["status"]) for job, run in by_job.items()} == \
        {"0": ("FINISHED", "ok"), "1": ("KILLED", "interrupted")}
    assert by_job["1"].data.tags["reason"] == saved["1"].reason
    (again,) = [line for line in stderr.splitlines() if "resume=true" in line]
    assert again.startswith("attnbench: Slurm ended 1 of 2 jobs before they finished (job 2 interrupted)")
    assert "python run.py -m hydra/launcher=slurm_cpu " in again

    # The same command with resume=true (and no long timing, which is no part of a case) completes the sweep.
    done = run_script("-m", *args, "timing.min_time_s=0", "resume=true", store=store, cwd=tmp_path, env=cluster)
    assert done.returncode == 0, done.stderr[-3000:]
    _, (parent,), children = tracked_runs(store)  # still one sweep
    assert parent.info.status == "FINISHED"
    assert sorted((run.data.tags["hydra.job.num"], run.data.tags["status"]) for run in children) == \
        [("0", "ok"), ("1", "interrupted"), ("1", "ok")]  # job 0 skipped: no run of its own
    saved = {record.job: str(record.status) for record in results.read_all(sweep_dir)}
    assert saved == {"0": "skipped", "1": "ok"}
    assert "job 1/2" in done.stdout and f"Slurm task {_array(done.stdout)}_0" in done.stdout  # job 2, task 0


@pytest.mark.long
def test_ctrl_c_cancels_the_array(tmp_path: Path, store: Path, cluster) -> None:
    sweep_dir = tmp_path / "multirun"
    sweep = _start(tmp_path, store, cluster, "hydra/launcher=slurm_cpu", *TRIVIAL, *UNENDING,
                   "timing.min_time_s=600", "seed=0,1")
    try:
        wait_until(lambda: _running_jobs(store, sweep_dir) == {"0", "1"}, "both jobs run in their tasks")
        array = _queued_array(cluster)
        os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C: to the terminal's foreground process group
        assert sweep.wait(timeout=180) == 128 + signal.SIGINT
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    wait_until(lambda: not _slurm(cluster, "squeue", "-h", "-j", array, "-o", "%i"), "the array is gone", 60)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert f"cancelling Slurm job array {array} (scancel {array})" in stderr, stderr[-3000:]
    _, (parent,), children = tracked_runs(store)
    assert parent.info.status == "KILLED"
    assert sorted((run.info.status, run.data.tags["status"]) for run in children) == \
        [("KILLED", "interrupted")] * 2


@pytest.mark.long
def test_a_job_past_its_slurm_time_limit_is_a_timeout(tmp_path: Path, store: Path, cluster) -> None:
    # Slurm looks at time limits every 30 s: the job ends 60 to ~100 s after it starts.
    done = run_script("-m", "hydra/launcher=slurm_cpu", "hydra.launcher.timeout_min=1", *TRIVIAL, *UNENDING,
                      "timing.min_time_s=600", "seed=0", store=store, cwd=tmp_path, env=cluster, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    (record,) = results.read_all(tmp_path / "multirun")
    assert str(record.status) == "timeout"
    assert record.reason.startswith("Slurm's time limit ran out while this job ran: hydra.launcher.timeout_min=1 "
                                    "(sbatch --time, 00:01:00)"), record.reason
    _, _, (child,) = tracked_runs(store)
    assert (child.info.status, child.data.tags["status"]) == ("FAILED", "timeout")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("ask, refusal", [
    ("hydra.launcher.cpus_per_task=8", "Slurm partition debug can never run a task asking for cpus_per_task=8, "
                                       "timeout_min=60, nodes=1: too many CPUs (partition debug: UP, 1 node, up to 2"),
    ("hydra.launcher.partition=gpu", "hydra.launcher.partition=gpu, and Slurm has no such partition (its "
                                     "partitions: debug)")])
def test_a_request_the_partition_cannot_run_is_refused_before_submission(
        tmp_path: Path, store: Path, cluster, ask: str, refusal: str) -> None:
    # Today's sbatch would queue the 8-CPU array on a 2-CPU node for ever: the command is given two minutes.
    done = run_script("-m", "hydra/launcher=slurm_cpu", ask, *TRIVIAL, "seed=0,1", store=store, cwd=tmp_path,
                      env=cluster, timeout=120)
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("hydra/launcher=slurm_cpu: ")]
    assert refusal in line
    assert "Traceback" not in done.stderr
    assert not _slurm(cluster, "squeue", "-h", "-o", "%i")  # nothing was submitted
    _, (parent,), _ = tracked_runs(store)
    assert parent.info.status == "FAILED" and parent.data.tags["reason"] == line
