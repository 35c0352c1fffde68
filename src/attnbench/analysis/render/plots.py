"""PNG plots of a sweep (matplotlib): drawn only for what varied.

With a numeric axis (a size that varied: sequence length first): latency, useful TFLOP/s (with the device's measured
peak as a line) and peak memory (with `oom` jobs marked) against it, one line per backend (× compile, × whatever
else varied); log scales where the sizes double. Without one: a bar chart of the medians.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from attnbench.analysis.pivot import JobRecord, problem_keys, short

AXES = ("shape.seq_len", "shape.q_len", "shape.batch", "shape.heads", "shape.kv_heads", "shape.head_dim")


def numeric_axis(records: list[JobRecord]) -> str | None:
    keys = problem_keys(records)
    return next((k for k in AXES if k in keys and all(_number(r.params.get(k)) for r in records)), None)


def plot_sweep(records: list[JobRecord], out_dir: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the machine
    out_dir.mkdir(parents=True, exist_ok=True)
    axis = numeric_axis(records)
    if axis is None:
        return [_bars(records, out_dir / "latency.png", title)]
    lines = _lines(records, axis)
    paths = [_plot(lines, axis, "median_us", "median per call (µs)", out_dir / "latency.png", title)]
    paths.append(_plot(lines, axis, "tflops", tflops_label(records), out_dir / "tflops.png", title,
                       ceiling=_first(records, "device_peak_tflops")))
    if any("peak_mem_mib" in r.metrics for r in records):
        paths.append(_plot(lines, axis, "peak_mem_mib", "peak memory of one call (MiB)", out_dir / "memory.png",
                           title, mark_oom=True))
    return paths


def tflops_label(records: list[JobRecord]) -> str:
    """An approximate backend's TFLOP/s count its own formula's FLOPs, not softmax attention's useful ones."""
    if any(r.approximate for r in records):
        return "TFLOP/s (useful; dashed, approximate:\ntheir own formula's FLOPs)"
    return "useful TFLOP/s"


def _lines(records: list[JobRecord], axis: str) -> dict[str, list[JobRecord]]:
    others = [k for k in problem_keys(records) if k != axis]
    lines: dict[str, list[JobRecord]] = defaultdict(list)
    for r in records:
        label = ", ".join([r.implementation, *(f"{short(k)}={r.params.get(k)}" for k in others)])
        lines[label].append(r)
    return {_approximate_label(label, jobs): jobs for label, jobs in lines.items()}


def _approximate_label(label: str, jobs: list[JobRecord]) -> str:
    """An approximate backend's line says so, with its largest error against softmax: it is not ranked with the
    exact ones."""
    errors = [j.metrics["rel_l2_err"] for j in jobs if j.approximate and "rel_l2_err" in j.metrics]
    if not any(j.approximate for j in jobs):
        return label
    return label + (f" (approximate, error ≤ {max(errors):.2g} vs softmax)" if errors else " (approximate)")


def _plot(lines, axis: str, metric: str, ylabel: str, path: Path, title: str, ceiling: float | None = None,
          mark_oom: bool = False) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(8, 5))
    xs_all = []
    for label, jobs in lines.items():
        timed = sorted((j for j in jobs if j.ok and metric in j.metrics), key=lambda j: float(j.params[axis]))
        xs_all += [float(j.params[axis]) for j in jobs]
        line = None
        if timed:
            xs, ys = [float(j.params[axis]) for j in timed], [j.metrics[metric] for j in timed]
            errors = _errors(timed) if metric == "median_us" else None
            style = "--" if any(j.approximate for j in timed) else "-"
            line = ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label, linestyle=style).lines[0]
        if mark_oom:
            for j in jobs:
                if j.status == "oom":
                    ax.scatter([float(j.params[axis])], [0], marker="x", s=80, zorder=3,
                               color=line.get_color() if line else "black")
    if ceiling:
        ax.axhline(ceiling, linestyle="--", color="gray", label=f"measured device peak ({ceiling:.0f})")
    if mark_oom and any(j.status == "oom" for jobs in lines.values() for j in jobs):
        ax.scatter([], [], marker="x", color="black", label="out of memory (oom)")
    if _doubling(xs_all):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(xs_all)), [f"{x:g}" for x in sorted(set(xs_all))])
    if metric == "median_us":
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))  # 100, not 10²
        ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
    ax.set_xlabel(short(axis))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(records: list[JobRecord], path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.ok]
    labels = [_approximate_label(", ".join([r.implementation, *(f"{short(k)}={r.params.get(k)}"
                                                               for k in problem_keys(records))]), [r]) for r in ok]
    fig, ax = plt.subplots(figsize=(8, max(3, 0.4 * len(ok) + 1)))
    ax.barh(labels, [r.median_us for r in ok], xerr=_errors(ok), capsize=3)
    ax.set_xlabel("median per call (µs), with its 95% interval")
    ax.set_title(title)
    ax.invert_yaxis()  # the sweep's order, top to bottom
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _errors(jobs: list[JobRecord]) -> list[list[float]] | None:
    """Distances from each median down and up to its bootstrap interval; None when samples are missing."""
    from attnbench.core.timing.noise import median_interval

    if not all(j.headline_samples for j in jobs):
        return None
    intervals = [median_interval(j.headline_samples) for j in jobs]
    return [[max(0.0, j.median_us - low) for j, (low, _) in zip(jobs, intervals)],
            [max(0.0, high - j.median_us) for j, (_, high) in zip(jobs, intervals)]]


def _first(records: list[JobRecord], metric: str) -> float | None:
    return next((r.metrics[metric] for r in records if metric in r.metrics), None)


def _number(value: str | None) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _doubling(values: list[float]) -> bool:
    distinct = sorted(set(values))
    return len(distinct) > 2 and all(b / a >= 1.9 for a, b in zip(distinct, distinct[1:]) if a > 0)
