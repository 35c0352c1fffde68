"""Resuming a sweep (`resume=true`): which cases are already done, and which sweep the new jobs continue.

A case (attnbench.harness.case) that already finished `ok` in the experiment is skipped. The tracking callback, which
can read the store, fills in the done cases before the first job; the runner asks before running each job.
A sweep is recognised by its sweep key: the experiment file and the overrides that choose cases, so the same
command resumed with other timing or tracking settings (say a longer timing.max_job_s) continues the same sweep.
"""

from __future__ import annotations

import hashlib
import json

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from attnbench.harness.case import NOT_PART_OF_A_CASE

_done: dict[str, str] = {}  # case key → the run where it finished ok


def remember_done(cases: dict[str, str]) -> None:
    _done.update(cases)


def done_in(case: str) -> str | None:
    return _done.get(case)


def sweep_key(config: DictConfig) -> str:
    """The same for every invocation of one sweep, however it is timed or tracked."""
    overrides = list(config.hydra.overrides.task) + [
        f"{key}={value}" for key, value in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    chosen = sorted(text for text, override in zip(overrides, OverridesParser.create().parse_overrides(overrides))
                    if override.key_or_group.split(".")[0] not in NOT_PART_OF_A_CASE)
    identity = {"experiment": config.hydra.runtime.choices.get("experiment"), "overrides": chosen}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
