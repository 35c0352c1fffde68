"""A job's full result (attnbench.core.record.Record), saved in its Hydra job folder before anything goes to MLflow.

`result.json` holds everything a run in MLflow would: params, metrics, tags, raw samples, status, reason and
traceback, plus the job's identity and the file's schema version. The end-of-sweep table is printed from these
files, and `attnbench sync` uploads them to a store later, so a tracking store that fails loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from attnbench.core.files import write_atomically
from attnbench.core.record import BadRecord, Record
from attnbench.store.credentials import mask

RESULT_FILE = "result.json"
MAX_PROBLEM = 500  # a parent run's reason: one line, the files first


def run_name(cfg: DictConfig) -> str:
    # Short enough for the UI's narrow name column; shape, dtype and the rest are param columns.
    name = _text(cfg.backend.name)
    if cfg.compile:
        mode = _text(cfg.compile_mode)
        name += "+compile" if mode == "default" else f"+{mode}"
    return name


def _text(choice) -> str:
    return str(getattr(choice, "value", choice))  # an Enum member's value, or a plain string


def write(job_dir: Path, record: Record) -> Path:
    """Write atomically: a crash mid-write leaves the previous file or none, never half a result. The file names
    its folder as "." (schema 3), so that it stays right when the folder is moved, copied or taken elsewhere."""
    path = job_dir / RESULT_FILE
    write_atomically(path, mask(json.dumps(record.to_json() | {"dir": "."}, indent=1)))
    return path


class DamagedResult(ValueError):
    """A result file that cannot be read as a Record: its path and why, in one line."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path, self.why = Path(path), why


@dataclass(frozen=True)
class Results:
    """What a folder holds: its readable results, in job order, and each file that could not be read."""

    records: list[Record]
    damaged: list[DamagedResult]

    def problem(self, folder: Path) -> str | None:
        """One line naming the damaged files (relative to the folder), for a sweep's parent run; None if none."""
        if not self.damaged:
            return None
        named = "; ".join(f"{_relative(d.path, folder)} ({d.why})" for d in self.damaged[:3])
        more = f"; and {len(self.damaged) - 3} more" if len(self.damaged) > 3 else ""
        files = f"{len(self.damaged)} result file{'s' if len(self.damaged) > 1 else ''}"
        return f"{files} cannot be read: {named}{more}"[:MAX_PROBLEM]


def read(job_dir: Path) -> Record | None:
    """The folder's result (None if it has none; DamagedResult if it cannot be read). Its folder is where the file
    is, whatever the file says: an older file names the folder it was written in, which may be gone or elsewhere."""
    job_dir = Path(job_dir)
    path = job_dir / RESULT_FILE
    if not os.path.lexists(path):
        return None
    if not path.is_file():
        raise DamagedResult(path, "not a regular file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise DamagedResult(path, f"cannot be read ({type(e).__name__}: {why})") from None
    except json.JSONDecodeError as e:
        raise DamagedResult(path, f"not JSON ({e.msg}: line {e.lineno}, column {e.colno})") from None
    try:
        record = Record.from_json(data)
    except BadRecord as e:
        raise DamagedResult(path, str(e)) from None
    return dataclasses.replace(record, dir=str(job_dir))


def read_folder(folder: Path) -> Results:
    """The results of a single run's folder, or of every job of a sweep folder, in job order; a file that cannot be
    read, or that is a link out of the folder, is among `damaged` and the others are read. Nothing outside the
    folder is read."""
    folder = Path(folder)
    own = folder / RESULT_FILE
    jobs = [folder] if os.path.lexists(own) else [path.parent for path in folder.glob(f"*/{RESULT_FILE}")]
    jobs.sort(key=lambda job: (not job.name.isdigit(), int(job.name) if job.name.isdigit() else 0, job.name))
    records, damaged, seen = [], [], {}
    for job in jobs:
        outside = _outside(job / RESULT_FILE, folder)
        try:
            if outside:
                raise DamagedResult(job / RESULT_FILE, f"a link to {outside}, outside {folder}: not read")
            record = read(job)
            if record is not None and record.id in seen:  # a job folder copied within the sweep: one result
                raise DamagedResult(job / RESULT_FILE, f"a copy of {_relative(seen[record.id], folder)} (the "
                                                       "same result id): counted once")
        except DamagedResult as e:
            damaged.append(e)
            continue
        if record is not None:
            records.append(record)
            seen[record.id] = job / RESULT_FILE
    return Results(records, damaged)


def read_all(folder: Path) -> list[Record]:
    """Every result of a folder (read_folder), or DamagedResult for the first file that cannot be read."""
    found = read_folder(folder)
    if found.damaged:
        raise found.damaged[0]
    return found.records


def _outside(path: Path, folder: Path) -> Path | None:
    """Where a path leads when a link takes it out of the folder, else None."""
    real = path.resolve()
    return None if real.is_relative_to(folder.resolve()) else real


def _relative(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
