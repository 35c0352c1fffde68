"""Hydra callback that prints the end-of-sweep table from the jobs' saved results, whatever tracking did.

Reading the results from the sweep folder (not from this process's memory) also counts jobs that launchers ran
in other processes, for the exit code. The table is saved as `summary.txt` in the sweep folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from attnbench.analysis.render.console import render, results_table
from attnbench.core.record import Record
from attnbench.harness import outcome
from attnbench.harness.sweep import sweep_title
from attnbench.store import results
from attnbench.store.credentials import mask

SUMMARY_FILE = "summary.txt"


def summary_text(records: list[Record], title: str, show: bool) -> str:
    return render(results_table(records, title), show=show)


class SummaryCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records = results.read_all(sweep_dir)
        for record in records:
            outcome.record_status(record.job, record.status)
        if records:
            text = summary_text(records, sweep_title(config, sweep_dir), show=True)
            (sweep_dir / SUMMARY_FILE).write_text(mask(text))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        records = results.read_all(Path(config.hydra.runtime.output_dir))
        if records:
            summary_text(records, records[0].name, show=True)
