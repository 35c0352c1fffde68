"""What waits until a sweep's jobs are checked: the moment between the sweeper's validation and the first launch.

Hydra calls its callbacks' `on_multirun_start` before the sweeper composes a single job, so a run created there
outlives a sweep that validation then refuses (a typo in a swept value: an empty FAILED parent run in MLflow). What
only a sweep that runs should leave behind waits here instead, and attnbench's sweeper
(hydra_plugins.attnbench_sweeper) calls `jobs_checked()` once the first batch of jobs is valid, before launching it.
"""

from __future__ import annotations

from typing import Callable

_waiting: dict[str, Callable[[], None]] = {}


def when_jobs_checked(name: str, step: Callable[[], None]) -> None:
    """Run `step` once the sweep's jobs are checked. One step per name: a later sweep in this process (a test's)
    replaces what a refused one left waiting."""
    _waiting[name] = step


def jobs_checked() -> None:
    """The sweep's jobs are valid and about to be launched: run what waits, once each, in the order it came."""
    while _waiting:
        name = next(iter(_waiting))
        _waiting.pop(name)()


def is_waiting(name: str) -> bool:
    return name in _waiting
