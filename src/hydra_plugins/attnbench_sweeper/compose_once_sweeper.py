"""Hydra's basic sweeper, composing each job's config once instead of twice; Hydra's public plugin API only.

Before launching a batch, the basic sweeper composes every job's config to catch a bad override before any job
runs (`Sweeper.validate_batch_is_legal`); then the launcher composes each config again to run it. Composition
is Hydra's largest per-job cost (~0.07 s of this project's config on a 2-core machine, half a trivial job's
harness cost), so this sweeper keeps the configs validation composed and hands each one to the launcher in
place of the second composition: in memory with Hydra's basic launcher (jobs in this process), through files in
the sweep folder for launchers whose workers compose (joblib, submitit; a worker that finds no file composes).

It is Hydra's basic sweeper itself (`hydra/sweeper=basic`, instantiated by its registered config), given a
config loader that wraps Hydra's: the loader composes through Hydra's `load_sweep_config` and knows, from a
wrapper around the launcher, whether a request is validation's or the launcher's. Validation is stricter than
Hydra's: a key that no schema declares (`+shape.seqlen=8`) fails the batch too (attnbench.harness.strict), and so
does a job whose `hydra` node differs from the command line's beyond its sweep parameters
(attnbench.harness.hydra_settings: a shared file that got a setting of Hydra's past the file check).

Plugins must live under the `hydra_plugins` namespace package for Hydra to find them; selected in
conf/config.yaml with `override hydra/sweeper: compose_once`.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules,
# where dataclasses look string annotations up.
import contextlib
import functools
import hashlib
import math
import pickle
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, RangeSweep
from hydra.core.utils import JobReturn
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.plugins.config_source import ConfigSource
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode, TaskFunction
from hydra.utils import get_class
from omegaconf import DictConfig

from attnbench.harness.bad_option import missing_option_line
from attnbench.harness.disk import DiskFull, check_space, free_bytes, is_disk_full, message
from attnbench.harness.hydra_settings import hydra_settings_problem
from attnbench.harness.jobs_checked import jobs_checked
from attnbench.harness.outcome import raise_if_stopped, record_stop_reason
from attnbench.harness.progress import set_sweep_size
from attnbench.harness.shared_compositions import SharedCompositions
from attnbench.harness.sizes import KindCheck, SizePlan, size_plan
from attnbench.harness.strict import renamed_option_problem, unknown_key_problem

SLURM_LAUNCHERS = ("slurm", "submitit_slurm")
IN_THIS_PROCESS = ("basic",)  # launchers that run the jobs in the sweep's process: configs stay in memory
MAX_JOBS = 10_000  # hydra.sweeper.max_jobs: a sweep's jobs are all listed and checked before the first runs
SAY_CHECKING_FROM = 500  # jobs: from here, checking them all takes seconds, so the command says what it does
HANDOFF_DIR = ".configs"  # in the sweep folder: validated configs for worker processes, each file taken once


class ComposedOnceConfigLoader(ConfigLoader):
    """Hydra's config loader, answering a launcher's load_sweep_config with the config validation composed.

    Outside `launching()`, a request is validation's: composed by Hydra, checked, and kept for the launcher (in
    memory, or given `handoff_dir`, in a file for a worker process). Inside, each kept config is handed out once,
    then forgotten: the launcher writes the job's number into it, and a later request for the same overrides (a
    re-run, another sweep's job) gets a fresh composition. At most `hold_at_most` configs are held in memory
    (~140 kB each); the launcher composes the rest itself. Files are pickles (~16 kB, 0.6 ms to read back).
    """

    def __init__(self, loader: ConfigLoader, handoff_dir: Optional[Path] = None, hold_at_most: int = 1000,
                 sweep_dir: Optional[Path] = None, size: Optional[SizePlan] = None) -> None:
        self.loader, self.sweep_dir, self.size = loader, sweep_dir, size
        self.kinds: Optional[KindCheck] = None  # the command line changes the shape: does it change the problem?
        self.shared = SharedCompositions(loader.load_sweep_config, functools.partial(loader.list_groups, ""))
        self.handoff_dir = handoff_dir
        self.hold_at_most = hold_at_most
        self.is_launching = False
        self._validated: Dict[tuple, DictConfig] = {}
        self.scope = uuid.uuid4().hex  # one sweep's: its files are not another sweep's

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        raise_if_stopped()  # a stop whose exception was lost still stops the check, or the next job
        if self.is_launching:  # the launcher is about to run this job: is there room for what it writes?
            if self.sweep_dir is not None:
                check_space(self.sweep_dir)
            held = self._validated.pop(self._key(master_config, sweep_overrides), None) or self._take(sweep_overrides)
            return held if held is not None else self._compose(master_config, sweep_overrides)
        config = self._compose(master_config, sweep_overrides)
        problem = (unknown_key_problem(config) or renamed_option_problem(config, config.hydra.runtime.choices)
                   or hydra_settings_problem(config, self.shared.command_line(master_config, sweep_overrides)))
        if problem:
            raise ConfigCompositionException(f"{problem} ({' '.join(sweep_overrides)})")
        if self.kinds is not None:
            self.kinds.job(config, lambda overrides: self.shared.load(master_config, overrides), sweep_overrides)
        if self.handoff_dir is not None:
            self._hand_off(config, sweep_overrides)
        elif len(self._validated) < self.hold_at_most:
            self._validated[self._key(master_config, sweep_overrides)] = config
        return config

    def _compose(self, master_config: DictConfig, overrides: List[str]) -> DictConfig:
        """The job's config; at a size that sets a field of an option (`mask.window`), only where the job's
        option has that field: composed once without such fields to see (a value override more costs ~5 ms)."""
        if self.size is None or not self.size.option_fields.intersection(overrides):
            return self.shared.load(master_config, overrides)
        others = [o for o in overrides if o not in self.size.option_fields]
        without = self.shared.load(master_config, others)
        kept = self.size.job_overrides(overrides, without)
        return without if kept == others else self.shared.load(master_config, kept)

    @contextlib.contextmanager
    def launching(self) -> Iterator[None]:
        """While a launcher runs a batch: its requests take the validated configs; after, what is left goes."""
        if self.kinds is not None:  # every job is checked: what the command line's shape changed, in one line
            self.kinds.say()
        self.is_launching = True
        try:
            yield
        finally:
            self.is_launching = False
            self._validated.clear()

    def _hand_off(self, config: DictConfig, overrides: Sequence[str]) -> None:
        try:
            data = pickle.dumps(config)
        except (pickle.PicklingError, TypeError, AttributeError):  # a class pickle cannot name: the worker composes
            return
        assert self.handoff_dir is not None
        self.handoff_dir.mkdir(parents=True, exist_ok=True)
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


class _LaunchingComposedOnce(Launcher):
    """The configured launcher, with the loader told that its requests are the launcher's."""

    def __init__(self, launcher: Launcher, loader: ComposedOnceConfigLoader) -> None:
        self.launcher, self.loader = launcher, loader

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        jobs_checked()  # the batch is valid: now what only a sweep that runs may leave (its MLflow parent run)
        with self.loader.launching():
            return self.launcher.launch(job_overrides, initial_job_idx)


class ComposeOnceSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 max_jobs: int = MAX_JOBS) -> None:
        self.max_batch_size, self.params, self.max_jobs = max_batch_size, params or {}, max_jobs
        self.basic: Optional[Sweeper] = None
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        in_this_process = config.hydra.runtime.choices.get("hydra/launcher") in IN_THIS_PROCESS
        self.handoff_dir = None if in_this_process else Path(config.hydra.sweep.dir) / HANDOFF_DIR
        self.sweep_dir = Path(config.hydra.sweep.dir)
        # size=cpu: the experiment's own values replace its sweep's (attnbench.harness.sizes); a group option
        # cannot, since the sweep's values reach the sweeper, not the config.
        size = size_plan(config)
        if size is not None:
            self.params = size.params(self.params)
        loader = self.loader = ComposedOnceConfigLoader(hydra_context.config_loader, handoff_dir=self.handoff_dir,
                                                        sweep_dir=self.sweep_dir, size=size)
        self.hydra_context = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)
        basic = ConfigStore.instance().load("hydra/sweeper/basic.yaml").node  # Hydra's `hydra/sweeper=basic`
        self.basic = get_class(basic._target_)(max_batch_size=self.max_batch_size, params=self.params)
        self.basic.setup(hydra_context=self.hydra_context, task_function=task_function, config=config)
        self.launcher = self.basic.launcher = _LaunchingComposedOnce(self.basic.launcher, loader)

    def sweep(self, arguments: List[str]) -> Any:
        assert self.basic is not None and self.config is not None
        _check_launcher(self.config)
        jobs = _jobs(self.params, arguments, self.hydra_context.config_loader)
        self.loader.kinds = KindCheck.of(self.config, self.params, arguments)
        if jobs > self.max_jobs:  # before the basic sweeper lists them all
            raise ConfigCompositionException(
                f"this sweep has {jobs:,} jobs, more than hydra.sweeper.max_jobs={self.max_jobs:,}: split it, or "
                f"allow it on the command line with hydra.sweeper.max_jobs={jobs}")
        if jobs >= SAY_CHECKING_FROM:
            print(f"attnbench: checking the configs of {jobs:,} jobs before the first one runs", file=sys.stderr)
        # Each job's progress line says "job i of N".
        set_sweep_size(self.config.hydra.sweep.dir, jobs)
        try:
            return self.basic.sweep(arguments)
        except MissingConfigException as e:  # an OSError too: before the disk's clause
            raise _in_one_line(e) from None
        except (DiskFull, OSError) as e:  # the sweep folder's disk: one line, and the parent's reason
            if not isinstance(e, DiskFull) and not is_disk_full(e):
                raise
            full = e if isinstance(e, DiskFull) else DiskFull(message(self.sweep_dir, free_bytes(self.sweep_dir)))
            record_stop_reason(str(full))
            raise full from None
        finally:  # every job has asked for its config by now: what is left was not run (a stopped sweep)
            if self.handoff_dir is not None:
                shutil.rmtree(self.handoff_dir, ignore_errors=True)


def _in_one_line(error: MissingConfigException) -> Exception:
    """A swept option that does not exist (`backend=math,flsh`): one line naming the group, the value and the
    allowed values (attnbench.harness.bad_option), not Hydra's twenty; another missing config as Hydra says it."""
    line = missing_option_line(error)
    return error if line is None else ConfigCompositionException(line)


def _check_launcher(config: DictConfig) -> None:
    launcher = config.hydra.runtime.choices.get("hydra/launcher")
    if launcher in SLURM_LAUNCHERS and not shutil.which("sbatch"):
        raise ConfigCompositionException(
            f"hydra/launcher={launcher}: Slurm's sbatch is not on this machine's PATH; submit from a cluster's "
            "login node, or choose hydra/launcher=basic (one job after another), gpus or cpu_pool")
    workers = config.hydra.launcher.get("n_jobs")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigCompositionException(
            f"hydra.launcher.n_jobs={workers!r} is not valid: expected a whole number of worker processes >= 1 "
            f"(hydra/launcher={launcher})")


def _jobs(params: Dict[str, str], arguments: List[str], loader: ConfigLoader) -> int:
    """How many jobs the basic sweeper makes: the product of each key's values (a key's last override wins),
    counted without listing them (`seed=range(10**9)` is counted, not listed)."""
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(
        [*(f"{k}={v}" for k, v in params.items()), *arguments])
    return math.prod({o.get_key_element(): _values(o) for o in overrides}.values())


def _values(override: Override) -> int:
    if not override.is_discrete_sweep():
        return 1
    swept = override.value()
    if isinstance(swept, RangeSweep) and not swept.shuffle:
        return max(0, math.ceil((swept.stop - swept.start) / swept.step))
    return sum(1 for _ in override.sweep_string_iterator())  # choices, and glob over the group's options


@dataclass
class ComposeOnceSweeperConf:
    _target_: str = "hydra_plugins.attnbench_sweeper.compose_once_sweeper.ComposeOnceSweeper"
    max_batch_size: Optional[int] = None  # as the basic sweeper: jobs validated (and held) per batch
    params: Optional[Dict[str, str]] = None  # as the basic sweeper: sweep parameters from config
    max_jobs: int = MAX_JOBS  # a larger sweep is refused with its count before any job is composed


ConfigStore.instance().store(group="hydra/sweeper", name="compose_once", node=ComposeOnceSweeperConf,
                             provider="attnbench")
