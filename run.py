"""attnbench entry point: `python run.py` for one job, `python run.py -m ...` for a sweep (see README)."""

import gc
import sys

import hydra
from omegaconf import DictConfig

from attnbench.harness import outcome
from attnbench.harness.config import register_configs
from attnbench.harness.runner import run, start_worker
from attnbench.store.credentials import hide_in_arguments, mask_log_records

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    # The job runs in a worker process under its time limit (attnbench.harness.runner); its result is saved in its
    # job folder, then the callbacks in conf/config.yaml track it in MLflow and print the table.
    return run(cfg)


if __name__ == "__main__":
    outcome.handle_stop_signals()
    mask_log_records()
    sys.argv = hide_in_arguments(sys.argv)  # before Hydra reads them: no secret reaches a config or a file
    start_worker(sys.argv)
    try:
        main()
    except KeyboardInterrupt:
        signal = outcome.outcome.interrupted_by = outcome.interrupted_by() or "SIGINT"
        print(f"attnbench: stopped by {signal}: the running job and the sweep are recorded as interrupted "
              "(MLflow status KILLED); `resume=true` with the same command runs what is left", file=sys.stderr)
    # Nothing is left to collect: skip the final garbage collection over torch's and MLflow's millions of
    # objects, which costs ~1 s per command on a 2-core machine (atexit handlers and flushing still happen).
    gc.freeze()
    # Whatever the callbacks did, the exit code says how the jobs and the tracking went (attnbench.harness.outcome).
    sys.exit(outcome.outcome.exit_code())
