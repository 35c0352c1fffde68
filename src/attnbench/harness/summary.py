"""Hydra callback that prints the end-of-sweep table from the jobs' saved results, whatever tracking did.

Reading the results from the sweep folder (not from this process's memory) also counts jobs that launchers ran
in other processes, for the exit code; a result file that cannot be read is said in one line and counted as an
error. The table is saved as `summary.txt` in the sweep folder.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from attnbench.analysis.render.console import render, results_table
from attnbench.core.record import Record, Status
from attnbench.harness import outcome
from attnbench.harness.sweep import sweep_title
from attnbench.store import results
from attnbench.store.credentials import mask

SUMMARY_FILE = "summary.txt"


def summary_text(records: list[Record], title: str, show: bool,
                 damaged: Sequence[results.DamagedResult] = ()) -> str:
    """The table (printed when `show`), then one line per result file that could not be read (on stderr)."""
    lines = [f"attnbench: cannot read a job's result, counted as an error: {problem}" for problem in damaged]
    for line in lines if show else ():
        print(mask(line), file=sys.stderr)
    return render(results_table(records, title), show=show) + "".join(f"{line}\n" for line in lines)


def count(found: results.Results) -> None:
    """What the exit code is made of: every job's status, and a job whose result cannot be read as an error
    (whatever ran, it is not known: the command must not say that all went well)."""
    for record in found.records:
        outcome.record_status(record.job, record.status)
    for problem in found.damaged:
        outcome.record_status(f"{problem.path.parent.name} (unreadable)", Status.error.value)


class SummaryCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        found = results.read_folder(sweep_dir)
        count(found)
        if found.records or found.damaged:
            text = summary_text(found.records, sweep_title(config, sweep_dir), show=True, damaged=found.damaged)
            (sweep_dir / SUMMARY_FILE).write_text(mask(text))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        found = results.read_folder(Path(config.hydra.runtime.output_dir))
        count(found)
        if found.records or found.damaged:
            summary_text(found.records, found.records[0].name if found.records else "run", show=True,
                         damaged=found.damaged)
