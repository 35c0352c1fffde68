"""Hydra's basic sweeper, composing each job's config once instead of twice.

Before launching a batch, the basic sweeper composes every job's config to catch a bad override before any job
runs; then the launcher composes each config again to run it. Composition is Hydra's largest per-job cost
(~0.06 s of this project's config on a 2-core machine, more than a trivial job's MLflow logging), so this
sweeper keeps the configs its validation composed and hands each one to the launcher in place of the second
composition. Validation is unchanged: a batch with one bad job still fails before any job starts. It is also
stricter: a key that no schema declares (`+shape.seqlen=8`) fails the batch too (attnbench.strict). Configs are
held only with Hydra's basic launcher (jobs in this process); launchers that compose in their workers (joblib,
submitit) compose again, as with the basic sweeper.

Plugins must live under the `hydra_plugins` namespace package for Hydra to find them; selected in
conf/config.yaml with `override hydra/sweeper: compose_once`.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules,
# where dataclasses look string annotations up.
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.errors import ConfigCompositionException
from hydra.plugins.config_source import ConfigSource
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig

from attnbench.progress import set_sweep_size
from attnbench.strict import renamed_option_problem, unknown_key_problem


SLURM_LAUNCHERS = ("slurm", "submitit_slurm")


class ComposedOnceConfigLoader(ConfigLoader):
    """A config loader that answers a launcher's load_sweep_config with the config validation composed.

    Each validated config is handed out once, then forgotten: the launcher writes the job's number into it,
    and a later request for the same overrides (a re-run, another sweep's job) gets a fresh composition.
    At most `hold_at_most` configs are held (~140 kB each); the launcher composes the rest itself.
    """

    def __init__(self, loader: ConfigLoader, hold_at_most: int = 1000) -> None:
        self.loader = loader
        self.hold_at_most = hold_at_most
        self._validated: Dict[tuple, DictConfig] = {}

    def validate(self, master_config: DictConfig, batch: Sequence[Sequence[str]], hold: bool = True) -> None:
        """Compose and check every job of the batch; keep the configs for the launcher if `hold`."""
        self._validated.clear()  # configs of an earlier batch that no launcher asked for
        for overrides in batch:
            config = self.loader.load_sweep_config(master_config, list(overrides))
            problem = unknown_key_problem(config) or renamed_option_problem(config, config.hydra.runtime.choices)
            if problem:
                raise ConfigCompositionException(f"{problem} ({' '.join(overrides)})")
            if hold and len(self._validated) < self.hold_at_most:
                self._validated[self._key(master_config, overrides)] = config

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        held = self._validated.pop(self._key(master_config, sweep_overrides), None)
        return held if held is not None else self.loader.load_sweep_config(master_config, sweep_overrides)

    @staticmethod
    def _key(master_config: DictConfig, overrides: Sequence[str]) -> tuple:
        return id(master_config), tuple(overrides)

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_validated": {}}  # a copy in another process has nothing to hand out

    # The rest of the interface is the wrapped loader's.
    def load_configuration(self, config_name: Optional[str], overrides: List[str], run_mode: RunMode,
                           from_shell: bool = True, validate_sweep_overrides: bool = True) -> DictConfig:
        return self.loader.load_configuration(config_name, overrides, run_mode, from_shell,
                                              validate_sweep_overrides)

    def get_search_path(self) -> ConfigSearchPath:
        return self.loader.get_search_path()

    def get_sources(self) -> List[ConfigSource]:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> List[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, group_name: str, results_filter: Optional[ObjectType] = ObjectType.CONFIG,
                          config_name: Optional[str] = None, overrides: Optional[List[str]] = None) -> List[str]:
        return self.loader.get_group_options(group_name, results_filter, config_name, overrides)

    def compute_defaults_list(self, config_name: Optional[str], overrides: List[str], run_mode: RunMode) -> Any:
        return self.loader.compute_defaults_list(config_name, overrides, run_mode)


class ComposeOnceSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        loader = ComposedOnceConfigLoader(hydra_context.config_loader)
        context = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.hydra_context is not None and self.config is not None and self.overrides is not None
        launcher = self.config.hydra.runtime.choices.get("hydra/launcher")
        if launcher in SLURM_LAUNCHERS and not shutil.which("sbatch"):
            raise ConfigCompositionException(
                f"hydra/launcher={launcher}: Slurm's sbatch is not on this machine's PATH; submit from a cluster's "
                "login node, or choose hydra/launcher=basic (one job after another), gpus or cpu_pool")
        workers = self.config.hydra.launcher.get("n_jobs")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigCompositionException(
                f"hydra.launcher.n_jobs={workers!r} is not valid: expected a whole number of worker processes >= 1 "
                f"(hydra/launcher={launcher})")
        # Every batch of the sweep is known by now: each job's progress line says "job i of N".
        set_sweep_size(self.config.hydra.sweep.dir, sum(len(jobs) for jobs in self.overrides))
        # Other launchers compose in their workers: holding configs for them would only cost memory.
        self.hydra_context.config_loader.validate(self.config, batch, hold=isinstance(self.launcher, BasicLauncher))


@dataclass
class ComposeOnceSweeperConf:
    _target_: str = "hydra_plugins.attnbench_sweeper.compose_once_sweeper.ComposeOnceSweeper"
    max_batch_size: Optional[int] = None  # as the basic sweeper: jobs validated (and held) per batch
    params: Optional[Dict[str, str]] = None  # as the basic sweeper: sweep parameters from config


ConfigStore.instance().store(group="hydra/sweeper", name="compose_once", node=ComposeOnceSweeperConf,
                             provider="attnbench")
