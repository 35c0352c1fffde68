"""How long each experiment takes at `size=cpu` on this machine: the figures in docs/experiments.md.

Runs `python run.py -m experiment=NAME size=cpu device=cpu` for each file of experiments/ (or those named), each
into a throw-away MLflow store, with the timing settings unchanged, and prints one Markdown row per experiment:
its wall time end to end (Python's start-up to the table), its jobs by status, and the machine's load average
over the run (another process busy on a 2-core machine makes a run slower).

    python benchmarks/cpu_sizes.py                       # all of them (~15 minutes on 2 cores)
    python benchmarks/cpu_sizes.py decode masks          # some
    python benchmarks/cpu_sizes.py --cold                # each with an empty Inductor cache (a fresh clone's run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(name: str, cold: bool) -> tuple[float, Counter, float]:
    with tempfile.TemporaryDirectory() as tmp:
        # Inductor keeps compiled kernels between runs: a second run of flex or torch.compile jobs is faster.
        env = os.environ | ({"TORCHINDUCTOR_CACHE_DIR": f"{tmp}/inductor"} if cold else {})
        started, load = time.perf_counter(), os.getloadavg()[0]
        proc = subprocess.run(
            [sys.executable, str(REPO / "run.py"), "-m", f"experiment={name}", "size=cpu", "device=cpu",
             f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"hydra.sweep.dir={tmp}/sweep"],
            cwd=tmp, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
        load = (load + os.getloadavg()[0]) / 2
        statuses = Counter(json.loads(f.read_text())["status"] for f in Path(tmp, "sweep").glob("*/result.json"))
        if proc.returncode not in (0, 1):  # 1: a job was not `ok` or `unsupported`, which the table shows
            print(proc.stderr[-3000:], file=sys.stderr)
        return seconds, statuses, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="experiments (default: every file of experiments/)")
    parser.add_argument("--cold", action="store_true", help="an empty Inductor cache for each experiment")
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
    print("| experiment | wall time | jobs | load average |\n|---|---|---|---|", flush=True)
    for name in names:
        seconds, statuses, load = run(name, args.cold)
        jobs = ", ".join(f"{n} {status}" for status, n in statuses.most_common())
        print(f"| {name} | {seconds // 60:.0f} min {seconds % 60:02.0f} s | {jobs} | {load:.1f} |", flush=True)


if __name__ == "__main__":
    main()
