"""Before the first job: can results be recorded in this store? If not, one line says why and nothing runs.

A fresh SQLite store is created and migrated under a file lock beside it: MLflow migrates a new database in
several steps, and sweeps started together on one fresh store would otherwise interleave them and leave it
half-migrated for good. A tracking server is asked with MLflow's own retry and timeout settings bounded, so an
unreachable one is refused in seconds rather than after minutes of retries.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock

from attnbench.store.credentials import mask, real_uri

# MLflow's defaults retry a failed request 7 times with exponential backoff and wait 120 s for an answer: ~4 min
# before a sweep learns that its server is down. Set only where the user has not chosen otherwise.
MLFLOW_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow prints each run's URL, credentials included, when a run on a server ends; attnbench prints one link.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
LOCK_TIMEOUT_S = 120  # another sweep creating the same store: it takes seconds
FIX_STORE = "choose a store with tracking.uri=URI or $MLFLOW_TRACKING_URI"


class StoreProblem(Exception):
    """The tracking store cannot be used: one line naming the store, the problem and what to do."""


def apply_mlflow_settings() -> None:
    for name, value in MLFLOW_SETTINGS.items():
        os.environ.setdefault(name, value)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, else None."""
    if not uri.startswith("sqlite:"):
        return None
    return Path(urlparse(uri).path.removeprefix("/")) if uri.startswith("sqlite:///") else Path("")


def check_uri(uri: str) -> None:
    shown = mask(uri)
    if not uri.strip():
        raise StoreProblem(f"the tracking URI is empty: {FIX_STORE}")
    if "://" not in uri or not urlparse(uri).scheme:
        raise StoreProblem(f"tracking URI {shown!r} is not a URI: expected sqlite:////absolute/path/mlflow.db, "
                           f"http(s)://host:port or a database URL; {FIX_STORE}")
    path = sqlite_path(uri)
    if path is None:
        return
    if not path.is_absolute():
        raise StoreProblem(f"tracking URI {shown!r}: the SQLite path {str(path)!r} is not absolute (it would "
                           "depend on the folder you run from): write sqlite:////absolute/path/mlflow.db")
    if not path.parent.is_dir():
        raise StoreProblem(f"tracking URI {shown!r}: the folder {path.parent} does not exist: create it or "
                           f"{FIX_STORE}")


def check_experiment_name(name: str | None) -> None:
    if not name or not name.strip():
        raise StoreProblem(f"tracking.experiment={name!r} is not valid: expected a non-empty MLflow experiment "
                           "name, e.g. tracking.experiment=attnbench")


def open_store(uri: str, experiment: str, artifact_location: str | None):
    """(client, experiment id), the experiment created if it does not exist; StoreProblem if unusable."""
    from mlflow.tracking import MlflowClient

    check_uri(uri)
    check_experiment_name(experiment)
    apply_mlflow_settings()
    path = sqlite_path(uri)
    lock = FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S) if path else contextlib.nullcontext()
    try:
        with lock:
            client = MlflowClient(tracking_uri=real_uri(uri))
            found = client.get_experiment_by_name(experiment)  # the first call creates or migrates the store
            if found is None:
                found = _create_experiment(client, experiment, artifact_location)
    except Exception as e:  # noqa: BLE001 - whatever MLflow or the database says, in one line
        raise StoreProblem(f"MLflow store {mask(uri)} cannot be used: {first_line(e)}; fix it or {FIX_STORE}") from e
    if found.lifecycle_stage == "deleted":
        raise StoreProblem(f"MLflow experiment {experiment!r} in store {mask(uri)} is deleted: restore it (UI, or "
                           f"`mlflow experiments restore --experiment-id {found.experiment_id}`) or choose "
                           "another name with tracking.experiment=NAME")
    return client, found.experiment_id


def _create_experiment(client, name: str, artifact_location: str | None):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_experiment(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:  # a sweep on another host created it first (a server has no file lock to share)
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found


def first_line(error: BaseException) -> str:
    """The error in one line; for a server that cannot be reached, just that and why."""
    text = mask(str(error).strip())
    if "Max retries exceeded" in text or "timed out" in text:
        why = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)|(Read timed out)", text)
        reason = (why.group(1) or why.group(2)).strip() if why else "no answer"
        return (f"the server cannot be reached ({reason}; gave up after "
                f"MLFLOW_HTTP_REQUEST_MAX_RETRIES={os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES', 7)} retries)")
    lines = text.splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")
