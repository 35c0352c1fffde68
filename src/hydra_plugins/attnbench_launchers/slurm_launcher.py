"""The launcher of hydra/launcher=slurm and slurm_cpu: Hydra's submitit launcher, with the sweep's process watching
the array in Slurm; Hydra's public plugin API and submitit's public executor only.

The work is done in attnbench.harness.slurm_array (why, and what it does, is said there). This class is what every
Slurm task runs: submitit pickles it with the job. Selected by conf/hydra/launcher/slurm.yaml and slurm_cpu.yaml
(`defaults: [attnbench_slurm]`); its options are Hydra's submitit launcher's.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules,
# where dataclasses look string annotations up.
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class SlurmArrayLauncher(SlurmLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """In a Slurm task: its one job, with Slurm's signals taken over first."""
        from attnbench.harness.slurm_array import take_the_signals  # here: the plugin scan imports this module

        take_the_signals()
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from attnbench.harness.slurm_array import SlurmArray

        return SlurmArray(self).launch(job_overrides, initial_job_idx)


@dataclass
class SlurmArrayConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.attnbench_launchers.slurm_launcher.SlurmArrayLauncher"
    # submitit's USR2 this many seconds before the time limit (only logged: a job is never requeued); null: a
    # tenth of timeout_min, at most 120 s (submitit's 120 s would signal a 1- or 2-minute job as it starts)
    signal_delay_s: Optional[int] = None  # type: ignore[assignment]


ConfigStore.instance().store(group="hydra/launcher", name="attnbench_slurm", node=SlurmArrayConf, provider="attnbench")
