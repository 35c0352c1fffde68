"""Tracking work done in order on one thread, while the sweep goes on to its next job.

Recording a finished job in MLflow (its metrics, tags, files and end) takes ~25 ms against a local store and
~55 ms against a server on a 2-core machine: waiting on SQLite and on HTTP round trips, most of it. Done on the
sweep's own thread it adds to every job; done here, it overlaps the next job, which runs in the job worker
process while the sweep's thread waits for it. The work is already safe when it gets here (each result is saved
in its job folder first), one thread keeps each run's calls in order, and whoever needs the store complete (the
end of the sweep, the exit) drains the queue first.

Not a concurrent.futures executor: its thread is joined at interpreter exit without a time limit, so a tracking
server that stopped answering would hold the exit; this one is a daemon thread, drained with a bound at exit.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Background:
    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work` after everything submitted before it. It must handle its own errors (they are logged)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put(work)

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until everything submitted so far is done; False if that took longer than timeout_s."""
        if self._thread is None:
            return True
        done = threading.Event()
        self.submit(done.set)
        return done.wait(timeout_s)

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            try:
                work()
            except Exception:  # noqa: BLE001 - the thread must outlive one bad piece of work
                log.exception("attnbench: background tracking work failed")
