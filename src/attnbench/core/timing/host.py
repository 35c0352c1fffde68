"""Was the host free while the calls were timed? The job process's CPU time and its threads' wait for a core.

Linux counts, per thread, the time it ran and the time it was runnable but waited on a run queue
(`/proc/self/task/*/schedstat`). A timed call whose threads wait for a core — another busy process, more torch
threads than free cores — is timed by the scheduler, not by its own work: on a 2-core machine with one other busy
process, two torch threads waited 35–50% of the time and the same kernel's median moved 3× between runs, where one
thread waited 0% and moved < 1% (docs/timing.md). Process CPU time alone does not show it: torch's threads spin
while they wait for each other, which counts as CPU time.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class HostClock:
    wall_s: float
    cpu_s: float  # this process's CPU time, every thread
    run_s: float | None  # its threads' time on a core, from the scheduler (None where it does not say)
    wait_s: float | None  # their time runnable but waiting for a core

    @classmethod
    def now(cls) -> "HostClock":
        run = wait = 0
        found = False
        for path in glob.glob("/proc/self/task/*/schedstat"):
            try:
                with open(path) as f:
                    on_cpu, waiting, _ = f.read().split()
            except (OSError, ValueError):  # a thread that ended between the listing and the read
                continue
            run, wait, found = run + int(on_cpu), wait + int(waiting), True
        return cls(time.perf_counter(), time.process_time(), run / 1e9 if found else None,
                   wait / 1e9 if found else None)


@dataclass(frozen=True)
class HostUsage:
    """What the host gave the process between two HostClocks."""

    wall_s: float
    cpu_s: float
    wait_s: float | None
    wait_share: float | None  # wait / (run + wait) of the process's threads

    @classmethod
    def between(cls, start: HostClock, end: HostClock) -> "HostUsage":
        wait_s = share = None
        if start.wait_s is not None and end.wait_s is not None:
            wait_s = end.wait_s - start.wait_s
            wanted = wait_s + (end.run_s - start.run_s)
            share = wait_s / wanted if wanted > 0 else 0.0
        return cls(end.wall_s - start.wall_s, end.cpu_s - start.cpu_s, wait_s, share)

    def metrics(self) -> dict[str, float]:
        found = {"timed_wall_s": self.wall_s, "timed_cpu_s": self.cpu_s}
        if self.wait_share is not None:
            found |= {"timed_cpu_wait_s": self.wait_s, "cpu_wait_share": self.wait_share}
        return found

    def contended(self, threads: int, max_wait: float) -> str | None:
        """Why the timing cannot be trusted (its threads waited for a core more than `max_wait` of the time they
        wanted to run), or None."""
        if self.wait_share is None or self.wait_share <= max_wait:
            return None
        return (f"its threads waited for a core {100 * self.wait_share:.0f}% of the time they wanted to run while "
                f"it was timed ({threads} torch thread{'s' if threads != 1 else ''}; another process, or more "
                "threads than free cores): the time is the scheduler's, not the kernel's")
