"""A process that runs the sweep's jobs one at a time, and can be killed when a job overruns or crashes it.

Why a process: a runaway job is usually one long C++ call (a kernel, a compilation) that no Python signal
handler can interrupt, and a crashing kernel takes its whole process down. In a worker, the sweep process
stays in control: it kills the worker at the job's time limit, notices when it dies, records that job and
starts a fresh worker for the next. The worker is reused between jobs (a CUDA context and torch's imports
cost seconds), and it is started with `spawn`, so the device is only ever initialised in the process that runs
the jobs.

The worker's stdout and stderr are pipes that this process reads and writes to its own (whatever wrote to them:
Python, C++ code, a crashing kernel's last words), and a running task may `notify(note)` this process over its
message pipe (a job's phase, for the progress line). So everything a job shows passes through the process that
owns the terminal, which can keep a progress line intact around it (attnbench.harness.progress).
"""

from __future__ import annotations

import codecs
import importlib
import multiprocessing
import multiprocessing.util
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


Note = Any  # plain, picklable data: a job's phase name
READ_SIZE = 1 << 16


class _Output:
    """The read end of one of the worker's output pipes, and where its text goes in this process."""

    def __init__(self, conn, stream: str) -> None:
        self.conn = conn
        self.stream = stream  # "stdout" or "stderr": looked up at each write, so a live display's proxy gets it
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a read may end mid-character

    def pass_on(self) -> bool:
        """Write what the pipe holds (it is readable); False at end of file."""
        data = os.read(self.conn.fileno(), READ_SIZE)
        if data:
            target = getattr(sys, self.stream)
            target.write(self._decoder.decode(data))
            target.flush()
        return bool(data)


class Worker:
    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        # Modules imported (and "module:function"s called) before the worker says it is ready: no job's time.
        self._preload = preload
        self._env: dict[str, str] = {}  # set in the worker before its imports (CUDA_VISIBLE_DEVICES, threads)
        self._process: multiprocessing.Process | None = None
        self._conn = None
        self._outputs: list[_Output] = []
        self._ready = False

    def set_env(self, env: dict[str, str]) -> None:
        """The environment the worker's jobs need; a worker started with another one is replaced."""
        if env != self._env:
            self.close()
            self._env = dict(env)

    def start(self) -> None:
        """Start the worker without waiting for it (its imports overlap the caller's own start-up)."""
        if self._process is not None and self._process.is_alive():
            return
        context = multiprocessing.get_context("spawn")
        if multiprocessing.get_start_method(allow_none=True) not in multiprocessing.get_all_start_methods():
            # In a joblib (loky) worker the process default is loky's own method, which spawn passes on to the
            # child, where it does not exist: the child would die before running anything.
            multiprocessing.set_start_method("spawn", force=True)
        self._close_outputs()  # a dead worker's: already passed on
        self._conn, theirs = context.Pipe()
        outputs = {stream: context.Pipe(duplex=False) for stream in ("stdout", "stderr")}  # (read, write) each
        # Not a daemon: a job may start processes of its own (a compiler's worker pool), which a daemon may not.
        self._process = context.Process(
            target=_serve, args=(theirs, outputs["stdout"][1], outputs["stderr"][1], os.getpid(), self._preload, self._env),
            name="attnbench-worker")
        self._process.start()
        theirs.close()  # ours is then the only end left: the worker's death reads as end-of-file
        for stream, (read, write) in outputs.items():
            write.close()
            self._outputs.append(_Output(read, stream))
        self._ready = False

    def run(self, fn: Callable, args: tuple, timeout_s: float | None,
            on_note: Callable[[Note], None] | None = None) -> Done | Failed | TimedOut | Died:
        """fn(*args) in the worker; fn and args must pickle (module-level functions, plain data, configs).
        Each `notify(note)` that fn makes reaches `on_note(note)` here, in order, while fn runs."""
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
        answer = self._answer(None if timeout_s is None else began + timeout_s, on_note)
        if answer is None:
            self.kill()
            return TimedOut(time.monotonic() - began)
        kind, value = answer
        if kind == "died":
            return self._died()
        return Done(value) if kind == "done" else Failed(value)

    def _answer(self, deadline: float | None, on_note: Callable[[Note], None] | None) -> tuple[str, Any] | None:
        """The worker's next answer (ready, done, failed; or died), passing its output and notes on meanwhile;
        None at the deadline."""
        assert self._process is not None and self._conn is not None
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([self._conn, self._process.sentinel, *(o.conn for o in self._outputs)], left)
            if not ready:
                return None
            self._pass_on_output()
            if self._conn not in ready and self._process.sentinel not in ready:
                continue
            try:
                kind, value = self._conn.recv()
            except (EOFError, OSError):  # the worker died before answering
                return "died", None
            if kind != "note":
                self._pass_on_output()  # written before the answer: in the pipes already
                return kind, value
            if on_note is not None:
                on_note(value)

    def _pass_on_output(self) -> None:
        """Write the worker's waiting output to this process's: all of it, so that what a job wrote is shown
        before its answer returns. (Output and notes come through different pipes: a note may be shown after
        output written just after it.)"""
        for output in list(self._outputs):
            while wait([output.conn], 0):
                if not output.pass_on():  # every writer closed it: the worker (and its children) are gone
                    output.conn.close()
                    self._outputs.remove(output)
                    break

    def _close_outputs(self) -> None:
        for output in self._outputs:
            output.conn.close()
        self._outputs = []

    def _wait_until_ready(self) -> Done | Died:
        answer = self._answer(time.monotonic() + START_TIMEOUT_S, None)
        if answer is None:
            self.kill()
            return Died(f"it did not start within {START_TIMEOUT_S} s")
        if answer[0] == "died":
            return self._died()
        self._ready = True
        return Done(None)

    def _died(self) -> Died:
        assert self._process is not None
        self._process.join(CLOSE_TIMEOUT_S)
        self._pass_on_output()  # its last words: a crash's message
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
            self._pass_on_output()

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


# In the worker: its end of the message pipe, for the running task's notes.
_to_parent = None


def notify(note: Note) -> None:
    """From a task running in the worker: tell the sweep process something now (Worker.run's on_note)."""
    if _to_parent is not None:  # not in a worker (a test calling the task directly): nobody to tell
        _to_parent.send(("note", note))


def _serve(conn, stdout, stderr, parent_pid: int, preload: tuple[str, ...], env: dict[str, str]) -> None:
    global _to_parent
    os.environ.update(env)  # before torch is imported: CUDA and OpenMP read it once
    # Ctrl-C and a closed terminal reach the whole process group: the sweep process decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    _to_parent = conn
    # The file descriptors themselves, so that C++ code's output and a crash's go the same way as Python's.
    for pipe, fd in ((stdout, 1), (stderr, 2)):
        os.dup2(pipe.fileno(), fd)
        pipe.close()
    if sys.stdout is not None:
        sys.stdout.reconfigure(line_buffering=True)  # a pipe now: each line goes as it is written, not in blocks
    for entry in preload:  # "module", or "module:function" to call once it is imported
        module, _, function = entry.partition(":")
        imported = importlib.import_module(module)
        if function:
            getattr(imported, function)()
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
            value = fn(*args)
            _flush_output()  # before the answer, after which the sweep process stops reading
            conn.send(("done", value))
        except Exception:  # noqa: BLE001 - reported to the sweep process, which records the job
            _flush_output()
            conn.send(("failed", traceback.format_exc()))
    # Skip the interpreter's teardown (a full garbage collection over torch: ~1 s the sweep would wait for);
    # everything a job writes is flushed by its log handlers. Not the multiprocessing finalizers that a child
    # process runs at its end: they release the locks the jobs' libraries made (torch.compile, through tqdm, keeps
    # one for the life of the process), which Python's resource tracker would report as leaked at the sweep's end.
    # Private, and guarded by tests/test_upstream.py.
    multiprocessing.util._run_finalizers(0)
    _flush_output()
    os._exit(0)


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


def _exit_with_parent(parent_pid: int) -> None:
    """A sweep process killed with -9 cannot kill its worker: the worker notices it was orphaned and exits."""
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(1)
