"""Can MLflow serve on this local port? If not, one line naming the port, and the process holding it where it can be
found. `make server` and `make ui` ask before they start MLflow, whose own failure on a busy port is a traceback a
few seconds later (`mlflow ui` then exits 0, after attnbench printed links to a UI that is not there).

    python -m attnbench.store.tracking.port PORT TARGET   # exit 1 with the line; TARGET: the make target to retry
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

HOST = "127.0.0.1"  # loopback only: MLflow's server has no authentication by default
LISTEN = "0A"  # a listening socket's state in /proc/net/tcp


def port_number(text: str) -> int | None:
    """PORT as make passes it, if it is a TCP port number."""
    return int(text) if text.isdigit() and 1 <= int(text) <= 65535 else None


def port_problem(text: str, target: str) -> str | None:
    """Why `make TARGET PORT=text` could not serve on HOST:text, with what to try instead; None if it can."""
    port = port_number(text)
    if port is None:
        return f"PORT={text!r} is not a port: expected a whole number from 1 to 65535, e.g. make {target} PORT=5001"
    with socket.socket() as s:
        # As the server binds: a crashed server's connections lingering in TIME_WAIT do not keep it from starting.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            holder = port_holder(port)
            return (f"port {port} on {HOST} cannot be used ({e.strerror}"
                    f"{f'; held by {holder}' if holder else ''}): make {target} PORT={port + 1}")
    return None


def port_holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """`pid 1234 (mlflow server ...)` for the process listening on the port, where /proc shows it (Linux, a process
    this user may look into); None elsewhere."""
    sockets = _listening_sockets(port, proc)
    if not sockets:
        return None
    for pid_dir in proc.glob("[0-9]*"):
        try:
            fds = [os.readlink(fd) for fd in (pid_dir / "fd").iterdir()]
            if sockets.intersection(fds):
                command = " ".join((pid_dir / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
                                   .split())  # one line, even for `python -c` with a script of several
                return f"pid {pid_dir.name} ({command[:100] or '?'})"
        except OSError:  # gone meanwhile, or another user's
            continue
    return None


def _listening_sockets(port: int, proc: Path) -> set[str]:
    """The inodes of the sockets listening on the port, as their file descriptors' links read (`socket:[123]`)."""
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found


def main(argv: list[str]) -> int:
    found = port_problem(argv[0], argv[1])
    if found:
        print(f"attnbench: {found}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
