"""The launchers of conf/hydra/launcher/: jobs in several processes, none lost or duplicated, placement recorded,
every run closed when the sweep is stopped, and a Slurm submission as sbatch would receive it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnbench.harness import placement
from attnbench.store import results
from attnbench.store.tracking.names import PARENT_FILE
from conftest import FIXTURES, NEVER_CONTENDED, REPO, _command, run_script, tracked_runs, wait_until
from servers import mlflow_server

TRIVIAL = ["shape=tiny", "device=cpu", "dtype=float32", "timing.warmup_s=0", "timing.min_time_s=0",
           "timing.min_reps=1", "timing.max_reps=1"]


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("into", ["local store", "tracking server"])
def test_four_workers_record_160_jobs_once_each(tmp_path: Path, store: Path, into: str) -> None:
    with contextlib.ExitStack() as stack:
        uri = f"sqlite:///{store}/mlflow.db"
        if into == "tracking server":  # the store behind a real `mlflow server`, written to over HTTP only
            uri = stack.enter_context(mlflow_server(uri, store / "artifacts"))
        done = run_script("-m", "hydra/launcher=cpu_pool", "hydra.launcher.n_jobs=4", *TRIVIAL, "seed=range(160)",
                          f"tracking.uri={uri}", store=None, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _, parents, children = tracked_runs(store)
    assert len(parents) == 1
    numbers = sorted(int(run.data.tags["hydra.job.num"]) for run in children)
    assert numbers == list(range(160))  # every job once: none lost, none twice
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parents[0].info.run_id}
    assert {run.data.tags["status"] for run in children} == {"ok"}
    tags = [run.data.tags for run in children]
    assert {t["placement.launcher"] for t in tags} == {"cpu_pool"}
    assert {t["placement.threads"] for t in tags} == {str(max(1, placement.usable_cores() // 4))}
    assert 1 < len({t["placement.worker_pid"] for t in tags}) <= 4
    side_by_side = [int(t["placement.concurrent_jobs"]) for t in tags]
    assert max(side_by_side) <= 4 and max(side_by_side) > 1  # in parallel, never more jobs than workers
    (sweep_dir,) = [file.parent for file in tmp_path.rglob("multirun.yaml")]
    assert not (sweep_dir / ".configs").exists()  # the configs handed to the workers are cleared with the sweep


def _running_children(store: Path, sweep_dir: Path) -> int:
    if not (sweep_dir / PARENT_FILE).is_file():  # the sweep is still creating the store: a client here would too
        return 0
    _, _, children = tracked_runs(store)
    return sum(run.info.status == "RUNNING" for run in children)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_stopping_a_parallel_sweep_closes_every_run(tmp_path: Path, store: Path, how: str) -> None:
    # Jobs that time for a minute: both workers are inside a job when the sweep is stopped.
    args = ("-m", "hydra/launcher=cpu_pool", "hydra.launcher.n_jobs=2", *TRIVIAL[:-3], "timing.min_time_s=60",
            "timing.min_reps=1", "timing.max_reps=1000000000", "seed=0,1,2,3")
    cmd, env = _command(args, store, tmp_path, REPO / "run.py", None)
    # Its own session, as a terminal's foreground job: Ctrl-C reaches every process of it, and not this one.
    sweep = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=(tmp_path / "stderr.txt").open("w"), start_new_session=True)
    try:
        wait_until(lambda: _running_children(store, tmp_path / "multirun") == 2, "both workers run a job")
        if how == "Ctrl-C":
            os.killpg(sweep.pid, signal.SIGINT)
        else:  # what `timeout` and `docker stop` send: to the sweep process alone
            sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=120) != 0
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    _, parents, children = tracked_runs(store)
    assert [run.info.status for run in parents] == ["KILLED"]
    assert [run.info.status for run in children] == ["KILLED", "KILLED"]
    for run in children:
        assert run.data.tags["status"] == "interrupted"
        assert run.data.tags["reason"].startswith("stopped by SIG")


@pytest.mark.slow
@pytest.mark.long
def test_a_pool_worker_killed_mid_job_costs_that_job_alone(tmp_path: Path, store: Path) -> None:
    # Seed 3's job kills the loky worker running it with SIGKILL, as the OOM killer does (tests/fixtures/
    # pool_worker_killer.py). Under Hydra's joblib launcher that ended the sweep, 6 of the 8 jobs without a result.
    done = run_script("-m", "hydra/launcher=cpu_pool", "hydra.launcher.n_jobs=2", "model=killing_its_pool_worker",
                      *TRIVIAL, NEVER_CONTENDED, "seed=range(8)", f"hydra.searchpath=[file://{FIXTURES}/conf]",
                      store=store, cwd=tmp_path, script=FIXTURES / "run_killing_a_pool_worker.py")
    assert done.returncode == 1, done.stderr[-3000:]  # a job crashed: the exit code says so
    killed = "the launcher's worker process running this job (hydra/launcher=cpu_pool) was killed by SIGKILL"
    saved = {int(record.job): record for record in results.read_all(tmp_path / "multirun")}
    assert {job: str(record.status) for job, record in saved.items()} == \
        {job: "crashed" if job == 3 else "ok" for job in range(8)}
    assert saved[3].reason.startswith(killed) and saved[3].params["seed"] == "3"
    _, parents, children = tracked_runs(store)
    assert [run.info.status for run in parents] == ["FAILED"]
    numbers = sorted(int(run.data.tags["hydra.job.num"]) for run in children)
    assert numbers == list(range(8))  # every job once, numbered as Hydra numbered it: none lost, none twice
    by_job = {int(run.data.tags["hydra.job.num"]): run for run in children}
    assert {job: (run.info.status, run.data.tags["status"]) for job, run in by_job.items()} == \
        {job: ("FAILED", "crashed") if job == 3 else ("FINISHED", "ok") for job in range(8)}
    assert by_job[3].data.tags["reason"] == saved[3].reason and by_job[3].data.params["seed"] == "3"
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # a sweep in a subprocess, through submitit
def test_a_slurm_sweep_is_submitted_as_one_job_array(tmp_path: Path, store: Path) -> None:
    # No cluster here: a stand-in sbatch keeps the script submitit hands it, and refuses it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "sbatch: error: no cluster (test)" >&2\n'
                      "exit 1\n")
    sbatch.chmod(0o755)
    (bin_dir / "srun").symlink_to(sbatch)  # submitit looks for srun to know it is on a cluster
    done = run_script("-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=team",
                      "hydra.launcher.timeout_min=30", "hydra.launcher.array_parallelism=2", *TRIVIAL,
                      "seed=0,1,2,3", store=store, cwd=tmp_path,
                      env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode != 0  # nothing ran: the command must not say it did
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=team", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --time=30", "#SBATCH --array=0-3%2", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --ntasks-per-node=1"):
        assert line in script, f"{line!r} not in the submission script:\n{script}"
    assert "submitit.core._submit" in script  # each array task runs its job through submitit
    _, parents, _ = tracked_runs(store)
    assert [run.info.status for run in parents] == ["FAILED"]  # the sweep that never ran says so


def test_slurm_without_slurm_is_refused_in_one_line(tmp_path: Path, store: Path) -> None:
    done = run_script("-m", "hydra/launcher=slurm", *TRIVIAL, "seed=0,1", store=store, cwd=tmp_path,
                      env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 1
    assert "hydra/launcher=slurm: Slurm's sbatch is not on this machine's PATH" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_a_pool_of_no_workers_is_refused_in_one_line(tmp_path: Path, store: Path, workers: str) -> None:
    done = run_script("-m", "hydra/launcher=cpu_pool", f"hydra.launcher.n_jobs={workers}", *TRIVIAL, "seed=0,1",
                      store=store, cwd=tmp_path)
    assert done.returncode == 1
    assert f"hydra.launcher.n_jobs={workers} is not valid: expected a whole number of worker processes >= 1" \
        in done.stderr
    assert "Traceback" not in done.stderr and not list((tmp_path / "multirun").glob("*/result.json"))


# --- placement, unit by unit --------------------------------------------------------------------------
GPUS = (("0", "GPU-aaaa"), ("1", "GPU-bbbb"))


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "host_gpus", lambda: GPUS)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert placement.visible_gpus() == GPUS and placement.gpu_workers() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert placement.visible_gpus() == (GPUS[1],) and placement.gpu_workers() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa")
    assert placement.visible_gpus() == (GPUS[0],)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert placement.visible_gpus() == () and placement.gpu_workers() == 1  # no GPU: one job after another


HOLD_A_GPU = """
import sys, time
from attnbench.harness import placement
from attnbench.store.tracking.names import PARENT_FILE
placement.host_gpus = lambda: (("0", "GPU-aaaa"), ("1", "GPU-bbbb"))
placement.LOCK_DIR = placement.Path(sys.argv[1])
print(placement._hold_a_gpu()[1], flush=True)
time.sleep(600)
"""


def test_gpu_workers_never_share_a_gpu(tmp_path: Path) -> None:
    """Two processes hold the two GPUs; a third gets one only when a holder ends (even killed)."""
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    holders = [subprocess.Popen([sys.executable, "-c", HOLD_A_GPU, str(tmp_path)], stdout=subprocess.PIPE,
                                text=True, env=env) for _ in range(2)]
    try:
        held = {holder.stdout.readline().strip() for holder in holders}
        assert held == {"GPU-aaaa", "GPU-bbbb"}
        third = subprocess.Popen([sys.executable, "-c", HOLD_A_GPU, str(tmp_path)], stdout=subprocess.PIPE,
                                 text=True, env=env)
        holders.append(third)
        holders[0].kill()  # kill -9 lets go of its lock too
        assert third.stdout.readline().strip() in held
    finally:
        for holder in holders:
            holder.kill()


def test_jobs_side_by_side_are_counted_at_their_most(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / placement.JOBS_DIR / "not-a-span.json"  # whatever else lands there is passed over
    other.parent.mkdir(parents=True)
    other.write_text('{"device_peak_tflops": 700}')
    clock = iter([0.0, 1.0, 2.0, 3.0, 5.0, 10.0]).__next__
    monkeypatch.setattr(placement.time, "time", clock)
    placement.job_started(tmp_path, "a")  # 0 ........ 5
    placement.job_started(tmp_path, "b")  #   1 .. 3
    placement.job_started(tmp_path, "c")  #     2 ......... 10
    assert placement.job_ended(tmp_path, "b") == {"placement.concurrent_jobs": "3"}  # a, b and c at 2..3
    assert placement.job_ended(tmp_path, "a") == {"placement.concurrent_jobs": "3"}
    assert placement.job_ended(tmp_path, "c") == {"placement.concurrent_jobs": "3"}


def test_a_gpus_ceilings_are_measured_once_per_sweep_and_read_by_every_later_process(tmp_path, monkeypatch):
    from attnbench.core import peak

    measured = []

    def measure(device, dtype):
        measured.append(device)
        return {"device_peak_tflops": 700.0}

    monkeypatch.setattr(peak, "_measure_peaks", measure)
    monkeypatch.setattr(peak.torch.cuda, "get_device_properties", lambda device: type("P", (), {"uuid": "aaaa"}))
    monkeypatch.setattr(peak, "SAVED_IN", tmp_path / placement.CEILINGS_DIR)
    gpu = torch.device("cuda", 0)
    for _ in range(2):  # two job workers of the GPU, one after the other: each a fresh process (no lru_cache)
        peak.measured_peaks.cache_clear()
        assert peak.measured_peaks(gpu, torch.float16) == {"device_peak_tflops": 700.0}
    assert len(measured) == 1
    assert (tmp_path / placement.CEILINGS_DIR / "ceilings-GPU-aaaa-float16.json").is_file()
    peak.measured_peaks.cache_clear()
