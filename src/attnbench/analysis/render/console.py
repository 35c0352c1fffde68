"""The end-of-sweep table, from the jobs' Records.

It fits 100 columns, a CI log's width (a wider terminal gets the same table, wrapped less): each number in its own
unit (µs, ms, s), no column that says nothing in this sweep (a param every job shares, said once in the caption;
wall time where it is the headline; memory that no job measured), and reasons as numbered notes below the table,
in full. Speedups are against the slowest job of the same problem, and `~` where the two are the same within noise
(attnbench.analysis.pivot).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from attnbench.analysis.pivot import JobRecord, short, speedup, summarise, varied
from attnbench.core.roofline import bound_of
from attnbench.core.record import Record
from attnbench.analysis.render.plot_axes import unit_for
from attnbench.core.units import format_memory, format_percent, format_rate, format_time

WIDTH = 100  # where the output is not a terminal (a CI log, a pipe), and in summary.txt
NAMED_BY_THE_RUN = ("backend.name", "compile", "compile_mode")  # the run's name says them: `flash+compile`
NOT_MEASURED = ("tracking.", "hydra.")  # where a job was recorded, not what it measured
SIZES = ("shape.", "mask.")
MAX_SIZE_COLUMNS = 2  # more sizes than this varied: one `problem` column (`B4 H32/8 S8192 D128 causal`) instead
LONG_NAME = 20  # characters of a run's name: `efficient+compile`, `flex+reduce-overhead`; longer ones may fold
HEADLINES = {"events": "device time (CUDA events)", "wall": "wall time", "cuda_graph": "device time (CUDA graph "
             "replays)", "profiler": "kernel time (profiler)"}
Column = tuple[str, Callable[[JobRecord], str]]  # header, cell
SHARE = "% ceiling"  # of the bandwidth for a GB/s row, of the matmul peak for a TFLOP/s row
CONTENDED_NOTE = ("contended: its threads waited for a core (the share shown) while it was timed — another process, "
                  "or more torch threads than free cores: the time is the scheduler's; no speedup, never a winner")


def results_table(records: list[Record], title: str) -> RenderableType:
    return jobs_table([JobRecord.of(r) for r in records], title)


def jobs_table(jobs: list[JobRecord], title: str) -> RenderableType:
    """The table, then its numbered notes."""
    ok = [j for j in jobs if j.ok]
    columns = param_columns(jobs)
    problems = summarise(jobs)
    speedups = {id(job): speedup(p.baseline, job) for p in problems if p.baseline for job in p.jobs if job.ok}
    notes: dict[str, int] = {}  # reason → its number; jobs with the same reason share one note

    def note(job: JobRecord) -> str:
        if job.ok:
            marks = [f"approximate, {job.softmax_error}"] if job.approximate else []
            if job.contended:
                share = job.metrics.get("cpu_wait_share")
                waited = f" {100 * share:.0f}%" if share is not None else ""
                marks.append(f"contended{waited} [{notes.setdefault(CONTENDED_NOTE, len(notes) + 1)}]")
            return " · ".join([*marks, job.tags.get("kernel", "")]).strip(" ·")
        reason = job.tags.get("reason", "")
        return f"[{notes.setdefault(reason, len(notes) + 1)}]" if reason else ""

    numbers: list[Column] = [("median", lambda j: format_time(j.median_us)),
                             ("speedup", lambda j: speedups.get(id(j), ""))]
    if any(j.metrics.get("wall_median_us") not in (None, j.median_us) for j in ok):  # not the headline itself
        numbers.insert(1, ("wall", lambda j: format_time(j.metrics.get("wall_median_us"))))
    if any(j.basis == "wall" and "kernel_us" in j.metrics for j in ok):  # launch-bound: the GPU's own share
        numbers.insert(1, ("kernels", lambda j: format_time(j.metrics.get("kernel_us"))))
    bounds = {id(job): bound_of(p.jobs) for p in problems for job in p.jobs}
    for memory, metric in ((False, "tflops"), (True, "gbps")):
        # each problem read against the ceiling it meets first (attnbench.core.roofline): one column or both,
        # in the unit its rows read in (a CPU's 0.00104 TFLOP/s is 1.04 GFLOP/s)
        rows = [j.metrics[metric] for j in ok if bounds[id(j)].memory == memory and metric in j.metrics]
        if rows:
            scale, header = unit_for(metric, rows)  # the unit its middle value reads in
            numbers.append((header, lambda j, m=memory, k=metric, s=scale: format_rate(j.metrics[k] / s)
                            if bounds[id(j)].memory == m and k in j.metrics else ""))
    if any(bounds[id(j)].share_of_peak(j) is not None for j in ok):
        numbers.append((SHARE, lambda j: format_percent(bounds[id(j)].share_of_peak(j))))
    if any("peak_mem_mib" in j.metrics for j in ok):
        numbers.append(("peak", lambda j: format_memory(j.metrics.get("peak_mem_mib"))))

    table = Table(title=title, caption=Text(caption(jobs)), caption_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, collapse_padding=True)
    # A long name (`flex+max-autotune-no-cudagraphs`) may fold where no width is left; others never do: the
    # kernel / reason column gives way first, wrapping between words.
    table.add_column("run", no_wrap=max((len(j.name) for j in jobs), default=0) <= LONG_NAME, overflow="fold")
    for header, _ in columns:
        table.add_column(header, no_wrap=True)
    table.add_column("status", no_wrap=True)
    for header, _ in numbers:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("kernel / reason", overflow="fold")  # wraps between words
    for job in jobs:  # Text: a name, a value or a reason is never read as rich markup
        status = Text(job.status, style="green" if job.ok else "yellow")
        measured = [cell(job) if job.ok else "" for _, cell in numbers]  # flagged jobs' numbers are not answers
        table.add_row(Text(job.name), *(Text(cell(job)) for _, cell in columns), status, *measured, Text(note(job)))
    return Group(table, _notes(notes)) if notes else table


def param_columns(jobs: list[JobRecord]) -> list[Column]:
    """The params that varied, apart from those the run's name says; one column per distinct set of values (q_len
    repeats seq_len when only seq_len was swept)."""
    keys: list[str] = []
    for key in varied(jobs):
        values = [j.params.get(key) for j in jobs]
        if key not in NAMED_BY_THE_RUN and not key.startswith(NOT_MEASURED) and all(
                values != [j.params.get(k) for j in jobs] for k in keys):
            keys.append(key)
    sizes = [k for k in keys if k.startswith(SIZES)]
    if len(sizes) <= MAX_SIZE_COLUMNS:
        return [(short(k), lambda j, k=k: j.params.get(k, "")) for k in keys]
    problem = ("problem", lambda j: j.tags.get("problem") or " ".join(f"{short(k)}={j.params.get(k)}" for k in sizes))
    return [problem] + [(short(k), lambda j, k=k: j.params.get(k, "")) for k in keys if k not in sizes]


def caption(jobs: list[JobRecord]) -> str:
    """What every job shared (so the table need not repeat it), and what the numbers are."""
    shared = [f"{label} {value}" for key, label in (("model.name", "model"), ("mode", "mode"), ("dtype", "dtype"))
              if (value := _one(j.params.get(key) for j in jobs))]
    problem = _one(j.tags.get("problem") for j in jobs if "problem" in j.tags)  # as the jobs' tag describes it
    if problem and not any(key.startswith(SIZES) for key in varied(jobs)):
        shared.append(f"problem {problem}")
    if device := _one(j.tags.get("device") for j in jobs if "device" in j.tags):
        shared.append(f"on {device}")
    lines = [f"every job: {', '.join(shared)}"] if shared else []
    if any(j.ok for j in jobs):
        headline = _one(j.tags.get("timing.headline") for j in jobs if j.ok)
        lines.append(f"median: {HEADLINES.get(headline, headline) if headline else 'each job’s timing.headline'} "
                     "per call · speedup: against the slowest exact, uncontended run of its problem; ~ where the "
                     "two are the same within noise")
    if any(j.ok and "gbps" in j.metrics for j in jobs) and any(bound_of([j]).memory for j in jobs if j.ok):
        lines.append("GB/s: the minimum bytes (q, k, v read and the output written once) per second, for problems "
                     "below the device's ridge point or, with no ceiling known, decode steps (memory-bound); "
                     "TFLOP/s for the others")
    if any(j.ok and any(k.startswith("pct_") for k in j.metrics) for j in jobs):
        lines.append(f"{SHARE}: of the measured bandwidth (GB/s) or matmul peak (TFLOP/s), else the datasheet's")
    if any(j.ok and j.basis == "wall" for j in jobs):
        lines.append("launch-bound problems (the GPU idles between launches, and CUDA events would time the host's "
                     "gaps): median is the wall time per call in a Python loop, kernels the GPU's time in kernels")
    return "\n".join(lines)


def _one(values: Iterable[str | None]) -> str | None:
    """The value every one shares, else None."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _notes(notes: dict[str, int]) -> Table:
    """`[1] reason`, wrapped between words under its own start."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")  # a word longer than the line (a URL) is folded, never cut off
    for reason, number in notes.items():
        grid.add_row(Text(f"[{number}]"), Text(reason))
    return grid


def render(renderable: RenderableType, show: bool = True) -> str:
    """Print the table (unless show=False) and return its plain text, the same (summary.txt, the parent run's)."""
    on_terminal = show and sys.stdout.isatty()
    console = Console(record=True, width=None if on_terminal else WIDTH, file=None if show else io.StringIO())
    console.print(renderable)
    return console.export_text()
