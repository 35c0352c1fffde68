"""Two sweeps side by side (`attnbench compare`): each case's medians, their ratio and the verdict, then a tally."""

from __future__ import annotations

from attnbench.analysis.compare import SweepComparison
from attnbench.analysis.pivot import JobRecord
from attnbench.core.roofline import bound_of
from attnbench.core.units import format_time


def table(result: SweepComparison):
    from rich.table import Table

    out = Table(title=f"B: {result.b_name} against A: {result.a_name}", caption="verdict from both runs' samples: "
                "faster/slower where the medians' 95% intervals do not overlap, else same")
    for header, justify in (("case", "left"), ("A", "right"), ("B", "right"), ("B/A", "right"),
                            ("B's throughput", "right"), ("verdict", "left")):
        out.add_column(header, justify=justify, overflow="fold")
    for pair in result.pairs:
        # GB/s where the case is memory-bound (a decode step), TFLOP/s where not: attnbench.core.roofline
        rate = bound_of([pair.a, pair.b]).throughput(pair.b) if pair.b.ok else ""
        out.add_row(pair.label, _cell(pair.a), _cell(pair.b), f"{pair.ratio:.3g}×" if pair.ratio else "", rate,
                    pair.verdict)
    return out


def _cell(job: JobRecord) -> str:
    return format_time(job.median_us) if job.ok else job.status


def tally(result: SweepComparison) -> str:
    verdicts: dict[str, int] = {}
    for pair in result.pairs:
        verdicts[pair.verdict] = verdicts.get(pair.verdict, 0) + 1
    text = f"{len(result.pairs)} cases compared: " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    if result.only_a or result.only_b:
        text += f"; {result.only_a} only in A, {result.only_b} only in B"
    return text
