"""The job worker: one process reused between jobs, killed at a job's time limit, replaced when it dies."""

from __future__ import annotations

import os
import time

import pytest

from attnbench.worker import Died, Done, Failed, TimedOut, Worker, notify


def pid() -> int:
    return os.getpid()


def forever() -> None:
    while True:
        time.sleep(1)


def abort() -> None:
    os.abort()


def fail() -> None:
    raise ValueError("a bug in the harness")


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
    from attnbench.worker import Done, Worker

    worker = Worker(preload=("os:getpid",))  # "module:function": imported, then called, before any task
    try:
        answer = worker.run(os.getpid, (), timeout_s=120)
        assert isinstance(answer, Done) and answer.value != os.getpid()
    finally:
        worker.close()
