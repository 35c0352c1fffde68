"""The local launchers' worker processes (hydra/launcher=cpu_pool, gpus): a worker that dies costs its own job alone.

Hydra's joblib launcher gives every job to one loky pool. When one of the pool's processes dies (the kernel's OOM
killer, `kill -9`), loky marks the whole pool broken and kills the other workers: the jobs they ran are lost, the
jobs not yet started never run, and the sweep ends with joblib's TerminatedWorkerError. Here each worker is a loky
pool of one process (loky's ProcessPoolExecutor, as joblib uses it), given its next job when it is done with the
last, so a worker's death names the one job it was running. That job is saved as `crashed` with the signal at once
(its result.json, by attnbench.harness.runner), a fresh worker takes the dead one's place, and the other jobs run
on. The job's MLflow run is recorded once the pool has stopped, by Hydra's run_job in this process with the job's
callbacks: a fresh worker's first connection closes the dead worker's runs as stale, and must not race that
(attnbench.store.recorder puts the result on the run the dead worker had opened).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import joblib
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from joblib.externals.loky import BrokenProcessPool, ProcessPoolExecutor
from joblib.externals.loky.process_executor import TerminatedWorkerError
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from attnbench.core.record import Record
from attnbench.harness.runner import save_lost_job

log = logging.getLogger(__name__)

# The thread pools joblib's loky backend limits in its workers (cores / workers each, unless set): the same here.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS")
# How loky names a dead worker's exit code in TerminatedWorkerError: "{SIGKILL(-9)}" (tests/test_upstream.py).
EXIT_CODES = re.compile(r"\{\w+\((-?\d+)\)")
JOB_DIR_KEY, JOB_SUBDIR_KEY = "hydra.sweep.dir", "hydra.sweep.subdir"


def execute_job(idx: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
                task_function: TaskFunction, singleton_state: dict[Any, Any]) -> JobReturn:
    """In a worker: one job, as Hydra's joblib launcher runs it (hydra_joblib_launcher's execute_job)."""
    setup_globals()
    Singleton.set_state(singleton_state)
    job_config = _job_config(hydra_context, config, idx, overrides)
    HydraConfig.instance().set_config(job_config)
    return run_job(hydra_context=hydra_context, config=job_config, task_function=task_function,
                   job_dir_key=JOB_DIR_KEY, job_subdir_key=JOB_SUBDIR_KEY)


def _job_config(hydra_context: HydraContext, config: DictConfig, idx: int, overrides: Sequence[str]) -> DictConfig:
    job_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(job_config):
        job_config.hydra.job.id = f"{job_config.hydra.job.name}_{idx}"
        job_config.hydra.job.num = idx
    return job_config


@dataclass
class LostJob:
    """A job whose worker died while it ran: its config (with its folder) and saved result, for its run."""

    index: int  # in the batch
    config: DictConfig
    record: Record


def worker_death(error: BrokenProcessPool) -> str:
    """How a pool's one worker ended, in words: `was killed by SIGKILL`, `exited with code 1`, `died`."""
    if not isinstance(error, TerminatedWorkerError):  # loky ended the pool itself (a result it could not read)
        return f"was stopped: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    found = EXIT_CODES.search(str(error))
    code = int(found.group(1)) if found else None
    if code is None:
        return "died"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Pool:
    """`workers` single-process loky pools, each running one job at a time; a dead one is replaced."""

    def __init__(self, hydra_context: HydraContext, config: DictConfig, task_function: TaskFunction,
                 workers: int, launcher: str) -> None:
        self.hydra_context, self.config, self.task_function = hydra_context, config, task_function
        self.workers, self.launcher = workers, launcher
        threads = str(max(1, joblib.cpu_count() // workers))
        self.env = {var: os.environ.get(var, threads) for var in THREAD_VARS}
        if "ENABLE_IPC" not in os.environ:  # as joblib: TBB's schedulers of the workers coordinate
            self.env["ENABLE_IPC"] = "1"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        state = Singleton.get_state()

        def submit(slot: int, index: int) -> Future:
            args = (initial_job_idx + index, job_overrides[index], self.hydra_context, self.config,
                    self.task_function, state)
            try:
                return pools[slot].submit(execute_job, *args)
            except BrokenProcessPool:  # its worker died between two jobs: this job had not started
                pools[slot] = self._replace(pools[slot])
                return pools[slot].submit(execute_job, *args)

        pools = [self._pool() for _ in range(min(self.workers, len(job_overrides)))]
        waiting = deque(range(len(job_overrides)))
        running: dict[Future, tuple[int, int, int]] = {}  # → (job's index in the batch, its pool, when given, ms)
        returns: list[JobReturn | None] = [None] * len(job_overrides)
        lost: list[LostJob] = []
        try:
            while waiting or running:
                busy = {slot for _, slot, _ in running.values()}
                for slot in range(len(pools)):
                    if slot not in busy and waiting:
                        index = waiting.popleft()
                        running[submit(slot, index)] = (index, slot, int(time.time() * 1000))
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    index, slot, given_ms = running.pop(future)
                    try:
                        returns[index] = future.result()
                    except BrokenProcessPool as error:  # its worker died: loky has ended that pool of one
                        pools[slot] = self._replace(pools[slot])
                        lost.append(self._save_lost(initial_job_idx + index, job_overrides[index], index,
                                                    worker_death(error), given_ms))
        except BaseException:  # a signal, or a job's error that ends the sweep (as under joblib): no worker is left
            for pool in pools:
                pool.shutdown(wait=True, kill_workers=True)
            raise
        for pool in pools:
            pool.shutdown(wait=True)
        for job in lost:  # no worker is left to close the dead ones' runs as stale meanwhile
            returns[job.index] = self._record(job)
        assert all(isinstance(ret, JobReturn) for ret in returns)
        return returns  # type: ignore[return-value]

    def _pool(self) -> ProcessPoolExecutor:
        # timeout=None: a worker lives as long as its pool (under `gpus` it holds its GPU that long).
        return ProcessPoolExecutor(max_workers=1, timeout=None, env=self.env)

    def _replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        broken.shutdown(wait=True)  # its worker is gone already; its queues and threads go now
        return self._pool()  # its worker starts with its first job

    def _save_lost(self, idx: int, overrides: Sequence[str], index: int, death: str, given_ms: int) -> LostJob:
        """The job's result, saved now: `crashed`, unless its worker saved one before it died."""
        oom = " (out of memory? the kernel's OOM killer sends SIGKILL)" if death.endswith(" SIGKILL") else ""
        reason = (f"the launcher's worker process running this job (hydra/launcher={self.launcher}) {death}{oom}; "
                  "a fresh worker took its place, and the sweep's other jobs ran on")
        config = _job_config(self.hydra_context, self.config, idx, overrides)
        outer = HydraConfig.instance().cfg
        try:
            _set_job_dir(config)  # as run_job sets it
            task_config = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
            tags = {"placement.launcher": self.launcher, "placement.workers": str(self.workers),
                    "placement.host": socket.gethostname()}
            record = save_lost_job(task_config, reason, tags, given_ms)
        finally:
            HydraConfig.instance().cfg = outer
        return LostJob(index, config, record)

    def _record(self, job: LostJob) -> JobReturn:
        """The saved result through Hydra's run_job here, so that the job's callbacks record its run."""
        saved: Callable[[DictConfig], Record] = lambda _: job.record  # noqa: E731
        return run_job(hydra_context=self.hydra_context, config=job.config, task_function=saved,
                       job_dir_key=JOB_DIR_KEY, job_subdir_key=JOB_SUBDIR_KEY, configure_logging=False)


def _set_job_dir(config: DictConfig) -> None:
    HydraConfig.instance().set_config(config)
    job_dir = Path(str(OmegaConf.select(config, JOB_DIR_KEY))) / str(OmegaConf.select(config, JOB_SUBDIR_KEY))
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(job_dir)
    HydraConfig.instance().set_config(config)
