"""The pivot as markdown (summary.md, a parent run's description): rows = problems, columns = backend × compile;
then each problem's jobs side by side, the kernel comparison: winner, throughput against the ceiling the problem
meets first, error against float64 and the first call's cost."""

from __future__ import annotations

from attnbench.analysis.pivot import JobRecord, Problem, launch_note, speedup
from attnbench.core.roofline import bound_of
from attnbench.core.units import format_percent, format_time


def markdown(problems: list[Problem], title: str, baseline_backend: str | None = None, jobs: bool = True) -> str:
    """A pivot: rows = problems, columns = backend × compile; cells = median and speedup against the baseline; then,
    unless jobs is False (a description MLflow would cut), each problem's jobs side by side (kernel_table)."""
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
    side_by_side = kernel_table(problems) if jobs else ["Each problem's jobs side by side (throughput, error, first "
                                                        "call): `summary.md`."]
    return "\n".join(lines + (["", note] if note else []) + ["", *side_by_side])


def kernel_table(problems: list[Problem]) -> list[str]:
    """Each problem's jobs, fastest first, the winner in bold: median, speedup, throughput (GB/s where the problem is
    memory-bound, TFLOP/s where it is not) and its share of that ceiling, error against float64, first call and
    compilation. A column no job has a number for is left out."""
    jobs = [j for p in problems for j in p.jobs if j.ok]
    optional = [("% of peak", any(bound_of(p.jobs).share_of_peak(j) is not None for p in problems for j in p.jobs
                                  if j.ok)),
                ("error vs float64", any("rel_l2_err" in j.metrics for j in jobs)),
                ("first call", any("first_call_s" in j.metrics for j in jobs)),
                ("compile", any("compile_s" in j.metrics for j in jobs))]
    headers = ["problem", "run", "median", "speedup", "throughput", *(name for name, shown in optional if shown)]
    lines = ["| " + " | ".join(headers) + " |", "|---" * len(headers) + "|"]
    for p in problems:
        bound = bound_of(p.jobs)
        ordered = sorted((j for j in p.jobs if j.ok), key=lambda j: (j.approximate, j.median_us)) + [
            j for j in p.jobs if not j.ok]
        for job in ordered:
            cells = {"problem": f"{p.label} · {bound.label}", "run": _name(job, p), "median": job.status}
            if job.ok:
                cells |= {"median": format_time(job.median_us) + (" (contended)" if job.contended else ""),
                          "speedup": speedup(p.baseline, job) if p.baseline is not None else "",
                          "throughput": bound.throughput(job),
                          "% of peak": format_percent(bound.share_of_peak(job)),
                          "error vs float64": _error(job),
                          "first call": _seconds(job.metrics.get("first_call_s")),
                          "compile": _seconds(job.metrics.get("compile_s"))}
            lines.append("| " + " | ".join(cells.get(h, "") for h in headers) + " |")
    lines += ["", "Throughput: GB/s of the minimum traffic (q, k, v read and the output written once) where the "
              "problem is memory-bound (below the device's ridge point; with no ceiling known, a decode step), useful "
              "TFLOP/s where it is not; % of peak: of the measured bandwidth or matmul peak, else the datasheet's. "
              "Error: the output's norm-wise relative error against float64 softmax attention. First call: "
              "compilation included."]
    return lines


def _name(job: JobRecord, problem: Problem) -> str:
    return f"**{job.implementation}**" if job is problem.best else job.implementation


def _error(job: JobRecord) -> str:
    error = job.metrics.get("rel_l2_err")
    if error is None:
        return ""
    return f"{error:.2g} (approximate)" if job.approximate else f"{error:.2g}"


def _seconds(value: float | None) -> str:
    return "" if value is None else format_time(value * 1e6)


def spaced_tables(text: str) -> str:
    """The tables of `text` with an em space after each cell: MLflow's run page draws markdown tables without cell
    padding, so `24.9 µs 2.51×` and the next column's `62.5 µs 1×` would run together. Written as the entity, which
    the markdown parser keeps (an em space character it would trim) and the browser draws."""
    lines = []
    for line in text.split("\n"):
        if line.startswith("| ") and not line.startswith("|---"):
            cells = line.strip().removeprefix("|").removesuffix("|").split(" | ")
            line = "| " + " | ".join(f"{cell.strip()}&emsp;" for cell in cells) + " |"
        lines.append(line)
    return "\n".join(lines)

