"""A run without `-m` of an experiment file runs one job: it says which of the file's sweep it left out.

Hydra reads `hydra.sweeper.params` only under `-m`, so `python run.py experiment=masks` runs one job — the file's
defaults — and would say nothing of the 15 it swept. `size=cpu` sizes an experiment's sweep (the compose-once
sweeper applies it: attnbench.harness.sizes), so without `-m` it is refused before anything runs.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from attnbench.harness.sizes import DOCS, FULL


class SingleRunCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refusal = size_refusal(config)
        if refusal:  # SystemExit, not an Exception: Hydra turns a callback's exception into a warning, and runs
            raise SystemExit(refusal)
        line = skipped_sweep_line(config)
        if line:
            print(line, file=sys.stderr)


def size_refusal(config: DictConfig) -> str | None:
    size = OmegaConf.select(config, "size.name")
    name = str(getattr(size, "value", size))
    if size is None or name == FULL:
        return None
    return (f"attnbench: size={name} runs an experiment's sweep at the size its file states, which needs -m: "
            f"python run.py -m experiment=NAME size={name} ({DOCS})")


def skipped_sweep_line(config: DictConfig) -> str | None:
    """`experiment=masks is a sweep of 15 jobs; ...`, or None where the command line chose every swept value."""
    experiment = config.hydra.runtime.choices.get("experiment")
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    chosen = {o.split("=", 1)[0].lstrip("+~") for o in config.hydra.overrides.task}
    left = [str(key) for key in params if str(key) not in chosen]
    if not experiment or not left:
        return None
    parser = OverridesParser.create()
    jobs = 1
    for key, values in params.items():
        override = parser.parse_override(f"{key}={values}")
        jobs *= sum(1 for _ in override.sweep_string_iterator()) if override.is_discrete_sweep() else 1
    return (f"attnbench: experiment={experiment} is a sweep of {jobs} jobs (over {', '.join(left)}); without -m this "
            f"runs one job, with the file's default {' and '.join(left)}: add -m to run the sweep")
