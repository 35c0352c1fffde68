"""A sweep's runs, written while it runs: the store's side of the Hydra callback (attnbench.harness.tracking).

Results are saved in the job folders before they reach the recorder, so a tracking failure loses nothing: it is
reported once (`on_failure`), the rest of the sweep is only saved locally, and `attnbench sync` uploads it later.
In the sweep's own process a job's run is created and recorded on a background thread, in order, while the next
job runs (attnbench.store.tracking.background); the end of the sweep and the exit wait for it. A worker process
(joblib, submitit) records its jobs before its task returns: the sweep may end, and read the store, right after.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable

from attnbench.core.record import Record
from attnbench.store.session import StoreSession, SweepRun
from attnbench.store.tracking.background import Background
from attnbench.store.tracking.names import PARENT_FILE, PARENT_TAG, RUN_FILE
from attnbench.store.tracking.preflight import first_line
from attnbench.store.tracking.stale import STARTED, is_gone, process_tags

log = logging.getLogger(__name__)

INTERRUPTED_JOB = "stopped by {signal} while this job ran"
EXIT_TIMEOUT_S = 15  # closing runs at exit: a tracking server that is down must not hold the exit for minutes


class SweepRecorder:
    def __init__(self, session: StoreSession, on_failure: Callable[[str, BaseException], None]) -> None:
        self.session = session
        self.on_failure = on_failure  # (what failed, the error): said once by the caller, then tracking stops
        self.parent_id: str | None = None
        self.sweep_open = False  # this process opened the parent run: closed by end_sweep, else at exit
        self.failed = False
        self._runs: dict[str, str] = {}  # job → its open run; a threaded launcher shares this recorder
        self._params: dict[str, dict[str, str]] = {}  # job → its params, logged when it ends (or at exit)
        self._tracked: set[str] = set()  # jobs whose run is created (or queued to be) and not yet recorded
        self._background = Background("attnbench-tracking")

    # --- the sweep ------------------------------------------------------------------------------
    def open_sweep(self, sweep: SweepRun, resume_key: str | None) -> str:
        """The sweep's parent run: with `resume_key`, its latest parent open again (unless its process still runs
        it), else a new one. Its link file in the sweep folder lets workers and `attnbench sync` find it."""
        link = sweep.dir / PARENT_FILE
        found = self.session.latest_parent(resume_key) if resume_key else None
        if found is not None and not (found.info.status == "RUNNING" and not is_gone(found.data.tags)):
            self.parent_id = self.session.reopen_parent(found, sweep.dir, link)
            log.info("Resuming sweep %s (parent run %s)", resume_key, self.parent_id)
        else:
            self.parent_id = self.session.start_parent(sweep, link)
        self.sweep_open = True
        return self.parent_id

    def join_sweep(self, parent_id: str) -> None:
        """A worker process's first job of a sweep: its runs go under the sweep's parent."""
        self.parent_id = parent_id

    def end_sweep(self, records: list[Record], summary: str,
                  report: Callable[[], tuple[list[Path], str]] | None, problem: str | None = None) -> None:
        """Every job recorded, the report (files, description) attached, then the parent closed by what its jobs
        did (FAILED with `problem` as its reason: result files that cannot be read). Only the report is lost if it
        fails: it is a view of results already recorded."""
        self._background.drain()
        self.sweep_open = False
        try:
            if self.failed:  # one bounded attempt to say so on the parent; `attnbench sync` completes it
                self.session.fail_parent(self.parent_id, "tracking failed: not every job is recorded")
                return
            if report is not None:
                try:
                    self.session.log_report(self.parent_id, *report())
                except Exception as e:  # noqa: BLE001
                    log.warning("attnbench: the sweep's report failed (%s); its results are recorded: `attnbench "
                                "report %s` writes it again", first_line(e), self.parent_id)
            self.session.finish_parent(self.parent_id, records, summary, problem)
        except Exception as e:  # noqa: BLE001
            self._failed("could not close the sweep's parent run", e)

    # --- a job ----------------------------------------------------------------------------------
    def start_job(self, key: str, name: str, tags: dict[str, str], params: dict[str, str], job_dir: Path) -> None:
        if self.failed:
            return
        if self.parent_id is not None:
            tags = tags | {"hydra.job.num": key, PARENT_TAG: self.parent_id}
        self._tracked.add(key)
        # Started now, not when the background thread gets to it: a job that ends within milliseconds (`unsupported`)
        # would otherwise end before its run started (a negative duration in the UI).
        started_ms = int(time.time() * 1000)
        self._in_order(partial(self._start_job, key, name, tags, params, job_dir, started_ms))

    def end_job(self, key: str, record: Record, dtype: str) -> bool:
        """Record a job's result on its run; False if the job has no run (tracking had stopped, or it was
        skipped by resume)."""
        if key not in self._tracked:
            return False
        self._tracked.discard(key)
        self._in_order(partial(self._record_job, key, record, dtype))
        return True

    def _in_order(self, work) -> None:
        if self.sweep_open:  # the sweep's process: on with the jobs while the store is written
            self._background.submit(work)
        else:
            work()

    def _start_job(self, key: str, name: str, tags: dict[str, str], params: dict[str, str], job_dir: Path,
                   started_ms: int) -> None:
        if self.failed:  # an earlier call failed: the rest of the sweep is saved in its job folders only
            return
        try:  # the params come with the job's results, in the same call as its metrics and tags
            self._runs[key] = (self._left_by_a_dead_worker(key, job_dir / RUN_FILE)
                               or self.session.start_job(name, tags, job_dir / RUN_FILE, started_ms))
        except Exception as e:  # noqa: BLE001
            self._failed(f"could not create the run of job {key}", e)
            return
        self._params[key] = params

    def _left_by_a_dead_worker(self, key: str, link: Path) -> str | None:
        """The run this job of this sweep already has, opened by a launcher's worker process that died while it ran
        the job (attnbench.harness.pool): the job's one run, which the result its sweep process saved closes. Not
        an earlier command's run (a resumed sweep's folder): its process started before this one."""
        if self.parent_id is None or not link.is_file():  # (a job's folder has no link until its run is opened)
            return None
        run = self.session.linked_run(link)
        tags = run.data.tags if run is not None else {}
        mine = tags.get(PARENT_TAG) == self.parent_id and tags.get("hydra.job.num") == key
        return run.info.run_id if mine and _started_since_this_process(tags) and is_gone(tags) else None

    def _record_job(self, key: str, record: Record, dtype: str) -> None:
        run_id = self._runs.get(key)
        if run_id is None:  # its run could not be created (said once): the result is in its job folder
            return
        try:
            self.session.finish_job(run_id, record)
            if self.parent_id is not None:
                self.session.log_machine_peaks(self.parent_id, record, dtype)
        except Exception as e:  # noqa: BLE001 - the result is saved; tracking is what failed
            self._failed(f"could not record job {key}", e)
            try:
                self.session.mark_unrecorded(run_id, record, first_line(e))
            except Exception:  # noqa: BLE001 - left RUNNING: the next sweep closes it as KILLED
                pass
        del self._runs[key]  # not on Ctrl-C: the exit hook closes that run
        self._params.pop(key, None)

    def _failed(self, what: str, error: BaseException) -> None:
        if not self.failed:
            self.on_failure(what, error)
        self.failed = True

    # --- runs left open at exit -----------------------------------------------------------------
    def close_at_exit(self, signal: Callable[[], str | None], why: Callable[[], str | None] = lambda: None) -> None:
        """Close what a stopped sweep or job left RUNNING (a bad override found by validation, a signal, a crash,
        a full disk: `why`, if it knows), within EXIT_TIMEOUT_S. Not a kill -9: nothing runs then (the next sweep
        closes those runs)."""
        if self.failed or (not self._runs and not self.sweep_open):
            return
        closer = threading.Thread(target=self._close_open_runs, args=(signal, why), daemon=True)
        closer.start()
        try:
            closer.join(timeout=EXIT_TIMEOUT_S)
        except KeyboardInterrupt:  # a second Ctrl-C: the user wants out now
            pass
        if closer.is_alive():
            log.warning("Gave up closing the open MLflow runs: the tracking store did not answer")

    def _close_open_runs(self, signal: Callable[[], str | None], why: Callable[[], str | None]) -> None:
        self._background.drain()  # finished jobs first: their results, not "interrupted", are what they did
        stopped_by, because = signal(), why()  # read after the drain: a signal may come meanwhile
        try:
            reason = because or INTERRUPTED_JOB.format(signal=stopped_by or "a crash")
            for key, run_id in list(self._runs.items()):
                self.session.interrupt_job(run_id, self._params.get(key, {}), reason)
                del self._runs[key]
            if self.sweep_open:  # this process runs the sweep: the jobs that other processes ran stop with it
                self.session.stop_sweep(self.parent_id, stopped_by, reason, because)
                self.sweep_open = False
        except Exception as e:  # noqa: BLE001 - at exit, a store that went away can only be reported
            log.warning("Could not close the open MLflow runs: %s", first_line(e))


def _started_since_this_process(tags: dict[str, str]) -> bool:
    """Whether the process that opened a run started after this one, on this boot (times since boot, Linux)."""
    (boot, _, theirs), (our_boot, _, ours) = (tags.get(STARTED, "").partition("/"),
                                               process_tags().get(STARTED, "").partition("/"))
    return bool(boot) and boot == our_boot and theirs.isdigit() and ours.isdigit() and int(theirs) >= int(ours)
