"""The task function's body: one job, in the worker process, under its time limit, its result saved first.

Whatever happens, the job's result is written to its Hydra job folder (`result.json`) and its status recorded
for the exit code before this returns to Hydra, whose callbacks then track it: a tracking failure cannot lose
it, and removing a callback cannot hide it. Never raises, except when the sweep itself is being stopped
(a signal); then the job is saved as `interrupted` first.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import multiprocessing.util
import os
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnbench.core.record import Record, Status
from attnbench.core.spec import JobSpec
from attnbench.harness import outcome, placement, resume
from attnbench.harness.case import case_key
from attnbench.harness.config import job_spec
from attnbench.harness.progress import JobLine
from attnbench.harness.strict import renamed_option_problem, unknown_key_problem
from attnbench.harness.worker import Died, Done, Failed, TimedOut, Worker, notify
from attnbench.store import results
from attnbench.store.tracking.store import job_params, project_root

log = logging.getLogger(__name__)

_worker = Worker(preload=("attnbench.core.isolation:warm_up_process",))
# After multiprocessing's own exit handler (registered when attnbench.harness.worker imported it), so it runs before it:
# that handler waits for every non-daemon child, and a worker still busy with a job would hold the exit.
atexit.register(_worker.close)
# In a launcher's worker process (joblib's loky), multiprocessing joins the children before any atexit handler
# runs: it would wait for ever on this idle worker. Its finalizers with a priority run before that join.
multiprocessing.util.Finalize(None, _worker.close, exitpriority=100)
# Hydra's flags that print something and run no job: no worker for them.
NO_JOB_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--version", "--info", "-i", "--shell-completion",
                "-sc"}


def start_worker(arguments: list[str]) -> None:
    """Start the job worker now, so that its start-up (importing torch) overlaps Hydra's and MLflow's.
    Not for a launcher that runs the jobs in processes of its own, which start their workers."""
    other_launcher = any(a.startswith("hydra/launcher=") and a != "hydra/launcher=basic" for a in arguments)
    if not NO_JOB_FLAGS.intersection(arguments) and not other_launcher:
        _worker.start()


def run(cfg: DictConfig) -> Record:
    hydra = HydraConfig.get()
    job_dir = Path(hydra.runtime.output_dir)
    job = str(hydra.job.num) if hydra.mode == RunMode.MULTIRUN else "run"
    tags = _choice_tags(hydra)
    place = placement.place(hydra)  # under `gpus`, waits for this process's GPU
    _worker.set_env(place.env)
    record = Record.begun(job, results.run_name(cfg), job_dir, job_params(cfg),
                          tags | place.tags | {"case": case_key(cfg)})
    line = JobLine.of(hydra, compiles=bool(cfg.compile))
    sweep_dir = Path(hydra.sweep.dir if hydra.mode == RunMode.MULTIRUN else hydra.run.dir)
    _bookkeeping(placement.job_started, sweep_dir, job)
    try:
        result = _result(cfg, hydra, line, place.threads, sweep_dir)
    except KeyboardInterrupt:  # the sweep is being stopped: this job is saved as interrupted, then it stops
        _worker.kill()
        signal = outcome.interrupted_by() or "SIGINT"
        _save(record, job_dir, _failure(Status.interrupted, f"stopped by {signal} while this job ran"))
        raise
    except Exception as e:  # noqa: BLE001 - a bug here must not take the sweep down (Hydra's sweeper would stop)
        log.exception("error: the job's harness failed")
        result = _failure(Status.error, f"{type(e).__name__}: {e}".splitlines()[0], trace=traceback.format_exc())
    result = result.with_tags(_bookkeeping(placement.job_ended, sweep_dir, job) or {})
    record = _save(record, job_dir, result)
    line.done(record.status.value)
    return record


def save_lost_job(cfg: DictConfig, reason: str, tags: dict[str, str], since_ms: int) -> Record:
    """A job whose launcher's worker process died while it ran, saved by the sweep's process as any job's result is
    (attnbench.harness.pool): `crashed` with the reason, unless the worker saved the job's result before it died."""
    hydra = HydraConfig.get()
    job_dir = Path(hydra.runtime.output_dir)
    try:
        saved = results.read(job_dir)
    except Exception:  # noqa: BLE001 - a file the dead worker left unreadable: the crash's record replaces it
        saved = None
    if saved is not None and saved.started_ms >= since_ms:  # this attempt's: the job ended, then its worker died
        outcome.record_status(saved.job, saved.status)
        return saved
    ended = _bookkeeping(placement.job_ended, Path(hydra.sweep.dir), str(hydra.job.num)) or {}  # its span closed
    record = Record.begun(str(hydra.job.num), results.run_name(cfg), job_dir, job_params(cfg),
                          _choice_tags(hydra) | tags | ended | {"case": case_key(cfg)})
    log.error("crashed: job %s: %s", hydra.job.num, reason)
    return _save(dataclasses.replace(record, started_ms=since_ms), job_dir, _failure(Status.crashed, reason))


def _choice_tags(hydra: DictConfig) -> dict[str, str]:
    return {f"choice.{group}": str(choice) for group, choice in hydra.runtime.choices.items()
            if not group.startswith("hydra/") and choice is not None}


def _bookkeeping(step, *args):
    """Counting the jobs side by side (attnbench.harness.placement): a failure costs that tag, never the job's
    result."""
    try:
        return step(*args)
    except Exception:  # noqa: BLE001
        log.warning("could not count the jobs that ran beside this one", exc_info=True)
        return None


def _save(record: Record, job_dir: Path, result: Record) -> Record:
    record = record.ended(result)
    results.write(job_dir, record)
    outcome.record_status(record.job, record.status)
    return record


def _result(cfg: DictConfig, hydra: DictConfig, line: JobLine, threads: int | None, sweep_dir: Path) -> Record:
    problem = (unknown_key_problem(cfg) or renamed_option_problem(cfg, hydra.runtime.choices)
               or _time_limit_problem(cfg))
    if problem:
        log.error("error: %s", problem)
        return _failure(Status.error, problem)
    done_in = resume.done_in(case_key(cfg)) if cfg.resume else None
    if done_in:
        log.info("skipped: this case already finished ok in run %s", done_in)
        return _failure(Status.skipped, f"this case already finished ok in run {done_in} (resume=true)")
    spec = job_spec(cfg)  # the one place the job's config becomes the typed JobSpec the job reads

    setup = {
        "logging": OmegaConf.to_container(hydra.job_logging, resolve=True),
        "verbose": OmegaConf.to_container(hydra.verbose, resolve=True)
        if OmegaConf.is_config(hydra.verbose) else hydra.verbose,
        "env": {str(k): str(v) for k, v in (hydra.job.env_set or {}).items()},
        "cwd": os.getcwd(),
        "repo": str(project_root(HydraConfig.instance().cfg)),
        "threads": threads,
        "sweep_dir": str(sweep_dir),
    }
    limit = cfg.timing.max_job_s
    with line.running():  # the job's phases come back as notes while it runs
        answer = _worker.run(job_in_worker, (spec, setup), limit, on_note=line.enter)
    if isinstance(answer, Done):
        return answer.value
    if isinstance(answer, TimedOut):
        reason = (f"still running after timing.max_job_s={limit:g} s: stopped (its worker process was killed "
                  "and a fresh one runs the next job)")
        log.error("timeout: %s", reason)
        return _failure(Status.timeout, reason, {"job_s": answer.seconds})
    if isinstance(answer, Died):
        reason = f"the process running this job died ({answer.how}): a crash in a kernel or the compiler"
        log.error("crashed: %s", reason)
        return _failure(Status.crashed, reason)
    assert isinstance(answer, Failed)
    log.error("error: the job's harness failed\n%s", answer.traceback)
    return _failure(Status.error, answer.traceback.strip().splitlines()[-1], trace=answer.traceback)


def _time_limit_problem(cfg: DictConfig) -> str | None:
    limit = cfg.timing.max_job_s
    if limit is not None and not limit > 0:
        return f"timing.max_job_s={limit!r} is not valid: expected a number of seconds > 0, or null for no limit"
    return None


def _failure(status: Status, reason: str, metrics: dict | None = None, trace: str | None = None) -> Record:
    return Record(status, reason, metrics=metrics or {}, traceback=trace)


def job_in_worker(spec: JobSpec, setup: dict) -> Record:
    """In the worker: log like a Hydra job (to the console and the job's log file), run it, note the machine."""
    import torch

    from attnbench.core import peak
    from attnbench.core.environment import environment
    from attnbench.core.job import run_job

    configure_log(OmegaConf.create(setup["logging"]), setup["verbose"])
    os.environ.update(setup["env"])
    os.chdir(setup["cwd"])
    if setup["threads"]:  # workers side by side share the cores (attnbench.harness.placement)
        torch.set_num_threads(setup["threads"])
    peak.SAVED_IN = Path(setup["sweep_dir"]) / placement.CEILINGS_DIR  # one measurement per GPU per sweep
    result = run_job(spec, on_phase=notify)  # each phase to the sweep process, which shows it
    device = torch.device(result.tags.get("device", "cpu"))
    return dataclasses.replace(result, tags=environment(device, Path(setup["repo"])) | placement.device_tags(device)
                               | result.tags)
