"""What a number was measured on: versions, device, driver, host and code revision (cached per process)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

from attnbench.core.devices import device_name


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@lru_cache(maxsize=None)
def git_commit(repo: Path) -> str:
    # A copy of the tree on another host (rsync to a GPU machine, say) is told its revision: its own .git, if it has
    # one, may be older than the files copied over it (seen: runs of one commit recorded under an earlier one).
    if os.environ.get("ATTNBENCH_GIT_COMMIT"):
        return os.environ["ATTNBENCH_GIT_COMMIT"]
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    if commit is None:
        return "unknown"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return f"{commit}-dirty" if dirty else commit


@lru_cache(maxsize=None)
def nvidia_driver() -> str | None:
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0] if out else None


def _version(*distributions: str) -> str:
    """An installed distribution's version, without importing it (importing mlflow costs the job worker ~1 s)."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


@lru_cache(maxsize=None)
def environment(device: torch.device, repo: Path) -> dict[str, str]:
    env = {
        "env.python": platform.python_version(),
        "env.torch": str(torch.__version__),  # a TorchVersion would make the sweep's process import torch to read it
        "env.hydra": _version("hydra-core"),
        "env.mlflow": _version("mlflow", "mlflow-skinny"),
        "env.platform": platform.platform(),
        "env.hostname": socket.gethostname(),
        "env.device_type": device.type,
        "env.device_name": device_name(device),
        "env.cpu": device_name(torch.device("cpu")),
        "env.git_commit": git_commit(repo),
    }
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        env |= {
            "env.cuda": str(torch.version.cuda),
            "env.cudnn": str(torch.backends.cudnn.version()),
            "env.compute_capability": f"{major}.{minor}",
            "env.driver": nvidia_driver() or "unknown",
        }
    return env
