"""Every job of a sweep as CSV (summary.csv): the params that varied, status and reason, the bound its problem meets
first, then every metric."""

from __future__ import annotations

import csv
import io
from collections import defaultdict

from attnbench.analysis.pivot import JobRecord, problem_keys, problem_of, varied
from attnbench.core.roofline import bound_of


def to_csv(records: list[JobRecord]) -> str:
    """One row per job: the params that varied, status and reason, `memory` or `compute` (which throughput its
    problem is read by: `gbps` or `tflops`), then every metric."""
    keys = varied(records)
    metrics = sorted({m for r in records for m in r.metrics})
    problems: dict[str, list[JobRecord]] = defaultdict(list)
    for r in records:
        problems[problem_of(r, problem_keys(records))].append(r)
    bounds = {id(r): bound_of(jobs) for jobs in problems.values() for r in jobs}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["run", *keys, "status", "reason", "kernel", "bound", *metrics])
    for r in records:
        writer.writerow([r.name, *(r.params.get(k, "") for k in keys), r.status, r.tags.get("reason", ""),
                         r.tags.get("kernel", ""), "memory" if bounds[id(r)].memory else "compute",
                         *(r.metrics.get(m, "") for m in metrics)])
    return out.getvalue()
