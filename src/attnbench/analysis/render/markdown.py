"""The pivot as markdown (summary.md, a parent run's description): rows = problems, columns = backend × compile."""

from __future__ import annotations

from attnbench.analysis.pivot import Problem, launch_note, speedup
from attnbench.core.units import format_time


def markdown(problems: list[Problem], title: str, baseline_backend: str | None = None) -> str:
    """A pivot: rows = problems, columns = backend × compile; cells = median and speedup against the baseline."""
    columns = list(dict.fromkeys(j.implementation for p in problems for j in p.jobs))
    baseline_note = (f"backend={baseline_backend}" if baseline_backend
                     else "the slowest exact, uncontended backend of each problem")
    lines = [f"### {title}", "",
             "| problem | " + " | ".join(columns) + " | winner |", "|---" * (len(columns) + 2) + "|"]
    for p in problems:
        cells = {}
        for job in p.jobs:
            if job.ok:
                versus = speedup(p.baseline, job) if p.baseline is not None else ""
                mark = " (approximate)" if job.approximate else " (contended)" if job.contended else ""
                cells[job.implementation] = f"{format_time(job.median_us)} {versus}".strip() + mark
            else:
                cells[job.implementation] = job.status
        lines.append(f"| {p.label} | " + " | ".join(cells.get(c, "") for c in columns) + f" | **{p.winner}** |")
    lines += ["", f"Median per call (device time on CUDA, wall time elsewhere) and speedup against {baseline_note};"
              " `~`: within noise (the medians' 95% bootstrap intervals overlap). Winners and speedups only between"
              " exact jobs that are not contended."]
    lines += [f"- {p.label}: {p.approximate}" if len(problems) > 1 else f"- {p.approximate}"
              for p in problems if p.approximate]
    contended = [j for p in problems for j in p.jobs if j.ok and j.contended]
    if contended:
        lines.append(f"- contended (no speedup, never a winner): {', '.join(j.implementation for j in contended)}: "
                     "timed while its threads waited for a core")
    note = launch_note(problems)
    return "\n".join(lines + (["", note] if note else []))
