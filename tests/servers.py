"""Throw-away servers for tests: a PostgreSQL cluster and an MLflow tracking server, started by the test and gone
after it (context managers, so that any test file can use them as fixtures)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 120  # a server that has not answered by then is broken; normally seconds (2 cores, migrations)
PG_USER = "attnbench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_driver(db_uri: str) -> bool:
    """Whether the database driver SQLAlchemy picks for this URI imports (the server needs it, not the client)."""
    from sqlalchemy.engine import make_url

    try:
        make_url(db_uri).get_dialect().import_dbapi()
    except ImportError:
        return False
    return True


def _pg_bindir() -> Path | None:
    """Debian's newest PostgreSQL server binaries (initdb, pg_ctl), if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _as_cluster_owner() -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a user it accepts (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("PostgreSQL refuses to run as root and there is no `postgres` user to run it as")
    if shutil.which("runuser") is None:
        pytest.skip("PostgreSQL refuses to run as root and `runuser` (util-linux) is not there to run it as `postgres`")
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """postgresql://attnbench@127.0.0.1:PORT/attnbench on a fresh cluster in a temporary folder (trust
    authentication, loopback only, unix socket in that folder); stopped and deleted afterwards. Skips the test
    with the reason where it cannot be started: Debian's `postgresql` package or the Python driver missing."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server is not installed (Debian: `apt-get install postgresql`, which .ci/run does)")
    if not has_driver("postgresql://"):
        pytest.skip("the PostgreSQL driver (SQLAlchemy's for postgresql://) is not installed: `pip install -e .[server]`")
    prefix = _as_cluster_owner()
    folder = Path(tempfile.mkdtemp(prefix="attnbench-pg-"))
    if prefix:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()

    def tool(*args: str) -> None:
        done = subprocess.run([*prefix, str(bindir / args[0]), *args[1:]], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{args[0]} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    try:
        # --no-sync and fsync=off: a cluster that is deleted after the test needs no durability, and it saves seconds.
        tool("initdb", "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        tool("pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "-o",
             f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        try:
            tool("createdb", "-h", str(folder), "-p", str(port), "-U", PG_USER, PG_USER)
            yield f"postgresql://{PG_USER}@127.0.0.1:{port}/{PG_USER}"
        finally:
            tool("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, serve_artifacts: bool = True) -> Iterator[str]:
    """http://127.0.0.1:PORT of `mlflow server` on this store, once its /health answers; its process group is
    killed after. As `make server` starts it (one worker, artifacts uploaded through the server into `artifacts`),
    or with serve_artifacts=False as `make ui` does (a store written directly, its artifacts read where they are)."""
    port, url = free_port(), ""
    log = artifacts.parent / f"mlflow-server-{port}.log"
    artifact_args = (["--serve-artifacts", "--artifacts-destination", str(artifacts)] if serve_artifacts
                     else ["--default-artifact-root", str(artifacts)])
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend_uri, *artifact_args]
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            assert server.poll() is None, f"mlflow server exited ({server.returncode}): {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow server did not answer in {START_TIMEOUT_S} s: {log}"
            time.sleep(0.2)
        yield url
    finally:
        # Killed outright: nothing of a throw-away server is read after its test, and a graceful stop takes
        # uvicorn over a second.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
