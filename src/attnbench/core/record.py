"""A job's result: the one contract between measuring (core), running (harness), keeping (store) and reading
(analysis). It is what `result.json` holds, what the store writes to MLflow, and what every table is made from.

`run_job` returns a Record with what was measured; the harness adds who and where (job number, folder, params).
`result.json` carries `schema`; files written before it existed (schema 1, the same keys) still load. A file is
checked as it loads (`from_json`), so that a damaged one is refused in one line, not half-used.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# 3: `dir` is the file's own folder, written "." (the folder moves with it); 2 and 1 held it absolute, and it is
# ignored when they load: a reader takes a result's folder from where it found the file.
SCHEMA = 3


class Status(str, Enum):
    """How a job ended (docs/results.md, Statuses). A str, so `record.status == "ok"` reads as it says."""

    ok = "ok"  # ran the promised kernel; answer within tolerance
    unsupported = "unsupported"  # this backend, model, device or build cannot run it
    skipped = "skipped"  # nothing to run (a repeat of another job; resumed and already ok)
    oom = "oom"
    wrong = "wrong"  # ran, but the answer is not what was asked or not within tolerance
    fallback = "fallback"  # a forced backend ran another kernel
    invalid = "invalid"  # torch.compile recompiled while timed
    timeout = "timeout"
    crashed = "crashed"  # its process died
    error = "error"  # anything unexpected
    interrupted = "interrupted"  # a signal stopped the sweep while it ran
    running = "running"  # not ended yet: a result saved before its job ran

    def __str__(self) -> str:
        return self.value

    @property
    def failed(self) -> bool:
        """The job did not do what it was asked (the command exits 1); every other status is a measurement or a
        verdict about the kernel."""
        return self in (Status.error, Status.timeout, Status.crashed)


def is_approximate(tags: dict[str, str]) -> bool:
    """A job of a backend that does not compute softmax attention (tagged by the job; records from before that tag
    say so in their `check` tag)."""
    return tags.get("approximate") == "true" or tags.get("check") == "approximate"


@dataclass(frozen=True)
class Record:
    status: Status
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # raw µs per timing method
    traceback: str | None = None
    # Who and where, set by the harness.
    id: str = ""  # one execution of the job: what `attnbench sync` recognises as uploaded
    job: str = ""  # its number in the sweep, or "run"
    name: str = ""  # its run's name: `flash+compile`
    dir: str = ""  # its job folder (in result.json: ".", the file's own)
    params: dict[str, str] = field(default_factory=dict)  # the flattened resolved config
    host: str = ""
    pid: int = 0
    started_ms: int = 0
    ended_ms: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

    @classmethod
    def begun(cls, job: str, name: str, job_dir: str, params: dict[str, str], tags: dict[str, str]) -> "Record":
        """A job's record before it runs: its identity, params and tags; status `running`."""
        return cls(Status.running, tags=dict(tags), id=uuid.uuid4().hex, job=job, name=name, dir=str(job_dir),
                   params=dict(params), host=socket.gethostname(), pid=os.getpid(),
                   started_ms=int(time.time() * 1000))

    def ended(self, measured: "Record") -> "Record":
        """This record with what the job measured (its status, reason, metrics, samples, traceback; tags added)."""
        return dataclasses.replace(self, status=measured.status, reason=measured.reason,
                                   metrics=dict(measured.metrics), samples=dict(measured.samples),
                                   traceback=measured.traceback, tags=self.tags | measured.tags,
                                   ended_ms=int(time.time() * 1000))

    def with_tags(self, tags: dict[str, str]) -> "Record":
        return dataclasses.replace(self, tags=self.tags | tags)

    @property
    def ok(self) -> bool:
        return self.status is Status.ok

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **dataclasses.asdict(self), "status": self.status.value}

    @classmethod
    def from_json(cls, data: Any) -> "Record":
        """From `result.json` (any schema so far: version 1 has the same keys, no `schema`); BadRecord if it is not
        one, or is an `ok` without its median."""
        if not isinstance(data, dict):
            raise BadRecord(f"not a result: a JSON {type(data).__name__}, not an object")
        if data.get("schema", 1) not in range(1, SCHEMA + 1):
            raise BadRecord(f"schema {_shown(data['schema'])}: this attnbench reads schemas 1 to {SCHEMA} (a newer "
                            "attnbench wrote it?)")
        for key, kinds in _FIELD_TYPES.items():
            if key in data and not isinstance(data[key], kinds) or isinstance(data.get(key), bool):
                raise BadRecord(f"{key} is {_shown(data[key])}, not {' or '.join(_TYPE_NAMES[k] for k in kinds)}")
        _check_status(data)
        if not re.fullmatch(r"[\w.-]{1,64}", data.get("id", "")):
            raise BadRecord(f"id is {_shown(data.get('id'))}, not an id (what tells whether it is uploaded)")
        for key in ("metrics", "tags", "samples", "params"):
            for name, value in (data.get(key) or {}).items():
                if not _valid(key, value):
                    raise BadRecord(f"{key}.{name} is {_shown(value)}, not {_WANTED[key]}")
        median = (data.get("metrics") or {}).get("median_us")
        if data["status"] == Status.ok and not (median is not None and math.isfinite(median) and median > 0):
            raise BadRecord(f"an `ok` result without its median (metrics.median_us is {_shown(median)})")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


class BadRecord(ValueError):
    """A result file's content that is not a Record: what is wrong, in one line."""


_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", type(None): "null"}
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "reason": (str,), "metrics": (dict,), "tags": (dict,), "samples": (dict,),
    "traceback": (str, type(None)), "id": (str,), "job": (str,), "name": (str,), "dir": (str,), "params": (dict,),
    "host": (str,), "pid": (int,), "started_ms": (int,), "ended_ms": (int, type(None))}
_WANTED = {"metrics": "a number", "tags": "a string or number", "params": "a string or number",
           "samples": "a list of numbers"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _valid(key: str, value: Any) -> bool:
    if key == "metrics":
        return value is None or _is_number(value)  # None: a metric that could not be computed (not uploaded)
    if key == "samples":
        return isinstance(value, list) and all(_is_number(v) for v in value)
    return isinstance(value, (str, int, float, bool)) or value is None  # a tag or param: written as its text


def _check_status(data: dict[str, Any]) -> None:
    if "status" not in data:
        raise BadRecord("it has no status")
    if data["status"] not in {s.value for s in Status}:
        raise BadRecord(f"status {_shown(data['status'])} is not one of {', '.join(s.value for s in Status)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
