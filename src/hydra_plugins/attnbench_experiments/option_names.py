"""Config-group options are names: a path (`backend=../../elsewhere`) is refused before any file is read.

Hydra turns `GROUP=OPTION` into the config path `GROUP/OPTION` and asks each source of its search path in turn
whether it holds it; a file source joins that path to its folder, so an option with `..` in it loads a YAML
file from anywhere on disk, which no check of attnbench has seen. This source comes first in the search path
(experiments_source.ExperimentsSearchPath puts it there), claims every config path that is not made of names,
and refuses it with one line; names go on to the other sources as before. It covers the command line, every
file's `defaults` and every job of a sweep, since all of them reach Hydra's repository this way.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules.
import re
from typing import List, Optional

from hydra.core.object_type import ObjectType
from hydra.errors import ConfigCompositionException
from hydra.plugins.config_source import ConfigResult, ConfigSource

SCHEME = "attnbench-option-names"


def _name() -> "re.Pattern[str]":
    # Here, not at the plugin scan (it imports attnbench): the file check's own rule for an option name.
    from attnbench.harness.safety import OPTION

    return OPTION


def is_name_path(config_path: str) -> bool:
    """`hydra/launcher/basic` is; `backend/../../x`, `backend//etc/x`, `experiment/file:x` are not."""
    return all(_name().match(part) for part in config_path.removesuffix(".yaml").split("/"))


class OptionNamesOnly(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return SCHEME

    def load_config(self, config_path: str) -> ConfigResult:
        parts = config_path.split("/")
        named = next(i for i, part in enumerate(parts) if not _name().match(part))  # the group is what precedes
        group, option = "/".join(parts[:named]) or "config", "/".join(parts[named:])
        raise ConfigCompositionException(
            f"{group}={option!r}: not an option name; a config group's options are names of files in conf/GROUP/, "
            "experiments/ or an installed plugin's configs, not paths")

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return False

    def is_config(self, config_path: str) -> bool:
        return config_path != "" and not is_name_path(config_path)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        return []
