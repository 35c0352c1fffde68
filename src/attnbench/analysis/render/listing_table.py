"""`attnbench ls` and `attnbench show` as tables (attnbench.analysis.listing): the sweeps newest first; one sweep, its
jobs in the end-of-sweep table; one job, what it measured and why it is what it is."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from attnbench.analysis.listing import JobShown, SweepLine, SweepShown
from attnbench.analysis.render.console import jobs_table
from attnbench.core.roofline import bound_of
from attnbench.core.units import format_memory, format_percent, format_time

MAX_WINNER = 190  # characters (two lines) of a many-problem sweep's winners; `attnbench show` gives them all


def sweeps_table(lines: list[SweepLine], store: str) -> RenderableType:
    """One line per sweep (start, run id, name, jobs by status), its winner under it across the whole width: a
    many-problem sweep's winners take a paragraph, which a table column would squeeze into a few words a line."""
    width = max(len(_name(line)) for line in lines)
    rows: list[RenderableType] = [Text(f"sweeps in {store}, newest first", style="bold"),
                                  Text(f"{'started':<16}  {'run id':<32}  {'sweep':<{width}}  jobs", style="bold")]
    for line in lines:
        rows.append(Text(f"{line.started:<16}  {line.run_id:<32}  {_name(line):<{width}}  {line.jobs}"))
        if line.winner:
            winner = line.winner if len(line.winner) <= MAX_WINNER else line.winner[: MAX_WINNER - 1] + "…"
            rows.append(Padding(Text(f"winner: {winner}", style="dim"), (0, 0, 0, 4)))
    rows.append(Text("attnbench show RUN_ID: a sweep's jobs, or one job"))
    return Group(*rows)


def _name(line: SweepLine) -> str:
    return line.name if line.state == "FINISHED" else f"{line.name} ({line.state.lower()})"  # running, failed, killed


def sweep_view(shown: SweepShown) -> RenderableType:
    line = shown.line
    facts = [("sweep", f"{line.name} ({line.state.lower()}), started {line.started}"), ("run id", line.run_id),
             ("jobs", line.jobs), ("winner", line.winner), ("command", shown.command)]
    return Group(_facts(facts), Text(""), jobs_table(shown.jobs, line.name))


def job_view(shown: JobShown) -> RenderableType:
    job = shown.job
    m, tags = job.metrics, job.tags
    facts = [("job", f"{shown.name} ({job.status})"), ("run id", shown.run_id), ("sweep", shown.sweep),
             ("reason", tags.get("reason", "")), ("problem", tags.get("problem", "")),
             ("model, mode, dtype", ", ".join(job.params.get(k, "?") for k in ("model.name", "mode", "dtype"))),
             ("device", tags.get("env.device_name", tags.get("device", ""))), ("kernel", tags.get("kernel", ""))]
    if job.ok:
        bound = bound_of([job])
        share = bound.share_of_peak(job)
        facts += [("median", f"{format_time(m.get('median_us'))} per call ({tags.get('timing.headline', '?')})"),
                  ("throughput", f"{bound.throughput(job)}, {bound.label}: {bound.why}"
                   + (f"; {format_percent(share)} of the {bound.ceiling_name}" if share is not None else "")),
                  ("error vs float64", _error(job)),
                  ("first call", _seconds(m.get("first_call_s"))),
                  ("compile", _seconds(m.get("compile_s"))),
                  ("peak memory", format_memory(m.get("peak_mem_mib")))]
    facts.append(("reproduce", f"attnbench compare --rerun {shown.run_id}"))
    return _facts(facts)


def _facts(facts: list[tuple[str, str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for name, value in facts:
        if value:
            grid.add_row(Text(name), Text(value))
    return grid


def _error(job) -> str:
    error, tolerance = job.metrics.get("rel_l2_err"), job.metrics.get("tolerance")
    if error is None:
        return ""
    limit = f" (tolerance {tolerance:.2g})" if tolerance is not None else ""
    return f"{error:.2g} relative L2{limit}" + (", approximate: against softmax" if job.approximate else "")


def _seconds(value: float | None) -> str:
    return "" if value is None else format_time(value * 1e6)
