"""hydra/launcher=slurm and slurm_cpu: Hydra's submitit launcher, with the sweep's process watching the array.

Hydra's submitit launcher submits the jobs as one Slurm job array and waits for every task's result file: a task
that Slurm cancelled or timed out has none, and the sweep ended in a traceback (or, for a task cancelled while
accounting was off, waited for ever). Here the sweep's process submits the same array through submitit, then
follows each task in Slurm itself (attnbench.harness.slurm: squeue while the task is queued, sacct once it is
gone) and decides what each job ended in:

- a task that completed: its job's own result, as the task saved and recorded it;
- a task Slurm ended (cancelled, out of time, out of memory, its node lost): the status of slurm.STATES, with the
  reason, saved in the job's folder and recorded on the job's run by this process (as attnbench.harness.pool does
  for a dead worker), while the other tasks go on; the command then says which jobs to run again, and how;
- Ctrl-C or SIGTERM of the sweep cancels the array (scancel) and waits for its tasks to end: no task runs on under
  a sweep that is over.

Before submitting, a request that the partition can never run is refused in one line. With resume=true, jobs
whose case is already `ok` are skipped here, not sent to Slurm (no task, no run). In the task, submitit's signals
are taken over: Slurm's SIGTERM (a cancel, or the time limit) stops the job the way it stops a local sweep, and
submitit's warning before the time limit (USR2, signal_delay_s) is only logged, since a job cannot be resumed
half-way: jobs are never requeued.
"""

from __future__ import annotations

import functools
import logging
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from attnbench.core.record import Record, Status
from attnbench.harness import outcome, resume, runner, slurm
from attnbench.harness.case import case_key
from attnbench.harness.progress import SIZE_FILE, JobLine
from attnbench.harness.sweep import launcher_overrides
from attnbench.store import results
from attnbench.store.tracking.store import job_params

log = logging.getLogger(__name__)

POLL_S = 1.0  # squeue (and, as tasks end, sacct) once a second: a few ms each for the controller
CANCEL_WAIT_S = 120  # after scancel, a task ends within the cluster's KillWait (30 s by default)
ACCOUNTING_WAIT_S = 60  # a task gone from the queue whose end sacct does not know yet: accounting lags
MAX_SIGNAL_DELAY_S = 120  # submitit's USR2 before the time limit: at most this, else a tenth of the limit
JOB_DIR_KEY, JOB_SUBDIR_KEY = "hydra.sweep.dir", "hydra.sweep.subdir"


class SlurmRefused(CompactHydraException):
    """Slurm cannot run the array as asked: one line (Hydra prints a CompactHydraException without a trace)."""


@dataclass
class Task:
    """One job of the sweep, as a task of the array."""

    num: int  # the job's number in the sweep (hydra.job.num)
    overrides: list[str]
    submitted: Any = None  # submitit's SlurmJob
    line: JobLine | None = None  # its progress line, from when it was seen running
    status: str = ""


class SlurmArray:
    """A sweep's batch of jobs on Slurm, for the launcher (hydra_plugins.attnbench_launchers.slurm_launcher), which
    is what each task runs: its config, Hydra context, task function and hydra.launcher's values."""

    def __init__(self, launcher: SlurmLauncher) -> None:
        assert launcher.config is not None and launcher.hydra_context is not None
        self.launcher, self.config, self.hydra_context = launcher, launcher.config, launcher.hydra_context
        self.task_function, self.params = launcher.task_function, launcher.params

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        launcher = str(self.config.hydra.runtime.choices.get("hydra/launcher") or "slurm")
        if shutil.which("sbatch") is None:
            _refuse(f"hydra/launcher={launcher}: Slurm's sbatch is not on this machine's PATH; submit from a "
                    "cluster's login node, or choose hydra/launcher=basic (one job after another), gpus or cpu_pool")
        problem = slurm.request_problem(slurm.Request.of(self.params), launcher)
        if problem:
            _refuse(problem)
        tasks = [Task(initial_job_idx + i, list(overrides)) for i, overrides in enumerate(job_overrides)]
        returns: dict[int, JobReturn] = {}
        if self.config.get("resume"):  # done cases are skipped here, as the basic launcher skips them: no task
            for task in tasks:
                config = self._job_config(task, str(task.num))
                if resume.done_in(case_key(config)):
                    returns[task.num] = self._run_here(config, self.task_function)
        to_run = [task for task in tasks if task.num not in returns]
        if to_run:
            returns |= self._run_array(to_run, launcher)
        return [returns[task.num] for task in tasks]

    def _run_array(self, tasks: list[Task], launcher: str) -> dict[int, JobReturn]:
        submitted_ms = int(time.time() * 1000)  # a result saved before this is an earlier command's
        array = self._submit(tasks)
        print(f"attnbench: {len(tasks)} job{'s' * (len(tasks) != 1)} submitted as Slurm job array {array} "
              f"(hydra/launcher={launcher}); follow it with `squeue -j {array}` or `sacct -j {array}`", flush=True)
        total = _sweep_size(Path(str(self.config.hydra.sweep.dir)))
        returns: dict[int, JobReturn] = {}
        waiting: dict[int, Task] = dict(enumerate(tasks))  # by array task index
        gone_since: dict[int, float] = {}
        try:
            while waiting:
                queue = slurm.queued(array)
                if queue is None:  # the controller did not answer: ask again
                    time.sleep(POLL_S)
                    continue
                for index, task in waiting.items():
                    state = queue.get(index)
                    if state is not None and state.state == "RUNNING" and task.line is None:
                        task.line = JobLine(task.num + 1, total, task.overrides, compiles=False)
                        task.line.enter(f"running on {state.node} (Slurm task {array}_{index})")
                gone = [index for index in waiting if index not in queue]
                accounted = slurm.accounted(array) if gone else {}
                for index in gone:
                    state = accounted.get(index)
                    since = gone_since.setdefault(index, time.monotonic())
                    if state is None or not state.ended:
                        if time.monotonic() - since < ACCOUNTING_WAIT_S:
                            continue
                        state = slurm.TaskState("UNKNOWN")
                    task = waiting.pop(index)
                    returns[task.num] = self._ended(task, f"{array}_{index}", state, launcher, submitted_ms)
                if waiting:
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            _cancel(array)
            raise
        _say_what_to_run_again(tasks, self.config)
        return returns

    def _submit(self, tasks: list[Task]) -> str:
        """The array, as Hydra's submitit launcher submits it; its Slurm job id."""
        import submitit  # here: Hydra's plugin scan imports this module's plugin for every command

        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                         slurm_max_num_timeout=params.pop("max_num_timeout", 0))
        if params.get("signal_delay_s") is None:  # a tenth of the limit: a 1-minute limit is not signalled at once
            params["signal_delay_s"] = min(MAX_SIGNAL_DELAY_S, max(1, int(params["timeout_min"]) * 6))
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{key if key in shared else f"slurm_{key}": value
                                      for key, value in params.items()})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        calls = [(task.overrides, JOB_DIR_KEY, task.num, f"job_id_for_{task.num}", Singleton.get_state())
                 for task in tasks]
        try:
            jobs = executor.map_array(self.launcher, *zip(*calls))
        except submitit.core.utils.FailedJobError as e:  # sbatch's own words, already on stderr
            _refuse(f"sbatch refused the job array: {_first_error(str(e))}")
        for task, job in zip(tasks, jobs):
            task.submitted = job
        return str(jobs[0].job_id).split("_")[0]

    def _ended(self, task: Task, slurm_id: str, state: slurm.TaskState, launcher: str,
               submitted_ms: int) -> JobReturn:
        """The job of a task that is over: its own result if it completed, else what Slurm ended it with."""
        returned = None
        if state.state == "COMPLETED" and task.submitted.paths.result_pickle.exists():
            try:
                returned = task.submitted.results()[0]
            except Exception as e:  # noqa: BLE001 - the task failed around its job: recorded as that job's crash
                state = replace(state, state="FAILED", exit_code=f"{state.exit_code}: {_first_error(str(e))}")
        if returned is None:
            config = self._job_config(task, slurm_id)
            save = functools.partial(_save_ended_by_slurm, _ending(state, slurm_id, self.params, task.line),
                                     {"placement.launcher": launcher, "placement.slurm_job": slurm_id,
                                      "placement.host": state.node}, submitted_ms)
            returned = self._run_here(config, save)
        record = returned.return_value if isinstance(returned.return_value, Record) else None
        task.status = record.status.value if record else "error"
        line = task.line or JobLine(task.num + 1, _sweep_size(Path(str(self.config.hydra.sweep.dir))),
                                    task.overrides, compiles=False)
        if task.line is None:  # never seen running: Slurm's count of its time
            line.started -= _seconds(state.elapsed)
        line.done(task.status if state.state == "COMPLETED" else f"{task.status} (Slurm: {state.state})")
        return returned

    def _job_config(self, task: Task, job_id: str) -> DictConfig:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(task.overrides))
        with open_dict(config):
            config.hydra.job.id = job_id
            config.hydra.job.num = task.num
        return config

    def _run_here(self, config: DictConfig, task_function) -> JobReturn:
        """A job's task function in this process, through Hydra's run_job, so that its callbacks record it."""
        outer = HydraConfig.instance().cfg
        try:
            return run_job(hydra_context=self.hydra_context, config=config, task_function=task_function,
                           job_dir_key=JOB_DIR_KEY, job_subdir_key=JOB_SUBDIR_KEY, configure_logging=False)
        finally:
            HydraConfig.instance().cfg = outer


# --- what Slurm ended ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ending:
    status: Status
    reason: str
    ran_s: float


def _ending(state: slurm.TaskState, slurm_id: str, params: dict, line: JobLine | None) -> Ending:
    status, why = slurm.STATES.get(state.state, (Status.crashed, f"Slurm ended its task in state {state.state}"))
    if state.state == "COMPLETED":  # and yet no result file from submitit (what _ended looked for)
        why = "its Slurm task completed without a result"
    ran = _seconds(state.elapsed)
    when = "while this job ran" if ran or line is not None else "before it started"
    reason = f"{why} {when}"
    if state.state == "TIMEOUT":
        reason += (f": hydra.launcher.timeout_min={params.get('timeout_min')} (sbatch --time, {state.time_limit}); "
                   f"it ran {state.elapsed}")
    elif state.state == "OUT_OF_MEMORY":
        reason += f": hydra.launcher.mem_gb={params.get('mem_gb')}"
    elif state.state in ("FAILED", "UNKNOWN") and state.exit_code:
        reason += f" (exit code {state.exit_code})"
    elif state.state == "UNKNOWN":
        reason = (f"its Slurm task left the queue and Slurm's accounting (sacct) has no end for it after "
                  f"{ACCOUNTING_WAIT_S} s")
    return Ending(status, f"{reason} (Slurm task {slurm_id}{' on ' + state.node if state.node else ''})", ran)


def _save_ended_by_slurm(ending: Ending, tags: dict[str, str], submitted_ms: int, config: DictConfig) -> Record:
    """In this process, as the job's task function: its result, saved in its folder. What the task saved itself
    stands when it got to the end of the job (Slurm stopped the task after it); `interrupted` is what the task saves
    when Slurm's SIGTERM reaches it, and Slurm's state says more."""
    hydra = HydraConfig.get()
    job_dir = Path(hydra.runtime.output_dir)
    try:
        saved = results.read(job_dir)
    except Exception:  # noqa: BLE001 - a file the task left unreadable: this result replaces it
        saved = None
    fresh = saved is not None and saved.started_ms >= submitted_ms
    if fresh and saved.status not in (Status.interrupted, Status.running):
        outcome.record_status(saved.job, saved.status)
        return saved
    choices = {f"choice.{group}": str(choice) for group, choice in hydra.runtime.choices.items()
               if not group.startswith("hydra/") and choice is not None}
    record = Record.begun(str(hydra.job.num), results.run_name(config), job_dir, job_params(config),
                         choices | tags | {"case": case_key(config)})
    started = saved.started_ms if fresh else int(time.time() * 1000 - ending.ran_s * 1000)
    record = replace(record, started_ms=started).ended(Record(ending.status, ending.reason))
    log.error("%s: job %s: %s", ending.status.value, hydra.job.num, ending.reason)
    results.write(job_dir, record)
    outcome.record_status(record.job, record.status)
    return record


def _say_what_to_run_again(tasks: list[Task], config: DictConfig) -> None:
    """One line when Slurm ended jobs before they finished: which, and the command that runs them again."""
    cut = [task for task in tasks if task.status in (Status.interrupted, Status.timeout, Status.oom, Status.crashed)]
    if not cut:
        return
    overrides = [o for o in config.hydra.overrides.task if not o.startswith("resume=")]
    command = shlex.join(["python", "run.py", "-m", *launcher_overrides(config), *overrides, "resume=true"])
    jobs = ", ".join(f"job {task.num + 1} {task.status}" for task in cut)
    print(f"attnbench: Slurm ended {len(cut)} of {len(tasks)} jobs before they finished ({jobs}); "
          f"`{command}` runs them again and skips the jobs that are ok", file=sys.stderr, flush=True)


def _cancel(array: str) -> None:
    """The sweep is stopped: its array is cancelled, and its tasks given time to end (their runs are then closed
    by the tasks themselves or, for a task Slurm had to kill, by this process at its exit)."""
    print(f"attnbench: stopped by {outcome.interrupted_by() or 'SIGINT'}: cancelling Slurm job array {array} "
          f"(scancel {array}) and waiting for its tasks to end", file=sys.stderr, flush=True)
    slurm.cancel(array)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline and slurm.queued(array) != {}:
        time.sleep(POLL_S)


def take_the_signals() -> None:
    """In a Slurm task, before its job: the job worker, started now, ignores Slurm's signals (its process group
    gets them all), so that this process decides: SIGTERM stops the job as Ctrl-C stops a local one (saved and
    recorded as interrupted; the sweep then records what Slurm says it was), USR2 is only logged."""
    for name in ("SIGTERM", "SIGUSR2"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    runner.start_worker([])
    outcome.handle_stop_signals()
    signal.signal(signal.SIGUSR2, _near_the_limit)


def _near_the_limit(signum: int, frame) -> None:
    log.warning("Slurm's time limit is near (%s): the job goes on until Slurm stops it", signal.Signals(signum).name)


def _refuse(line: str) -> None:
    outcome.record_stop_reason(line)  # the sweep's parent run ends FAILED with it
    raise SlurmRefused(line)


def _first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[0] if lines else "no message")


def _seconds(elapsed: str) -> float:
    """sacct's [days-]hours:minutes:seconds in seconds."""
    days, _, clock = elapsed.rpartition("-")
    parts = [int(p) for p in clock.split(":") if p.isdigit()]
    return (int(days or 0) * 86400 + sum(p * 60 ** i for i, p in enumerate(reversed(parts)))) if parts else 0.0


def _sweep_size(sweep_dir: Path) -> int | None:
    try:
        return int((sweep_dir / SIZE_FILE).read_text())
    except (OSError, ValueError):
        return None
