"""What a plot says in words: what every job shared (model, mode, dtype, problem, device) under its title, and one
note per backend that did not run, with why — so that no backend is silently missing from the lines."""

from __future__ import annotations

import textwrap
from collections import defaultdict

from attnbench.analysis.pivot import JobRecord, problem_keys, problem_of

NOTE_WIDTH = 112  # characters of a note's line at the notes' font size, within the figure's width
REASON_CHARS = 200  # a reason longer than this is cut: the report and summary.csv hold it whole


def subtitle(jobs: list[JobRecord]) -> str:
    """`attention · fwd · float16 · B2 H2 S* D8 none (* varies) · Intel(R) Xeon(R) Processor (cpu)`: what the jobs
    shared, said once."""
    parts = [value for key in ("model.name", "mode", "dtype") if (value := _shared(j.params.get(key) for j in jobs))]
    problem = _problem([j.tags["problem"] for j in jobs if "problem" in j.tags])
    if problem:
        parts.append(problem)
    names = _shared(j.tags.get("env.device_name") for j in jobs)
    device = _shared(j.tags.get("device") or j.params.get("device.name") for j in jobs)
    if names or device:
        parts.append(f"{names} ({device})" if names and device and names != device else names or device)
    return " · ".join(parts)


def _shared(values) -> str | None:
    distinct = {v for v in values if v}
    return distinct.pop() if len(distinct) == 1 else None


def _problem(tags: list[str]) -> str:
    """The jobs' problem tag (`B2 H2 S16 D8 none`), the parts that vary between them starred."""
    if not tags:
        return ""
    if len(set(tags)) == 1:
        return tags[0]
    split = [tag.split() for tag in tags]
    if len({len(tokens) for tokens in split}) != 1:
        return ""
    merged = [tokens[0] if len(set(tokens)) == 1 else tokens[0].rstrip("0123456789/") + "*" for tokens in zip(*split)]
    return " ".join(merged) + " (* varies)"


def not_run(jobs: list[JobRecord], where: bool = True) -> list[str]:
    """One note per backend and outcome that gave no number: `efficient (seq_len 64, 128): unsupported —
    memory-efficient attention runs on CUDA only`; with where=False, how many jobs instead of which problems (a
    figure that names each problem in its own panel)."""
    keys = problem_keys(jobs)
    grouped: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for job in jobs:
        if not job.ok:
            reason = " ".join(job.tags.get("reason", "").split())
            grouped[(job.implementation, job.status, reason)].append(problem_of(job, keys))
    notes = []
    for (name, status, reason), problems in grouped.items():
        at = f" ({_where(problems)})" if keys and where else f" ({len(problems)} jobs)" if len(problems) > 1 else ""
        why = f" — {reason[:REASON_CHARS - 1]}…" if len(reason) > REASON_CHARS else f" — {reason}" if reason else ""
        notes.append(f"{name}{at}: {status}{why}")
    return notes


def launch_bound(jobs: list[JobRecord]) -> str:
    """The problems the report's tables compare by wall time per call, launch-bound (attnbench.analysis.pivot
    .compare_by_wall, which the report runs first), while a latency plot draws device time (what scales with the
    problem); empty where there is none."""
    keys = problem_keys(jobs)
    problems = list(dict.fromkeys(problem_of(j, keys) for j in jobs if j.ok and j.basis == "wall"))
    if not problems:
        return ""
    at = f" at {_where(problems)}" if keys else ""
    return (f"Launch-bound{at} (the GPU waited for the host between calls): the points are the device's time (CUDA "
            "events); the report's tables compare those problems by wall time per call.")


def _where(problems: list[str]) -> str:
    """`seq_len 64, 128` for one key; the problems as they are for more."""
    keys = {p.split("=")[0] for p in problems}
    if len(keys) == 1 and all(p.count("=") == 1 for p in problems):
        return f"{keys.pop()} " + ", ".join(p.split("=")[1] for p in problems)
    return "; ".join(problems)


def wrapped(notes: list[str]) -> str:
    return "\n".join(textwrap.fill(note, NOTE_WIDTH, subsequent_indent="    ") for note in notes)
