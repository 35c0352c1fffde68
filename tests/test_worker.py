"""The job worker: one process reused between jobs, killed at a job's time limit, replaced when it dies."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnbench.harness.worker import Died, Done, Failed, TimedOut, Worker, notify


def pid() -> int:
    return os.getpid()


def forever() -> None:
    while True:
        time.sleep(1)


def abort() -> None:
    os.abort()


def fail() -> None:
    raise ValueError("a bug in the harness")


_held = []


def hold_a_multiprocessing_lock() -> None:
    # As torch.compile does through tqdm (whose class keeps a multiprocessing lock for the life of the process).
    _held.append(multiprocessing.RLock())


@pytest.fixture
def worker():
    w = Worker()
    yield w
    w.close()


def test_jobs_share_one_worker_that_is_not_this_process(worker):
    first, second = worker.run(pid, (), 60), worker.run(pid, (), 60)
    assert isinstance(first, Done) and first == second and first.value != os.getpid()


def test_a_job_past_its_time_limit_is_stopped_and_the_next_gets_a_fresh_worker(worker):
    before = worker.run(pid, (), 60).value
    assert isinstance(worker.run(forever, (), 0.5), TimedOut)
    after = worker.run(pid, (), 60)
    assert isinstance(after, Done) and after.value != before


def test_a_worker_that_dies_is_reported_with_its_signal_and_replaced(worker):
    died = worker.run(abort, (), 60)
    assert isinstance(died, Died) and died.how == "signal SIGABRT"
    assert isinstance(worker.run(pid, (), 60), Done)


def test_an_exception_in_the_worker_comes_back_with_its_traceback(worker):
    failed = worker.run(fail, (), 60)
    assert isinstance(failed, Failed) and "ValueError: a bug in the harness" in failed.traceback
    assert isinstance(worker.run(pid, (), 60), Done)  # the worker survives its job's exception


def talk() -> str:
    notify("first")
    print("a line from the job")
    os.write(2, b"written below Python\n")  # as C++ code writes: to the file descriptor itself
    notify("second")
    return "answer"


def test_notes_come_in_order_and_all_output_passes_through_the_sweep_process(worker, capsys):
    heard = []
    answer = worker.run(talk, (), 60, on_note=heard.append)
    assert answer == Done("answer") and heard == ["first", "second"]
    # capsys sees this process's sys.stdout and sys.stderr only: output the worker wrote to the terminal itself,
    # around a live progress line, would not be here
    assert tuple(capsys.readouterr()) == ("a line from the job\n", "written below Python\n")


def test_a_preload_entry_can_warm_the_worker_up_before_it_is_ready():
    from attnbench.harness.worker import Done, Worker

    worker = Worker(preload=("os:getpid",))  # "module:function": imported, then called, before any task
    try:
        answer = worker.run(os.getpid, (), timeout_s=120)
        assert isinstance(answer, Done) and answer.value != os.getpid()
    finally:
        worker.close()


def test_a_closed_worker_leaves_no_lock_for_the_resource_tracker_to_report():
    # Otherwise every compiled sweep ends with "resource_tracker: There appear to be 1 leaked semaphore objects".
    script = ("from attnbench.harness.worker import Done, Worker\n"
              "from test_worker import hold_a_multiprocessing_lock\n"
              "worker = Worker()\n"
              "assert isinstance(worker.run(hold_a_multiprocessing_lock, (), 60), Done)\n"
              "worker.close()\n")
    tests = Path(__file__).parent
    proc = subprocess.run([sys.executable, "-c", script], cwd=tests, capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr
    assert "leaked semaphore" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
