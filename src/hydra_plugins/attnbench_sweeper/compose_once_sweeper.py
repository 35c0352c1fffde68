"""Hydra's basic sweeper, composing each job's config once instead of twice, and cheaply.

Before launching a batch, the basic sweeper composes every job's config to catch a bad override before any job
runs; then the launcher composes each config again to run it. Composition is Hydra's largest per-job cost
(~0.05 s of this project's config on a 2-core machine, more than a trivial job's MLflow logging), so this
sweeper keeps the configs its validation composed and hands each one to the launcher in place of the second
composition: in memory with Hydra's basic launcher (jobs in this process), through files in the sweep folder
for launchers whose workers compose (joblib, submitit; a worker that finds no file composes). Jobs that differ
only in values, not in config-group options, are made from one composition (templates.py). Validation is
unchanged: a batch with one bad job still fails before any job starts. It is also stricter: a key that no schema
declares (`+shape.seqlen=8`) fails the batch too (attnbench.harness.strict).

Plugins must live under the `hydra_plugins` namespace package for Hydra to find them; selected in
conf/config.yaml with `override hydra/sweeper: compose_once`.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules,
# where dataclasses look string annotations up.
import hashlib
import pickle
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
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

from attnbench.harness.progress import set_sweep_size
from attnbench.harness.strict import renamed_option_problem, unknown_key_problem
from hydra_plugins.attnbench_sweeper import templates

SLURM_LAUNCHERS = ("slurm", "submitit_slurm")
HANDOFF_DIR = ".configs"  # in the sweep folder: validated configs for worker processes, each file taken once


class ComposedOnceConfigLoader(ConfigLoader):
    """A config loader that answers a launcher's load_sweep_config with the config validation composed.

    Each validated config is handed out once, then forgotten: the launcher writes the job's number into it,
    and a later request for the same overrides (a re-run, another sweep's job) gets a fresh composition.
    At most `hold_at_most` configs are held in memory (~140 kB each); the launcher composes the rest itself.
    Files for workers are pickles (~16 kB, 0.6 ms to read back).
    """

    def __init__(self, loader: ConfigLoader, hold_at_most: int = 1000) -> None:
        self.loader = loader
        self.hold_at_most = hold_at_most
        self._validated: Dict[tuple, DictConfig] = {}
        self.scope = uuid.uuid4().hex  # one sweep's: its workers' copies share templates, other sweeps don't
        self.handoff_dir: Optional[Path] = None  # where validated configs wait for worker processes

    def validate(self, master_config: DictConfig, batch: Sequence[Sequence[str]],
                 handoff_dir: Optional[Path] = None) -> None:
        """Compose and check every job of the batch; keep the configs in memory for this process's launcher, or,
        given `handoff_dir`, save them there for worker processes."""
        self._validated.clear()  # configs of an earlier batch that no launcher asked for
        self.handoff_dir = handoff_dir
        if handoff_dir is not None:
            handoff_dir.mkdir(parents=True, exist_ok=True)
        for overrides in batch:
            config = templates.compose(self.loader, master_config, overrides, self.scope)
            problem = unknown_key_problem(config) or renamed_option_problem(config, config.hydra.runtime.choices)
            if problem:
                raise ConfigCompositionException(f"{problem} ({' '.join(overrides)})")
            if handoff_dir is not None:
                self._hand_off(config, overrides)
            elif len(self._validated) < self.hold_at_most:
                self._validated[self._key(master_config, overrides)] = config

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        held = self._validated.pop(self._key(master_config, sweep_overrides), None) or self._take(sweep_overrides)
        return held if held is not None else templates.compose(self.loader, master_config, sweep_overrides,
                                                                self.scope)

    def _hand_off(self, config: DictConfig, overrides: Sequence[str]) -> None:
        try:
            data = pickle.dumps(config)
        except (pickle.PicklingError, TypeError, AttributeError):  # a class pickle cannot name: the worker composes
            return
        self._handoff_file(overrides).write_bytes(data)

    def _take(self, overrides: Sequence[str]) -> Optional[DictConfig]:
        if self.handoff_dir is None:
            return None
        file = self._handoff_file(overrides)
        try:
            data = file.read_bytes()
            file.unlink()
        except FileNotFoundError:  # taken already (a job run again), or not on this machine's file system
            return None
        return pickle.loads(data)

    @staticmethod
    def _key(master_config: DictConfig, overrides: Sequence[str]) -> tuple:
        return id(master_config), tuple(overrides)

    def _handoff_file(self, overrides: Sequence[str]) -> Path:
        assert self.handoff_dir is not None
        digest = hashlib.sha256("\0".join([self.scope, *overrides]).encode()).hexdigest()[:32]
        return self.handoff_dir / f"{digest}.pickle"

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
        in_this_process = isinstance(self.launcher, BasicLauncher)
        handoff = None if in_this_process else Path(self.config.hydra.sweep.dir) / HANDOFF_DIR
        self.hydra_context.config_loader.validate(self.config, batch, handoff_dir=handoff)

    def sweep(self, arguments: List[str]) -> Any:
        try:
            return super().sweep(arguments)
        finally:  # every job has asked for its config by now: what is left was not run (a stopped sweep)
            shutil.rmtree(Path(self.config.hydra.sweep.dir) / HANDOFF_DIR, ignore_errors=True)


@dataclass
class ComposeOnceSweeperConf:
    _target_: str = "hydra_plugins.attnbench_sweeper.compose_once_sweeper.ComposeOnceSweeper"
    max_batch_size: Optional[int] = None  # as the basic sweeper: jobs validated (and held) per batch
    params: Optional[Dict[str, str]] = None  # as the basic sweeper: sweep parameters from config


ConfigStore.instance().store(group="hydra/sweeper", name="compose_once", node=ComposeOnceSweeperConf,
                             provider="attnbench")
