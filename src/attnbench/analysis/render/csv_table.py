"""Every job of a sweep as CSV (summary.csv): the params that varied, status and reason, then every metric."""

from __future__ import annotations

import csv
import io

from attnbench.analysis.pivot import JobRecord, varied


def to_csv(records: list[JobRecord]) -> str:
    """One row per job: the params that varied, status and reason, then every metric."""
    keys = varied(records)
    metrics = sorted({m for r in records for m in r.metrics})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["run", *keys, "status", "reason", "kernel", *metrics])
    for r in records:
        writer.writerow([r.name, *(r.params.get(k, "") for k in keys), r.status, r.tags.get("reason", ""),
                         r.tags.get("kernel", ""), *(r.metrics.get(m, "") for m in metrics)])
    return out.getvalue()
