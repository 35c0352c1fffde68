"""The end-of-sweep table, from the jobs' saved results (attnbench.results) or from MLflow runs."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

from mlflow.entities import Run
from rich.console import Console
from rich.table import Table


@dataclass
class Row:
    name: str
    model: str
    backend: str
    compiled: bool
    mode: str
    status: str
    median_us: float | None
    wall_us: float | None
    tflops: float | None
    peak_mib: float | None
    note: str


def row_of(run: Run) -> Row:
    return _row(run.info.run_name or run.info.run_id[:8], run.data.params, run.data.metrics, run.data.tags)


def row_of_result(record: dict) -> Row:
    return _row(record["name"], record["params"], record["metrics"], record["tags"] | {"status": record["status"],
                                                                                     "reason": record["reason"]})


def _row(name: str, p: dict, m: dict, t: dict) -> Row:
    status = t.get("status", "unknown")
    note = t.get("kernel", "") if status == "ok" else t.get("reason", "")
    return Row(
        name=name,
        model=p.get("model.name", "?"),
        backend=p.get("backend.name", "?"),
        compiled=p.get("compile") == "true",
        mode=p.get("mode", "fwd"),
        status=status,
        median_us=m.get("median_us"),
        wall_us=m.get("wall_median_us"),
        tflops=m.get("tflops"),
        peak_mib=m.get("peak_mem_mib"),
        note=note,
    )


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def summary_table(runs: list[Run], title: str) -> Table:
    return rows_table([row_of(r) for r in sorted(runs, key=lambda r: r.info.start_time or 0)], title)


def results_table(records: list[dict], title: str) -> Table:
    return rows_table([row_of_result(r) for r in records], title)


def rows_table(rows: list[Row], title: str) -> Table:
    ok_medians = [r.median_us for r in rows if r.status == "ok" and r.median_us]
    slowest = max(ok_medians, default=None)
    table = Table(title=title, caption="median: device time (events) on CUDA, wall time elsewhere; "
                  "speedup: against the slowest ok job")
    for header, justify in [("run", "left"), ("model", "left"), ("backend", "left"), ("compile", "left"),
                            ("mode", "left"), ("status", "left"), ("median µs", "right"), ("wall µs", "right"),
                            ("TFLOP/s", "right"), ("peak MiB", "right"), ("speedup", "right"),
                            ("kernel / reason", "left")]:
        table.add_column(header, justify=justify, overflow="fold")
    for r in rows:
        ok = r.status == "ok"
        speedup = f"{slowest / r.median_us:.2f}×" if ok and slowest and r.median_us else ""
        table.add_row(
            r.name, r.model, r.backend, "yes" if r.compiled else "no", r.mode,
            f"[green]{r.status}[/]" if ok else f"[yellow]{r.status}[/]",
            _num(r.median_us if ok else None, ".1f"), _num(r.wall_us if ok else None, ".1f"),
            _num(r.tflops if ok else None, ".3g"), _num(r.peak_mib if ok else None, ".1f"),
            speedup, r.note[:160],
        )
    return table


def render(table: Table, show: bool = True) -> str:
    """Print the table (unless show=False) and return its plain-text form (for the parent run's artifact)."""
    console = Console(record=True, width=None if sys.stdout.isatty() else 180, file=None if show else io.StringIO())
    console.print(table)
    return console.export_text()
