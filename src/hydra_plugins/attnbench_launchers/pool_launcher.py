"""The launcher of hydra/launcher=cpu_pool and gpus: Hydra's joblib launcher's worker processes, where a worker that
dies costs its own job alone; Hydra's public plugin API only.

Hydra's joblib launcher runs every job in one loky pool, which a single dead worker (the OOM killer, `kill -9`)
breaks: loky kills the other workers and the sweep ends, its remaining jobs never run. This launcher runs each
worker as a pool of its own (attnbench.harness.pool): the dead worker's job is recorded as `crashed` with the
signal, a fresh worker takes its place, the other jobs run, and the sweep's exit code is 1.

The work is done in attnbench.harness.pool, not here: Hydra's plugin scan imports this module twice, and what a
worker is sent must be pickled from a module imported once. Selected by conf/hydra/launcher/cpu_pool.yaml and
gpus.yaml (`defaults: [attnbench_pool]`).
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules,
# where dataclasses look string annotations up.
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class PoolLauncher(Launcher):
    def __init__(self, n_jobs: int = 2) -> None:
        self.n_jobs = n_jobs
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs on %d worker processes, sweep output dir: %s", len(job_overrides), self.n_jobs,
                 sweep_dir)
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        from attnbench.harness.pool import Pool  # here: Hydra's plugin scan imports this module for every command

        launcher = str(self.config.hydra.runtime.choices.get("hydra/launcher") or "attnbench_pool")
        pool = Pool(self.hydra_context, self.config, self.task_function, self.n_jobs, launcher)
        return pool.launch(job_overrides, initial_job_idx)


@dataclass
class PoolLauncherConf:
    _target_: str = "hydra_plugins.attnbench_launchers.pool_launcher.PoolLauncher"
    n_jobs: int = 2  # worker processes, each running one job at a time


ConfigStore.instance().store(group="hydra/launcher", name="attnbench_pool", node=PoolLauncherConf,
                             provider="attnbench")
