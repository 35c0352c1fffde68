"""Jobs that differ only in values share one composition by Hydra.

Hydra composes a job in two steps: its defaults list (the config-group choices) into a config, then each value
override applied to that config in order (`OmegaConf.update(..., merge=True)`). Most sweeps vary values
(`seed=range(200)`, `shape.seq_len=...`), so for those jobs the first step gives the same config every time;
it is ~0.07 s of the ~0.08 s a composition costs here. This keeps that config per set of choices, and makes each
job by applying its values to a copy of it (~5 ms), as Hydra would; anything else — a key added or removed
(`+k=`, `++k=`, `~k`), a dict merged into a group's node, a value Hydra refuses — is composed by Hydra in full,
so its result and its errors are Hydra's own. tests/test_sweeper.py checks every job against Hydra's composition.
"""

import copy
import re
from typing import Callable, Dict, List, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

Compose = Callable[[DictConfig, List[str]], DictConfig]


class SharedCompositions:
    """`load(master, overrides)`: the job's config, composed by `compose` or made from a kept composition."""

    def __init__(self, compose: Compose, groups: Callable[[], Sequence[str]], keep: int = 32) -> None:
        self.compose, self.list_groups, self.keep = compose, groups, keep
        self._groups: Optional[frozenset] = None
        self._kept: Dict[tuple, DictConfig] = {}

    def load(self, master: DictConfig, overrides: List[str]) -> DictConfig:
        parsed = OverridesParser.create().parse_overrides(overrides)
        values = [o for o in parsed if self._is_value(o)]
        choices = [o for o in parsed if not self._is_value(o)]
        if not values or not all(o.is_hydra_override() or self._is_choice(o) for o in choices):
            return self.compose(master, overrides)
        config = copy.deepcopy(self._composition(master, [o.input_line for o in choices]))
        try:
            for value in values:
                OmegaConf.update(config, value.key_or_group, value.value(), merge=True)
        except OmegaConfBaseException:  # a value Hydra refuses: its own composition raises its own message
            return self.compose(master, overrides)
        OmegaConf.copy_cache(from_config=master, to_config=config)  # as Hydra's load_sweep_config does
        task = [o for o in parsed if not o.is_hydra_override()]
        config.hydra.overrides.task = [o.input_line for o in task]
        config.hydra.job.override_dirname = _override_dirname(task, config.hydra.job.config.override_dirname)
        return config

    def command_line(self, master: DictConfig, overrides: List[str]) -> DictConfig:
        """What the command line alone gives this job: its Hydra overrides, no options and no values (kept: one
        composition per sweep). Where the config needs an option chosen (a group with no default), the job's
        choices but its experiment too."""
        parsed = OverridesParser.create().parse_overrides(overrides)
        hydra = [o.input_line for o in parsed if o.is_hydra_override()]
        try:
            return self._composition(master, hydra)
        except HydraException:
            choices = [o.input_line for o in parsed if self._is_choice(o) and o.key_or_group != "experiment"]
            return self._composition(master, [*hydra, *choices])

    def _composition(self, master: DictConfig, choices: List[str]) -> DictConfig:
        key = (id(master), tuple(choices))
        if key in self._kept:
            self._kept[key] = self._kept.pop(key)  # the most recently used is kept longest
        else:
            if len(self._kept) >= self.keep:  # a sweep over many choices: keep the latest used
                self._kept.pop(next(iter(self._kept)))
            self._kept[key] = self.compose(master, choices)
        return self._kept[key]

    def _is_value(self, override: Override) -> bool:
        return (override.type == OverrideType.CHANGE and override.package is None
                and not override.is_hydra_override() and not self._is_group(override.key_or_group))

    def _is_choice(self, override: Override) -> bool:
        return self._is_group(override.key_or_group) and not isinstance(override.value(), dict)

    def _is_group(self, key: str) -> bool:
        if self._groups is None:
            self._groups = frozenset(self.list_groups())
        return key.split("/")[0] in self._groups

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_kept": {}}  # a copy in another process composes its own


def _override_dirname(task: List[Override], settings: DictConfig) -> str:
    """`hydra.job.override_dirname` as Hydra's config loader computes it (not public in Hydra)."""
    lines = sorted(o.input_line for o in task if o.key_or_group not in settings.exclude_keys)
    return re.sub("[=]", settings.kv_sep, settings.item_sep.join(lines))
