"""The `experiment` config group, read from the project's experiments/ folder through attnbench's safety check.

Hydra loads every config through a ConfigSource chosen by the scheme of a search-path entry. Experiment files
come through this one (scheme `attnbench-experiments://FOLDER`), which refuses a file that could run code or
redirect results (attnbench.harness.safety) before Hydra composes, instantiates or logs anything; an unparsable file is
one line with its file and line. The search-path plugin below adds the project's experiments/ folder (beside
conf/) to every attnbench command; `hydra.searchpath=[attnbench-experiments:///other/folder]` adds more.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules.
from pathlib import Path
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin

GROUP = "experiment"
SCHEME = "attnbench-experiments"
OPTION_NAMES = "attnbench-option-names"  # option_names.OptionNamesOnly's scheme (a plugin module: not imported)


class ExperimentsConfigSource(ConfigSource):
    """A folder of experiment files, seen by Hydra as the folder's `experiment/` group."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _file(self, config_path: str) -> Optional[Path]:
        group, _, name = config_path.partition("/")
        if group != GROUP or not name or "/" in name:
            return None
        return Path(self.path) / self._normalize_file_name(name)

    def load_config(self, config_path: str) -> ConfigResult:
        # Here, not at the plugin scan: it imports attnbench.
        from attnbench.harness.safety import MAX_BYTES, hydra_header, load_experiment, read_experiment

        file = self._file(config_path)
        if file is None or not file.is_file():
            raise ConfigLoadError(f"Config not found : {file or config_path}")
        with file.open("rb") as f:
            text = read_experiment(f.read(MAX_BYTES + 1), str(file))  # what is beyond the limit is never read
        # The header as Hydra reads every other file's, and as the check read it (attnbench.harness.safety).
        return ConfigResult(config=load_experiment(text, str(file)), path=f"{SCHEME}://{self.path}",
                            provider=self.provider, header=hydra_header(text))

    def available(self) -> bool:
        return Path(self.path).is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        file = self._file(config_path)
        return file is not None and file.is_file()

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        names: List[str] = []
        if config_path.strip("/") == "":
            self._list_add_result(names, GROUP, GROUP, results_filter)
        elif config_path.strip("/") == GROUP:
            for file in Path(self.path).glob("*.yaml"):
                self._list_add_result(names, f"{GROUP}/{file.name}", file.name, results_filter)
        return sorted(set(names))


class ExperimentsSearchPath(SearchPathPlugin):
    """Adds the experiments/ folder beside the application's config folder, where there is one; first of all, the
    source that refuses option values that are paths (option_names.py)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.prepend(provider="attnbench-option-names", path=f"{OPTION_NAMES}://")
        for element in search_path.get_path():
            # The application's folder: `file:///path/conf`, or a bare path (as hydra.main gives it).
            if element.provider == "main" and "://" not in element.path.removeprefix("file://"):
                folder = Path(element.path.removeprefix("file://")).resolve().parent / "experiments"
                if folder.is_dir():
                    search_path.append(provider="attnbench-experiments", path=f"{SCHEME}://{folder}")
