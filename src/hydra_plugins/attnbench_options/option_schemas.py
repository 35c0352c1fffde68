"""The schema of every backend, mask and model option, read when Hydra asks for it; plugins' backends as options.

Each option's YAML extends `schema/<group>/<name>` (conf/backend/flex.yaml: `- /schema/backend/flex@_here_`), the
dataclass that types its fields. This source answers for those paths from attnbench.core.options, which imports no
torch, so that composing a config (for `--help`, or to refuse a command line) imports no implementation. A backend
that an installed distribution adds (entry point group `attnbench.backends`, docs/extending.md) is listed as an
option of the `backend` group by its name alone; its class, and with it torch, is loaded when the option is chosen.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules.
from importlib.metadata import entry_points
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.errors import ConfigCompositionException
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

SCHEME = "attnbench-options"
SCHEMA = "schema"
PLUGIN_GROUP = "backend"


def _plugin_names() -> List[str]:
    from attnbench.core.options import BACKEND_PLUGINS  # here, not at the plugin scan: it imports attnbench

    return sorted({entry_point.name for entry_point in entry_points(group=BACKEND_PLUGINS)})


def _schema(config_path: str):
    """(group, option) of `schema/<group>/<option>` for a group attnbench types, else None. A schema that code
    outside attnbench stored in Hydra's ConfigStore at that path (a test's own model) is left to the ConfigStore."""
    from attnbench.core.options import OPTION_GROUPS

    name = config_path.removesuffix(".yaml")
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != SCHEMA or parts[1] not in OPTION_GROUPS or not parts[2]:
        return None
    if ConfigStore.instance().get_type(f"{name}.yaml") is not ObjectType.NOT_FOUND:
        return None
    return OPTION_GROUPS[parts[1]], parts[2]


def _plugin(config_path: str) -> Optional[str]:
    group, _, name = config_path.removesuffix(".yaml").partition("/")
    return name if group == PLUGIN_GROUP and name in _plugin_names() else None


class OptionSchemas(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return SCHEME

    def load_config(self, config_path: str) -> ConfigResult:
        schema, plugin = _schema(config_path), _plugin(config_path)
        if schema is not None:
            group, name = schema
            config = group.config(name)(name=name)
        elif plugin is not None:
            config = _plugin_config(plugin)
        else:
            raise ConfigLoadError(f"Config not found : {config_path}")
        return ConfigResult(config=OmegaConf.structured(config), path=f"{SCHEME}://", provider=self.provider,
                            header={"package": None})

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") == PLUGIN_GROUP and bool(_plugin_names())

    def is_config(self, config_path: str) -> bool:
        return _schema(config_path) is not None or _plugin(config_path) is not None

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        names: List[str] = []
        if config_path.strip("/") == PLUGIN_GROUP:
            for name in _plugin_names():
                self._list_add_result(names, f"{PLUGIN_GROUP}/{name}", name, results_filter)
        return names


def _plugin_config(name: str):
    """The plugin's Config with its name: loading the plugin imports it (and torch); one line when it cannot."""
    from attnbench.core.backends import plugin_backend
    from attnbench.core.errors import ConfigError

    try:
        return plugin_backend(name).Config(name=name)
    except ConfigError as e:
        raise ConfigCompositionException(str(e)) from None
    except Exception as e:  # noqa: BLE001 - a plugin's broken Config is the plugin's, said in one line
        raise ConfigCompositionException(f"backend={name!r}: the plugin's Config cannot be made: {e}") from None


class OptionSchemasSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider=SCHEME, path=f"{SCHEME}://")
