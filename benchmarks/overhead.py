"""What the harness costs per job: Hydra composition, MLflow logging and environment capture.

Runs the same N trivial jobs (tiny shape, CPU, one timed sample) as one `python run.py -m` sweep in one
process — into a store that exists (every sweep after a user's first), into a fresh store (the first), with
Hydra's basic sweeper instead of attnbench's compose-once sweeper, and through a tracking server (`make server`:
`mlflow server` on loopback, one worker, artifacts uploaded through it; on SQLite, and on PostgreSQL where
Debian's server and the driver are installed) — and as N separate `python run.py` processes, each against a
throw-away MLflow store, and reports (wall time − time inside the jobs) / N for each. Time inside a job is its
`job_s` metric (everything the task function does: validation, build, check, profiling, timing). The server
runs on the same cores as the sweep, so its own work counts as overhead too; the CPU columns say whose work it
was: the sweep command's (its job worker's included) and everything else's on the machine meanwhile (the server
and its database; on Linux, from /proc/stat), both per job.

Each store is timed with sweeps of two sizes (200 and 50 jobs), which separate what a sweep pays once (Python,
torch and MLflow start-up, the store check, the end-of-sweep report) from what each job costs. Those jobs differ
in a value (`seed=range(N)`); one more sweep, of 40 jobs that each choose their own config-group options
(backend × mask × model), shows what a job costs when Hydra composes it in full.

    python benchmarks/overhead.py                 # and 50 separate processes (~10 minutes on 2 cores)
    python benchmarks/overhead.py --no-separate   # sweeps only (~7 minutes)
    python benchmarks/overhead.py --no-separate --no-servers   # the local store only (~3 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' throw-away servers (tests/servers.py)
TRIVIAL = ["shape=tiny", "device=cpu", "dtype=float32", "timing.warmup_s=0", "timing.min_time_s=0",
           "timing.min_reps=1", "timing.max_reps=1"]
# 40 jobs that each choose their own config-group options, as most attnbench sweeps do (4 backends × 5 masks ×
# 2 models): each is composed by Hydra in full, where jobs that differ in values share one composition.
GROUP_SWEEP = ("backend=default,math,flash,naive", "mask=none,causal,sliding_window,document,prefix_lm",
               "model=attention,multihead_attention")


def _busy_cpu_s() -> float:
    """CPU seconds every process of the machine has used since boot (Linux: /proc/stat; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], env: dict, workdir: Path) -> tuple[float, float, float]:
    """Wall time, the command's CPU time (its worker's included) and the CPU time of everything else on the
    machine meanwhile (a server and its database: on these cores, they compete with the sweep)."""
    start, busy, own = time.perf_counter(), _busy_cpu_s(), _children_cpu_s()
    subprocess.run([sys.executable, str(REPO / "run.py"), *args, f"hydra.sweep.dir={workdir}/multirun",
                    f"hydra.run.dir={workdir}/outputs/${{now:%H-%M-%S-%f}}"],
                   env=env, check=True, capture_output=True)
    own = _children_cpu_s() - own
    return time.perf_counter() - start, own, max(0.0, _busy_cpu_s() - busy - own)


def _runs(uri: str) -> dict[str, float]:
    """job_s of every job run in the store, by run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("attnbench")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], max_results=10000)
    return {r.info.run_id: r.data.metrics["job_s"] for r in runs if "status" in r.data.tags}


@contextlib.contextmanager
def store(workdir: Path, server: str | None):
    """The tracking URI a case sends its sweep to: a SQLite file, or a server on a SQLite file or PostgreSQL."""
    from servers import mlflow_server, postgres

    if server is None:
        yield f"sqlite:///{workdir}/mlflow.db"
        return
    with postgres() if server == "postgresql" else contextlib.nullcontext(f"sqlite:///{workdir}/server.db") as db:
        with mlflow_server(db, workdir / "artifacts") as url:
            yield url


def measure(jobs: int, separate: bool = False, fresh_store: bool = False, extra: tuple[str, ...] = (),
            server: str | None = None, sweep: tuple[str, ...] | None = None) -> dict:
    """One case; `sweep`: the sweep's overrides (default: seed=range(jobs), jobs that differ in a value only)."""
    with tempfile.TemporaryDirectory() as tmp, store(Path(tmp), server) as uri:
        workdir = Path(tmp)
        env = os.environ | {"MLFLOW_TRACKING_URI": uri}
        if not fresh_store:  # the usual case: the store and experiment exist since the first sweep
            _run([*TRIVIAL, *extra], env, workdir)
        before = _runs(uri)
        if separate:
            wall, own, other = (sum(t) for t in zip(*(_run([*TRIVIAL, *extra, f"seed={i}"], env, workdir)
                                                        for i in range(jobs))))
        else:
            wall, own, other = _run(["-m", *TRIVIAL, *extra, *(sweep or [f"seed=range({jobs})"])], env, workdir)
        new = {run_id: job_s for run_id, job_s in _runs(uri).items() if run_id not in before}
    assert len(new) == jobs, f"expected {jobs} new runs in the store, found {len(new)}"
    in_jobs = sum(new.values())
    return {"wall_s": wall, "in_jobs_s": in_jobs, "overhead_per_job_s": (wall - in_jobs) / jobs,
            "own_cpu_per_job_s": own / jobs, "other_cpu_per_job_s": other / jobs}


def median_of(repeats: int, **case) -> dict:
    """The repeat with the median overhead: one sweep on a shared 2-core machine moves by ~10%."""
    results = sorted((measure(**case) for _ in range(repeats)), key=lambda r: r["overhead_per_job_s"])
    return results[len(results) // 2]


def main() -> None:
    import pytest

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--small", type=int, default=50, help="a second, smaller sweep: fixed vs per-job cost")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each sweep; the median is shown")
    parser.add_argument("--no-separate", action="store_true", help="skip the separate processes (slow)")
    parser.add_argument("--no-servers", action="store_true", help="skip the tracking-server cases (local store only)")
    args = parser.parse_args()
    n, reps, small = args.jobs, args.repeats, args.small
    measure(small)  # warms the OS file cache: the first case must not pay for it alone
    stores = {"existing store": {}, "server on SQLite": {"server": "sqlite"},
              "server on PostgreSQL": {"server": "postgresql"}}
    if args.no_servers:
        stores = {"existing store": {}}
    rows = {}
    for where, case in stores.items():
        try:
            for jobs in (n, small):
                rows[f"one sweep of {jobs}, {where}"] = median_of(reps, jobs=jobs, **case)
        except pytest.skip.Exception as e:  # the helper's skip: no PostgreSQL server or driver on this machine
            print(f"no {where} case: {e}", file=sys.stderr)
        if where == "existing store":
            rows["one sweep of 40, one job per group choice"] = median_of(reps, jobs=40, sweep=GROUP_SWEEP)
            rows[f"one sweep of {small}, fresh store"] = median_of(reps, jobs=small, fresh_store=True)
            rows[f"one sweep of {small}, Hydra's basic sweeper"] = median_of(
                reps, jobs=small, extra=("hydra/sweeper=basic",))
    if not args.no_separate:
        rows[f"{small} separate processes"] = measure(small, separate=True)
    print(f"trivial jobs on {os.cpu_count()} CPUs; sweeps: the median of {reps} runs")
    print(f"{'':42} {'wall s':>8} {'in jobs s':>10} {'overhead s/job':>15} {'CPU s/job: sweep':>17} {'others':>7}")
    for name, r in rows.items():
        print(f"{name:42} {r['wall_s']:8.1f} {r['in_jobs_s']:10.2f} {r['overhead_per_job_s']:15.3f} "
              f"{r['own_cpu_per_job_s']:17.3f} {r['other_cpu_per_job_s']:7.3f}")
    # Two sweep sizes separate the once-per-sweep cost (start-up, the store) from the cost of each job.
    for where in stores:
        if f"one sweep of {small}, {where}" not in rows:
            continue
        big, little = (rows[f"one sweep of {k}, {where}"] for k in (n, small))
        marginal = ((big["wall_s"] - big["in_jobs_s"]) - (little["wall_s"] - little["in_jobs_s"])) / (n - small)
        fixed = (big["wall_s"] - big["in_jobs_s"]) - marginal * n
        print(f"sweep overhead, {where} = {fixed:.1f} s once (start-up) + {marginal:.3f} s per job")


if __name__ == "__main__":
    main()
