"""A process that runs the sweep's jobs one at a time, and can be killed when a job overruns or crashes it.

Why a process: a runaway job is usually one long C++ call (a kernel, a compilation) that no Python signal
handler can interrupt, and a crashing kernel takes its whole process down. In a worker, the sweep process
stays in control: it kills the worker at the job's time limit, notices when it dies, records that job and
starts a fresh worker for the next. The worker is reused between jobs (a CUDA context and torch's imports
cost seconds), and it is started with `spawn`, so the device is only ever initialised in the process that runs
the jobs.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable

START_TIMEOUT_S = 300  # importing torch on a loaded machine; a worker that cannot start at all is an error
CLOSE_TIMEOUT_S = 5


@dataclass
class Done:
    value: Any


@dataclass
class Failed:  # the function raised in the worker
    traceback: str


@dataclass
class TimedOut:
    seconds: float


@dataclass
class Died:
    how: str  # "signal SIGSEGV", "exit code 1"


class Worker:
    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        self._preload = preload  # modules imported before the worker says it is ready: not part of any job's time
        self._process: multiprocessing.Process | None = None
        self._conn = None
        self._ready = False

    def start(self) -> None:
        """Start the worker without waiting for it (its imports overlap the caller's own start-up)."""
        if self._process is not None and self._process.is_alive():
            return
        context = multiprocessing.get_context("spawn")
        self._conn, theirs = context.Pipe()
        # Not a daemon: a job may start processes of its own (a compiler's worker pool), which a daemon may not.
        self._process = context.Process(target=_serve, args=(theirs, os.getpid(), self._preload),
                                        name="attnbench-worker")
        self._process.start()
        theirs.close()  # ours is then the only end left: the worker's death reads as end-of-file
        self._ready = False

    def run(self, fn: Callable, args: tuple, timeout_s: float | None) -> Done | Failed | TimedOut | Died:
        """fn(*args) in the worker; fn and args must pickle (module-level functions, plain data, configs)."""
        self.start()
        if not self._ready:
            started = self._wait_until_ready()
            if not isinstance(started, Done):
                return started
        assert self._process is not None and self._conn is not None
        began = time.monotonic()
        try:
            self._conn.send((fn, args))
        except (BrokenPipeError, ConnectionResetError):  # it died between two jobs
            return self._died()
        ready = wait([self._conn, self._process.sentinel], timeout_s)
        if not ready:
            self.kill()
            return TimedOut(time.monotonic() - began)
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):  # the worker died before answering
            return self._died()
        return Done(value) if kind == "done" else Failed(value)

    def _wait_until_ready(self) -> Done | Died:
        if not wait([self._conn], START_TIMEOUT_S):
            self.kill()
            return Died(f"it did not start within {START_TIMEOUT_S} s")
        try:
            self._conn.recv()
        except (EOFError, OSError):
            return self._died()
        self._ready = True
        return Done(None)

    def _died(self) -> Died:
        assert self._process is not None
        self._process.join(CLOSE_TIMEOUT_S)
        code = self._process.exitcode
        self._process = None
        if code is not None and code < 0:
            return Died(f"signal {signal.Signals(-code).name}")
        return Died(f"exit code {code}")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(CLOSE_TIMEOUT_S)
            self._process = None

    def close(self) -> None:
        """Let an idle worker exit on its own, else (still starting, or busy) kill it."""
        if self._process is None:
            return
        if self._ready:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._process.join(CLOSE_TIMEOUT_S)
        self.kill()


def _serve(conn, parent_pid: int, preload: tuple[str, ...]) -> None:
    # Ctrl-C and a closed terminal reach the whole process group: the sweep process decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    for module in preload:
        importlib.import_module(module)
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            task = None
        if task is None:
            break
        fn, args = task
        try:
            conn.send(("done", fn(*args)))
        except Exception:  # noqa: BLE001 - reported to the sweep process, which records the job
            conn.send(("failed", traceback.format_exc()))
    # Skip the interpreter's teardown (a full garbage collection over torch: ~1 s the sweep would wait for);
    # everything a job writes is flushed by its log handlers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _exit_with_parent(parent_pid: int) -> None:
    """A sweep process killed with -9 cannot kill its worker: the worker notices it was orphaned and exits."""
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(1)
