"""A job's Hydra settings are the command line's: what a shared file added under `hydra` is refused.

The experiment-file check (attnbench.harness.safety) reads each file before Hydra composes it. This is the
second look, at what Hydra actually composed: before any job of a sweep runs, each job's `hydra` node must equal
the node the command line alone gives (the same Hydra overrides, no config-group options and no experiment),
apart from what a sweep is allowed to vary: `hydra.sweeper.params`, and the records of the job's own overrides
(`hydra.overrides.task`, `hydra.job.override_dirname`, the chosen options of attnbench's groups).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

EXPERIMENTS_SCHEME = "attnbench-experiments"


def hydra_settings_problem(job: DictConfig, command_line: DictConfig) -> str | None:
    """One line naming the file and the first setting under `hydra` it changed; None if it changed none."""
    ours, theirs = _settings(job), _settings(command_line)
    if ours == theirs:
        return None
    key = _first_difference(ours, theirs, "hydra")
    return (f"{_files(job)}: {key}: a shared file may set hydra.sweeper.params only; Hydra placed a setting of "
            "its own here (refused before any job runs)")


def _settings(config: DictConfig) -> dict:
    settings = OmegaConf.to_container(config.hydra, resolve=False)
    assert isinstance(settings, dict)
    settings.get("sweeper", {}).pop("params", None)
    settings.get("overrides", {}).pop("task", None)
    settings.get("job", {}).pop("override_dirname", None)
    choices = settings.get("runtime", {}).get("choices", {})
    for group in [g for g in choices if not str(g).startswith("hydra/")]:
        del choices[group]
    return settings


def _first_difference(ours: Any, theirs: Any, path: str) -> str:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            if ours.get(key, _MISSING) != theirs.get(key, _MISSING):
                return _first_difference(ours.get(key), theirs.get(key), f"{path}.{key}")
    return path


_MISSING = object()


def _files(job: DictConfig) -> str:
    """The experiment file the job was composed with (the shared file), else the options it chose."""
    choices = job.hydra.runtime.choices
    name = choices.get("experiment")
    if name:
        for source in job.hydra.runtime.config_sources:
            if source.schema == EXPERIMENTS_SCHEME and (Path(source.path) / f"{name}.yaml").is_file():
                return str(Path(source.path) / f"{name}.yaml")
        return f"experiment={name}"
    return " ".join(f"{group}={option}" for group, option in choices.items() if not str(group).startswith("hydra/"))
