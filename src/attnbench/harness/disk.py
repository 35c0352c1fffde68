"""A sweep folder's disk that fills up stops the sweep before its next job, in one line, with what ran kept.

A job writes ~10–100 kB into its folder (Hydra's configs, its log, its result); with less than MIN_FREE_BYTES
left, the next job would fail half-written, and Hydra would end the sweep with a traceback from wherever the
write happened. So the sweeper looks before each job (a statvfs call) and stops the sweep with DiskFull, and a
write that fails anyway (another process filled the disk mid-job) is turned into the same one line.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from hydra.errors import CompactHydraException

MIN_FREE_BYTES = 1_000_000
FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(CompactHydraException):
    """The sweep folder's disk is full: one line (Hydra prints a CompactHydraException without a trace)."""


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def message(folder: Path, free: int) -> str:
    return (f"the disk of {folder} is full ({_mb(free)} free; a job needs {_mb(MIN_FREE_BYTES)} for its configs, "
            "log and result): the sweep stopped before its next job; the jobs that ran are saved and recorded. "
            "Free some space and run the same command with resume=true")


def free_bytes(folder: Path) -> int:
    """Free space on the disk that holds `folder` (or its nearest existing parent: the sweep folder may be new)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_space(folder: Path) -> None:
    """DiskFull if the disk of `folder` has less than a job needs."""
    free = free_bytes(folder)
    if free < MIN_FREE_BYTES:
        raise DiskFull(message(Path(folder), free))


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in FULL
