"""How the command ends: the exit code, from what happened in this process, whoever noticed it.

The runner records every job's status, the tracking callback records a tracking failure, the signal handlers
record an interruption. run.py turns that into the exit code, so the code tells the truth even when a callback
is removed or broken.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

# A job that ended in one of these did not do what it was asked: the command exits 1. Every other status
# (ok, unsupported, oom, wrong, invalid, fallback, skipped, ...) is a measurement or a verdict about the kernel.
# `interrupted` without a signal to this command: something else stopped the job (Slurm cancelled its task).
FAILED_STATUSES = ("error", "timeout", "crashed", "interrupted")

EXIT_JOB_FAILED = 1  # also Hydra's exit code for a config it refused
EXIT_TRACKING_FAILED = 2  # every result is in the sweep folder, not all of them in MLflow: `attnbench sync`
HANDLED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")  # Ctrl-C, `timeout`/docker stop/Slurm, a closed terminal


class Interrupted(KeyboardInterrupt):
    """A signal asked the sweep to stop. A KeyboardInterrupt, so that everything Ctrl-C unwinds, it unwinds."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Outcome:
    statuses: dict[str, str] = field(default_factory=dict)  # job → status
    tracking_failure: str | None = None  # the first tracking error, in words
    interrupted_by: str | None = None  # the signal's name
    stopped_because: str | None = None  # why the sweep stopped before its jobs ran, in one line (a full disk)

    def exit_code(self) -> int:
        if self.interrupted_by:
            return 128 + signal.Signals[self.interrupted_by].value
        if any(status in FAILED_STATUSES for status in self.statuses.values()):
            return EXIT_JOB_FAILED
        return EXIT_TRACKING_FAILED if self.tracking_failure else 0


outcome = Outcome()


def record_status(job: str, status: str) -> None:
    outcome.statuses[job] = status


def record_tracking_failure(message: str) -> None:
    outcome.tracking_failure = outcome.tracking_failure or message


def interrupted_by() -> str | None:
    return outcome.interrupted_by


def record_stop_reason(reason: str) -> None:
    outcome.stopped_because = outcome.stopped_because or reason


def stop_reason() -> str | None:
    return outcome.stopped_because


def _stop(signum: int, frame) -> None:
    outcome.interrupted_by = outcome.interrupted_by or signal.Signals(signum).name
    raise Interrupted(signum)


def raise_if_stopped() -> None:
    """Raise the stop again if a signal came and the sweep is still going: the handler's exception is lost when
    the signal lands while Python runs a finalizer (it prints "Exception ignored in ..." and goes on), which the
    garbage collector can start at any allocation. Called before each job's config is composed or handed out."""
    if outcome.interrupted_by is not None:
        raise Interrupted(signal.Signals[outcome.interrupted_by].value)


def handle_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP all stop the sweep the way Ctrl-C does: the running job and the sweep are
    recorded as interrupted, and the command exits with 128 + the signal's number."""
    for name in HANDLED_SIGNALS:
        signal.signal(getattr(signal, name), _stop)
