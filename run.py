"""attnbench entry point: `python run.py` for one job, `python run.py -m ...` for a sweep (see README)."""

import gc
import os
import sys

import hydra
from omegaconf import DictConfig

from attnbench.harness import outcome
from attnbench.harness.bad_option import group_choice_line, refusal_text
from attnbench.harness.config import register_configs
from attnbench.harness.runner import run, start_worker
from attnbench.store.credentials import hide_in_arguments, mask_log_records

register_configs()
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf")  # the config_path below


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    # The job runs in a worker process under its time limit (attnbench.harness.runner); its result is saved in its
    # job folder, then the callbacks in conf/config.yaml track it in MLflow and print the table.
    return run(cfg)


if __name__ == "__main__":
    outcome.handle_stop_signals()
    mask_log_records()
    sys.argv = hide_in_arguments(sys.argv)  # before Hydra reads them: no secret reaches a config or a file
    # Hydra raises what it would print and exit on (its documented HYDRA_FULL_ERROR), so that a refused command is
    # said here as attnbench says it: an option that does not exist, or a value its field does not take, in one line,
    # in a single run as in a sweep (attnbench.harness.bad_option).
    # Whoever set HYDRA_FULL_ERROR=1 gets the whole trace, as Hydra gives it.
    whole_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # A group's option given as other than one name (shape=[1,2]) is refused before Hydra, which would crash on it
    # or merge a list's options, composes.
    if not whole_trace and (refusal := group_choice_line(sys.argv[1:], CONFIG_DIR)):
        print(refusal, file=sys.stderr)
        sys.exit(1)
    start_worker(sys.argv)  # after the refusals that need no composing: a refused command starts no job worker
    try:
        main()
    except KeyboardInterrupt:
        signal = outcome.outcome.interrupted_by = outcome.interrupted_by() or "SIGINT"
        print(f"attnbench: stopped by {signal}: the running job and the sweep are recorded as interrupted "
              "(MLflow status KILLED); `resume=true` with the same command runs what is left", file=sys.stderr)
    except Exception as error:
        refusal = None if whole_trace else refusal_text(error)
        if refusal is None:
            raise
        print(refusal, file=sys.stderr)
        sys.exit(1)
    # Nothing is left to collect: skip the final garbage collection over torch's and MLflow's millions of
    # objects, which costs ~1 s per command on a 2-core machine (atexit handlers and flushing still happen).
    gc.freeze()
    # Whatever the callbacks did, the exit code says how the jobs and the tracking went (attnbench.harness.outcome).
    sys.exit(outcome.outcome.exit_code())
