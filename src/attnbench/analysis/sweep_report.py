"""A sweep's report, from MLflow alone: `summary.csv`, `summary.md`, plots, and the parent run's description.

The same report ends every sweep (the tracking callback) and `attnbench report` writes it again later, from any
machine that reaches the store, with another baseline if asked. Its files are written to a folder; the store
session (attnbench.store.session) attaches them to the parent run and makes the summary its description, so the
run page answers "who won, by how much" with the winner first and the plots under the table.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from attnbench.analysis.pivot import JobRecord, Problem, problem_keys, problem_of, summarise, winners_line
from attnbench.analysis.render.csv_table import to_csv
from attnbench.analysis.render.markdown import markdown, spaced_tables
from attnbench.store.tracking.names import COMMAND
from attnbench.store.tracking.store import MAX_TAG_VALUE
from attnbench.store.tracking.sweeps import SweepProblem, one_per_case, records, sweep_of

CSV_FILE, MARKDOWN_FILE = "summary.csv", "summary.md"
PLOT_TITLES = {"latency.png": "latency", "tflops.png": "useful TFLOP/s", "gbps.png": "GB/s (memory-bound)",
               "memory.png": "peak memory"}


@dataclass
class Report:
    parent_id: str
    title: str
    summary: str  # summary.md: the winner line, the pivot, what did not run, the plots
    files: list[Path]
    description: str  # the parent run's: the summary, its plots linked through the tracking server
    experiment_id: str


def report_sweep(client, run_id: str | None, out_dir: Path | None = None, baseline: str | None = None,
                 experiment: str | None = None) -> Report:
    """Write the report of a sweep (the latest one when run_id is None) to a folder (by default, the sweep's)."""
    parent, runs = sweep_of(client, run_id, experiment)
    jobs = [JobRecord.of(record) for record in records(client, one_per_case(runs))]
    _check_baseline(jobs, baseline)
    title = parent.info.run_name or f"sweep {parent.info.run_id[:8]}"
    out_dir = Path(out_dir) if out_dir is not None else default_folder(parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = summarise(jobs, baseline)
    (out_dir / CSV_FILE).write_text(to_csv(jobs))
    plots = _plots(jobs, out_dir, title)
    command = parent.data.tags.get(COMMAND)
    summary = _summary(problems, jobs, title, baseline, command, [p.name for p in plots])
    (out_dir / MARKDOWN_FILE).write_text(summary)
    files = [out_dir / CSV_FILE, out_dir / MARKDOWN_FILE, *plots]
    note = _summary(problems, jobs, title, baseline, command, [p.name for p in plots], parent.info.run_id)
    if len(note) > MAX_TAG_VALUE:  # the pivot and the plots before the per-job table, in what MLflow keeps
        note = _summary(problems, jobs, title, baseline, command, [p.name for p in plots], parent.info.run_id,
                        kernel_table=False)
    return Report(parent.info.run_id, title, summary, files, _fit(note, problems), parent.info.experiment_id)


def default_folder(parent) -> Path:
    """The sweep's own folder when this machine has it, else reports/<run id> here."""
    sweep_dir = parent.data.tags.get("sweep.dir")
    if sweep_dir and Path(sweep_dir).is_dir():
        return Path(sweep_dir)
    return Path("reports") / parent.info.run_id


def _check_baseline(jobs: list[JobRecord], baseline: str | None) -> None:
    backends = sorted({j.params.get("backend.name", "?") for j in jobs})
    if baseline is not None and baseline not in backends:
        raise SweepProblem(f"--baseline {baseline!r} is not a backend of this sweep: its backends are "
                           f"{', '.join(backends)}")


def _plots(jobs: list[JobRecord], out_dir: Path, title: str) -> list[Path]:
    if not any(j.ok for j in jobs):
        return []
    from attnbench.analysis.render.plots import plot_sweep  # matplotlib: only when there is something to draw

    return plot_sweep(jobs, out_dir, title)


def _summary(problems: list[Problem], jobs: list[JobRecord], title: str, baseline: str | None,
             command: str | None, plots: list[str], run_id: str | None = None, kernel_table: bool = True) -> str:
    """The markdown summary. With run_id, plots are linked through the tracking server (for the run page, which
    renders its description as markdown: `get-artifact` is the server's artifact route, relative to the page);
    without, as files beside summary.md. Without kernel_table, the per-job table is a pointer to the file."""
    tables = markdown(problems, title, baseline, kernel_table)
    lines = [winners_line(problems), "", spaced_tables(tables) if run_id else tables, ""]
    lines += _not_timed(jobs)
    if plots:
        lines += [" ".join(f"![{PLOT_TITLES.get(name, name)}]({_link(name, run_id)})" for name in plots), ""]
    lines.append(_footer(jobs, command))
    return "\n".join(lines) + "\n"


def _link(name: str, run_id: str | None) -> str:
    return f"get-artifact?path={name}&run_uuid={run_id}" if run_id else name


def _not_timed(jobs: list[JobRecord]) -> list[str]:
    """Jobs without a number to believe, grouped by what happened: reasons are too long for a table cell."""
    keys = problem_keys(jobs)
    grouped: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for job in jobs:
        if not job.ok:
            grouped[(job.implementation, job.status, job.tags.get("reason", ""))].append(problem_of(job, keys))
    if not grouped:
        return []
    lines = ["Not timed, or not to be believed:", ""]
    for (implementation, status, reason), where in grouped.items():
        count = f" ({len(where)} jobs)" if len(where) > 1 else f" ({where[0]})" if keys else ""
        lines.append(f"- **{implementation}**{count}: {status}" + (f": {' '.join(reason.split())}" if reason else ""))
    return [*lines, ""]


def _footer(jobs: list[JobRecord], command: str | None) -> str:
    counts = Counter(j.status for j in jobs)
    parts = [f"{len(jobs)} jobs: " + ", ".join(f"{n} {status}" for status, n in counts.most_common())]
    devices = sorted({j.tags.get("env.device_name") for j in jobs if j.tags.get("env.device_name")})
    torches = sorted({j.tags.get("env.torch") for j in jobs if j.tags.get("env.torch")})
    if devices:
        parts.append("on " + ", ".join(devices))
    if torches:
        parts.append("torch " + ", ".join(torches))
    if command:
        parts.append(f"`{command}`")
    return " · ".join(parts) + f". Every job and metric: `{CSV_FILE}`."


def _fit(note: str, problems: list[Problem]) -> str:
    """MLflow keeps 8000 characters of a tag: a pivot too large for that leaves the answer and points to the file."""
    if len(note) <= MAX_TAG_VALUE:
        return note
    short = f"{winners_line(problems)}\n\nThe full table is too large for a description: see `{MARKDOWN_FILE}`.\n"
    return short if len(short) <= MAX_TAG_VALUE else short[: MAX_TAG_VALUE - 1] + "…"
