"""attnbench entry point: `python run.py` for one job, `python run.py -m ...` for a sweep (see README)."""

import gc
import sys

import hydra
from omegaconf import DictConfig

from attnbench.config import register_configs
from attnbench.job import run_job
from attnbench.tracking.callback import sweep_had_errors

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    # MLflow logging happens in the Hydra callback configured in conf/config.yaml, not here.
    return run_job(cfg)


if __name__ == "__main__":
    main()
    # Nothing is left to collect: skip the final garbage collection over torch's and MLflow's millions of
    # objects, which costs ~1 s per command on a 2-core machine (atexit handlers and flushing still happen).
    gc.freeze()
    # A job that failed unexpectedly does not stop the sweep, but the command must still say so.
    sys.exit(1 if sweep_had_errors() else 0)
