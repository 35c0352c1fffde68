"""What the harness costs per job: Hydra composition, MLflow logging and environment capture.

Runs the same N trivial jobs (tiny shape, CPU, one timed sample) two ways — one `python run.py -m` sweep in
one process, and N separate `python run.py` processes — against a throw-away MLflow store, and reports
(wall time − time inside the jobs) / N for each. Time inside a job is its `job_s` metric (everything the task
function does: validation, build, check, profiling, timing).

    python benchmarks/overhead.py            # 50 jobs each way
    python benchmarks/overhead.py --jobs 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRIVIAL = ["shape=tiny", "device=cpu", "dtype=float32", "timing.warmup_s=0", "timing.min_time_s=0",
           "timing.min_reps=1", "timing.max_reps=1"]


def _run(args: list[str], env: dict, workdir: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "run.py"), *args, f"hydra.sweep.dir={workdir}/multirun",
                    f"hydra.run.dir={workdir}/outputs/${{now:%H-%M-%S-%f}}"],
                   env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _time_in_jobs(uri: str) -> tuple[int, float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("attnbench")
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=10000) if "status" in r.data.tags]
    return len(runs), sum(r.data.metrics["job_s"] for r in runs)


def measure(jobs: int, separate: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        uri = f"sqlite:///{workdir}/mlflow.db"
        env = os.environ | {"MLFLOW_TRACKING_URI": uri}
        if separate:
            wall = sum(_run([*TRIVIAL, f"seed={i}"], env, workdir) for i in range(jobs))
        else:
            wall = _run(["-m", *TRIVIAL, f"seed=range({jobs})"], env, workdir)
        count, in_jobs = _time_in_jobs(uri)
    assert count == jobs, f"expected {jobs} runs in the store, found {count}"
    return {"wall_s": wall, "in_jobs_s": in_jobs, "overhead_per_job_s": (wall - in_jobs) / jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--small", type=int, default=10, help="a second, smaller sweep: fixed vs per-job cost")
    args = parser.parse_args()
    sweep = measure(args.jobs, separate=False)
    small = measure(args.small, separate=False)
    separate = measure(args.jobs, separate=True)
    print(f"{args.jobs} trivial jobs on {os.cpu_count()} CPUs")
    print(f"{'':30} {'wall s':>8} {'in jobs s':>10} {'overhead s/job':>15}")
    for name, r in ((f"one sweep of {args.jobs} (run.py -m)", sweep), (f"one sweep of {args.small}", small),
                    (f"{args.jobs} separate processes", separate)):
        print(f"{name:30} {r['wall_s']:8.1f} {r['in_jobs_s']:10.2f} {r['overhead_per_job_s']:15.3f}")
    # Two sweep sizes separate the once-per-sweep cost (imports, a fresh store) from the cost of each job.
    extra = args.jobs - args.small
    marginal = ((sweep["wall_s"] - sweep["in_jobs_s"]) - (small["wall_s"] - small["in_jobs_s"])) / extra
    fixed = (sweep["wall_s"] - sweep["in_jobs_s"]) - marginal * args.jobs
    print(f"sweep overhead = {fixed:.1f} s once (start-up, store) + {marginal:.3f} s per job")


if __name__ == "__main__":
    main()
