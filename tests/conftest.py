"""Shared fixtures: compose the real configs in-process, and run the real script in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from attnbench.config import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))  # test workloads, importable by the tests

register_configs()

# Small and quick: the e2e tests check structure and relations, not speed.
FAST_TIMING = ["timing.warmup_s=0.01", "timing.min_time_s=0.02", "timing.min_reps=3", "timing.max_reps=50"]


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> the job config Hydra would build, hydra node included."""

    def _compose(*overrides: str, return_hydra_config: bool = False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)

    yield _compose
    GlobalHydra.instance().clear()


def run_script(*args: str, store: Path, cwd: Path, script: Path = REPO / "run.py",
               timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run attnbench as a user does, against a throw-away store, with Hydra's swallowed callback
    exceptions turned back into errors so that a broken callback fails the test."""
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db", "PYTHONWARNINGS": ""} | (env or {})
    cmd = [sys.executable, "-W", "error:Callback:UserWarning", str(script), *args,
           f"hydra.sweep.dir={cwd}/multirun", f"hydra.run.dir={cwd}/outputs"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "mlruns"
    path.mkdir()
    return path
