"""`tracking.redact=true`: the runs a sweep writes name no host and no home directory.

A shared store is shared: by default every run says which machine ran it (`attnbench.host`, `env.hostname`,
`placement.host`) and where its folder was (`sweep.dir`, a `tracking.uri` param with a path). With redaction, a
value that names the host is a salted hash of it instead — the same on this machine every time, so the next sweep
still finds and closes the runs this machine's dead processes left RUNNING (attnbench.store.tracking.stale), and
meaningless anywhere else (the salt stays on this machine, in the user's cache folder). The home directory in any
value becomes `~`. Applied to the client the store session writes through: every tag and param of every run.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from typing import Any

HOST_KEYS = frozenset({"attnbench.host", "env.hostname", "placement.host"})
SALT_FILE = Path.home() / ".cache" / "attnbench" / "host-salt"


def host_id(name: str | None = None, create: bool = True) -> str | None:
    """`host-` and 12 hex digits of the salted hash of the host's name; None without a salt (and `create` off)."""
    salt = _salt(create)
    if salt is None:
        return None
    return "host-" + hashlib.sha256(salt + (name or socket.gethostname()).encode()).hexdigest()[:12]


def _salt(create: bool) -> bytes | None:
    try:
        return SALT_FILE.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
    SALT_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:  # the first writer wins; its salt is every later process's
        fd = os.open(SALT_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    except FileExistsError:
        pass
    return SALT_FILE.read_bytes()


def this_host_names() -> set[str]:
    """What this machine's runs call it: its name, and its hash where runs of it were redacted."""
    hashed = host_id(create=False)
    return {socket.gethostname(), *([hashed] if hashed else [])}


def redact(key: str, value: Any) -> Any:
    if key in HOST_KEYS and value:
        return host_id(str(value))
    if isinstance(value, str):
        return _home().sub("~", value)
    return value


def _home():
    home = re.escape(str(Path.home()).rstrip("/"))
    return re.compile(rf"{home}(?=/|$|[\s'\",;:)\]}}])") if home else re.compile(r"(?!x)x")


class RedactingClient:
    """An MlflowClient whose writes of tags and params are redacted; everything else is the client's own."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def create_run(self, experiment_id, start_time=None, tags=None, run_name=None, *args, **kwargs):
        tags = {k: redact(k, v) for k, v in (tags or {}).items()}
        return self._client.create_run(experiment_id, start_time, tags, run_name, *args, **kwargs)

    def set_tag(self, run_id, key, value, *args, **kwargs):
        return self._client.set_tag(run_id, key, redact(key, value), *args, **kwargs)

    def log_param(self, run_id, key, value, *args, **kwargs):
        return self._client.log_param(run_id, key, redact(key, value), *args, **kwargs)

    def log_batch(self, run_id, metrics=(), params=(), tags=(), *args, **kwargs):
        from mlflow.entities import Param, RunTag  # here, not at import (attnbench.store.tracking.upload says why)

        params = [Param(p.key, redact(p.key, p.value)) for p in params]
        tags = [RunTag(t.key, redact(t.key, t.value)) for t in tags]
        return self._client.log_batch(run_id, metrics, params, tags, *args, **kwargs)
