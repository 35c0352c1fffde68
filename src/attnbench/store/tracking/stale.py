"""Runs left RUNNING by a process that no longer exists (kill -9, a crash, a power cut) are closed as KILLED.

Every run records the host and pid of the process that opened it, and on Linux when that process started (a
pid is reused, a start time with it is not). The next sweep on the same host closes the runs whose process is
gone. Runs opened on another host are left alone: from here, nothing tells a lost node from a busy one.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from attnbench.store.redact import this_host_names

HOST, PID, STARTED = "attnbench.host", "attnbench.pid", "attnbench.process_started"
GONE_REASON = "its process (pid {pid} on {host}) ended without closing this run: killed (-9), crashed or lost power"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), with the boot it belongs to."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    return f"{boot}/{stat.rsplit(')', 1)[1].split()[19]}"


def process_tags() -> dict[str, str]:
    tags = {HOST: socket.gethostname(), PID: str(os.getpid())}
    started = _started(os.getpid())
    return tags | ({STARTED: started} if started else {})


def is_gone(tags: dict[str, str]) -> bool:
    """Whether the process that opened a run is known to have ended (on this host only)."""
    if tags.get(HOST) not in this_host_names() or not tags.get(PID, "").isdigit():
        return False
    pid = int(tags[PID])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    recorded = tags.get(STARTED)
    return recorded is not None and _started(pid) not in (None, recorded)


def close_stale_runs(client, experiment_id: str) -> int:
    """Close this host's RUNNING runs whose process is gone, as KILLED with the reason; how many were closed."""
    runs = [run for host in sorted(this_host_names())  # its name, and its hash where runs were redacted
            for run in client.search_runs([experiment_id], max_results=1000,
                                          filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST}` = '{host}'")]
    closed = 0
    for run in runs:
        tags = run.data.tags
        if not is_gone(tags):
            continue
        _kill(client, run, GONE_REASON.format(pid=tags[PID], host=tags[HOST]))
        closed += 1
    return closed


def close_running_children(client, experiment_id: str, parent_id: str, reason: str) -> int:
    """Close a stopped sweep's child runs still RUNNING as KILLED, with the reason. Under a parallel launcher
    they belong to worker processes, which are killed with the sweep before they can close them."""
    runs = client.search_runs([experiment_id], max_results=1000,
                              filter_string=f"attributes.status = 'RUNNING' and tags.mlflow.parentRunId = '{parent_id}'")
    for run in runs:
        _kill(client, run, reason)
    return len(runs)


def _kill(client, run, reason: str) -> None:
    """Close a run whose job was stopped: KILLED, with the reason; `interrupted` unless it had its status."""
    if "status" not in run.data.tags:
        client.set_tag(run.info.run_id, "status", "interrupted")
    client.set_tag(run.info.run_id, "reason", reason)
    client.set_terminated(run.info.run_id, "KILLED")
