"""A sweep as attnbench names and records it, from Hydra's config: its title and what its parent run holds."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from attnbench.harness.resume import sweep_key
from attnbench.store.session import SweepRun


def sweep_title(config: DictConfig, sweep_dir: Path) -> str:
    """The parent run's name: the experiment file's, else the sweep folder's."""
    return config.hydra.runtime.choices.get("experiment") or f"sweep {sweep_dir.name}"


def launcher_overrides(config: DictConfig) -> list[str]:
    """The command line's choice of launcher and its settings (`hydra/launcher=slurm hydra.launcher.partition=cpu`):
    part of the sweep's command, since the same command without them would run the jobs here."""
    return [o for o in config.hydra.overrides.hydra if o.startswith(("hydra/launcher=", "hydra.launcher."))]


def sweep_run(config: DictConfig, sweep_dir: Path) -> SweepRun:
    return SweepRun(title=sweep_title(config, sweep_dir), key=sweep_key(config),
                    overrides=launcher_overrides(config) + list(config.hydra.overrides.task),
                    params={str(k): str(v) for k, v in (config.hydra.sweeper.get("params") or {}).items()},
                    dir=sweep_dir)
