"""A job's full result (attnbench.core.record.Record), saved in its Hydra job folder before anything goes to MLflow.

`result.json` holds everything a run in MLflow would: params, metrics, tags, raw samples, status, reason and
traceback, plus the job's identity and the file's schema version. The end-of-sweep table is printed from these
files, and `attnbench sync` uploads them to a store later, so a tracking store that fails loses nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from attnbench.core.files import write_atomically
from attnbench.core.record import Record
from attnbench.store.credentials import mask

RESULT_FILE = "result.json"


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
    """Write atomically: a crash mid-write leaves the previous file or none, never half a result."""
    path = job_dir / RESULT_FILE
    write_atomically(path, mask(json.dumps(record.to_json(), indent=1)))
    return path


def read(job_dir: Path) -> Record | None:
    path = Path(job_dir) / RESULT_FILE
    return Record.from_json(json.loads(path.read_text())) if path.is_file() else None


def read_all(folder: Path) -> list[Record]:
    """The results of a single run's folder, or of every job of a sweep folder, in job order."""
    folder = Path(folder)
    own = read(folder)
    if own is not None:
        return [own]
    jobs = [path.parent for path in folder.glob(f"*/{RESULT_FILE}")]
    jobs.sort(key=lambda job: (not job.name.isdigit(), int(job.name) if job.name.isdigit() else 0, job.name))
    return [record for record in map(read, jobs) if record is not None]
