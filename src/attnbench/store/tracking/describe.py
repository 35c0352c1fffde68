"""What a run says at a glance in MLflow: its description, and its run status.

MLflow shows a run's description (the tag `mlflow.note.content`, markdown) on the run page and in the runs
table's Description column. A job's is one line: its time, its throughput and the kernel that ran, or why it has
no number. A sweep's parent gets the report's summary (attnbench.analysis.sweep_report).
"""

from __future__ import annotations

from attnbench.core.record import Record, is_approximate
from attnbench.core.roofline import bound_of
from attnbench.core.units import format_time

NOTE = "mlflow.note.content"
MAX_REASON = 300  # the Description column shows the start; the full reason is the `reason` tag


def terminal_status(status: str) -> str:
    """The MLflow run status a job's run is closed with.

    MLflow 3's runs table shows no tag, param or metric by default; what it always shows is each run's status, as
    an icon in the pinned Created column: a green check for FINISHED, a red mark for FAILED and KILLED (nothing
    else: the mark is the one visual difference a run can carry there). A job that is not `ok` has no number to
    read (`unsupported`, `oom`, `skipped`, ...) or one that must not be believed (`wrong`, `fallback`), so it
    closes FAILED and stands out next to the `ok` ones; KILLED stays for an interrupted job. Which verdict it was
    is the `status` tag, and the description says why. The run name stays the job's identity (`flash+compile`),
    short enough for the narrow name column, where a status would be cut off.
    """
    if status == "ok":
        return "FINISHED"
    return "KILLED" if status == "interrupted" else "FAILED"


def job_description(record: Record) -> str:
    """`122.5 µs · 140 TFLOP/s · flash` for an ok job (`61.2 µs · 2.9 TB/s · ...` where it is memory-bound by the
    rule the report reads a problem by, attnbench.core.roofline, applied to the job alone: an approximate backend's
    own formula's intensity, where the report reads its row by the exact jobs' beside it), said first where it is
    approximate (with its error against softmax) or contended; `unsupported: <reason>` otherwise."""
    status, metrics, tags = record.status, record.metrics, record.tags
    if status != "ok":
        reason = " ".join(str(record.reason or "").split())
        cut = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
        return f"{status}: {cut}" if cut else status
    parts = [format_time(metrics.get("median_us")), bound_of([record]).throughput(record), tags.get("kernel", "")]
    if is_approximate(tags):
        error = metrics.get("rel_l2_err")
        parts.insert(0, "approximate" + (f" (error {error:.2g} vs softmax)" if error is not None else ""))
    if "contended" in tags:
        parts.insert(0, "contended (timed while waiting for a core)")
    return " · ".join(part for part in parts if part)
