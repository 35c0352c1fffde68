"""One progress line per job: job i of N, its overrides, and the phase it is in.

The job runs in the worker process; its phases (the steps of attnbench.core.job) reach this process as notes over
the worker's pipe (attnbench.harness.worker.notify), and this process, which owns the terminal, shows them. On a
terminal the line is redrawn in place while the job runs (the worker's output is printed above it), and is replaced
by the job's final line. Elsewhere (a CI log, a test) each phase is one plain line, in order:

    job 2/6 · backend=math compile=false · building
    ...
    job 2/6 · backend=math compile=false · ok after 1.41 s
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from attnbench.core.units import format_time

# attnbench.core.job's steps, as a reader wants them named.
PHASES = {"plan": "planning", "build": "building", "first call": "first call", "check": "checking the output",
          "verify dispatch": "verifying the kernel", "time": "timing"}
COMPILING = "compiling (first call)"
WAITING = "waiting for the worker"  # before the worker's first note: it may still be importing torch

# Jobs per sweep folder, told by the sweeper, which composes every job before the first runs. Keyed by the folder,
# so that a later sweep in the same process (tests run several) never reads an earlier one's count.
_sweep_sizes: dict[str, int] = {}


SIZE_FILE = ".sweep_size"  # in the sweep folder too: a launcher's worker processes read it there


def set_sweep_size(sweep_dir: str, jobs: int) -> None:
    _sweep_sizes[str(sweep_dir)] = jobs
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    (Path(sweep_dir) / SIZE_FILE).write_text(str(jobs))


def _sweep_size(sweep_dir: str) -> int | None:
    if sweep_dir not in _sweep_sizes:
        try:
            _sweep_sizes[sweep_dir] = int((Path(sweep_dir) / SIZE_FILE).read_text())
        except (OSError, ValueError):
            return None
    return _sweep_sizes[sweep_dir]


class JobLine:
    """The progress line of one job."""

    def __init__(self, number: int, total: int | None, overrides: Sequence[str], compiles: bool) -> None:
        self.head = f"job {number}/{total}" if total else f"job {number}"
        self.overrides = " ".join(overrides) or "(defaults)"
        self.compiles = compiles
        self.phase = WAITING
        self.started = time.monotonic()
        self.console = Console(highlight=False)  # stdout: where Hydra's and the jobs' own lines go
        self._live: Live | None = None

    @classmethod
    def of(cls, hydra: DictConfig, compiles: bool) -> JobLine:
        """The line of the job Hydra is running (HydraConfig.get()); a single run is job 1 of 1."""
        if hydra.mode == RunMode.MULTIRUN:
            number, total = hydra.job.num + 1, _sweep_size(str(hydra.sweep.dir))
        else:
            number, total = 1, 1
        return cls(number, total, list(hydra.overrides.task), compiles)

    def enter(self, phase: str) -> None:
        """A step of the job has begun (a note from the worker)."""
        self.phase = COMPILING if phase == "first call" and self.compiles else PHASES.get(phase, phase)
        if self._live is None:
            self._print(Text(self.phase))
        else:
            self._live.refresh()

    @contextmanager
    def running(self) -> Iterator[None]:
        """While the worker runs the job: on a terminal, the line redrawn in place, with the time it has taken."""
        if not self.console.is_terminal or multiprocessing.parent_process() is not None:
            yield  # a parallel launcher's worker shares the terminal with others: its phases are plain lines
            return
        # redirect_stdout/stderr (rich's default): what the worker writes is printed above the line, not over it
        with Live(self, console=self.console, transient=True, refresh_per_second=2) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def done(self, status: str) -> None:
        """The job's last line: its status and how long it took, as seen from here."""
        took = format_time((time.monotonic() - self.started) * 1e6)
        self._print(Text.assemble((status, "green" if status == "ok" else "yellow"), f" after {took}"))

    def _print(self, state: Text) -> None:
        if self.console.is_terminal:
            self.console.print(self._fitted(state))
        else:  # one line whatever its length (a CI log is read line by line): soft_wrap leaves wrapping to the reader
            self.console.print(Text.assemble(f"{self.head} · {self.overrides} · ", state), soft_wrap=True)

    def __rich__(self) -> Table:
        """The live line, with the time the job has taken so far."""
        return self._fitted(Text(f"{self.phase} {time.monotonic() - self.started:.0f} s", style="cyan"))

    def _fitted(self, state: Text) -> Table:
        """One terminal line: the overrides are cut (…) to fit, never the job's number or its state."""
        line = Table.grid(padding=(0, 1))
        line.add_column(no_wrap=True)
        line.add_column()  # the one rich may narrow; its text stays on one line
        line.add_column(no_wrap=True)
        line.add_row(f"{self.head} ·", Text(self.overrides, no_wrap=True, overflow="ellipsis"),
                     Text.assemble("· ", state))
        return line
