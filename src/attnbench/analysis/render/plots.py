"""PNG plots of a sweep (matplotlib): drawn only for what varied, read at a glance.

With a numeric axis (a size that varied: sequence length first): latency, throughput (useful TFLOP/s for
compute-bound problems, GB/s for memory-bound ones: attnbench.core.roofline; with the device's measured ceiling
as a line) and peak memory against it, one line per backend (× compile, × whatever else varied); log₂ where the sizes
double. Without one: a bar chart of the medians. Every axis is in one unit chosen from its data, with plain tick
labels; the title says what the jobs shared (model, mode, dtype, problem, device); a job that did not run is an ×
at the bottom of the plot at its size (a bar chart: a row without a bar), and a note under the plot says why.
Figures are 990 px wide: whole on a 1280-px screen or page, and in the run page's description column beside
MLflow's sidebar.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from attnbench.analysis.pivot import JobRecord, problem_keys, problem_of, short
from attnbench.analysis.render.plot_axes import plain_ticks, size_axis, unit_for
from attnbench.analysis.render.plot_labels import launch_bound, not_run, subtitle, wrapped
from attnbench.core.roofline import bound_of
from attnbench.core.units import format_time

AXES = ("shape.seq_len", "shape.q_len", "shape.batch", "shape.heads", "shape.kv_heads", "shape.head_dim")
WIDTH_IN, DPI = 9.0, 110  # 990 px: whole beside MLflow's sidebar in a 1280-px window
PLOT_HEIGHT_IN = 5.0
NOTE_LINE_IN = 0.16  # the height of one line of notes (8 pt)
NOT_RUN_Y = 0.025  # where a job that did not run is marked: this share of the plot's height from its bottom


def numeric_axis(records: list[JobRecord]) -> str | None:
    """The one size that varied, if only one did: shapes that differ in several sizes at once (a batch-1 GQA prefill
    beside a batch-4 one) are not points on one axis, and get bars."""
    keys = problem_keys(records)
    sizes = [k for k in AXES if k in keys and all(_number(r.params.get(k)) for r in records)]
    if not sizes or (len(sizes) > 1 and _together(records, sizes)):
        return None
    return sizes[0]


def _together(records: list[JobRecord], sizes: list[str]) -> bool:
    """Whether the sizes changed only together (whole shapes swapped: `shape=long_context,gqa_prefill`)."""
    seen: dict[str, tuple] = {}
    for r in records:
        others = tuple(r.params.get(k) for k in sizes[1:])
        if seen.setdefault(r.params[sizes[0]], others) != others:
            return False
    return True


def plot_sweep(records: list[JobRecord], out_dir: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the machine
    out_dir.mkdir(parents=True, exist_ok=True)
    axis = numeric_axis(records)
    if axis is None and len(_problems(records)) > 1:
        return [_panels(records, out_dir / "latency.png", title)]
    if axis is None:
        return [_bars(records, out_dir / "latency.png", title)]
    lines = _lines(records, axis)
    plot = _Plot(records, lines, axis, title)
    paths = [plot.draw("median_us", "median per call", out_dir / "latency.png")]
    memory = _memory_bound(records)
    if not all(memory):  # compute-bound problems: useful FLOP/s against the matmul ceiling
        paths.append(plot.draw("tflops", tflops_label(records), out_dir / "tflops.png",
                               ceiling=(_first(records, "device_peak_tflops"), "measured matmul peak")))
    if any(memory):  # memory-bound ones (a decode step): bytes per second against the copy's bandwidth
        paths.append(plot.draw("gbps", "minimum bytes moved per second", out_dir / "gbps.png",
                               ceiling=(_first(records, "device_peak_gbps"), "measured bandwidth")))
    if any("peak_mem_mib" in r.metrics for r in records):
        paths.append(plot.draw("peak_mem_mib", "peak memory of one call", out_dir / "memory.png"))
    return paths


def _problems(records: list[JobRecord]) -> dict[str, list[JobRecord]]:
    keys = problem_keys(records)
    problems: dict[str, list[JobRecord]] = defaultdict(list)
    for r in records:
        problems[problem_of(r, keys)].append(r)
    return problems


def _memory_bound(records: list[JobRecord]) -> list[bool]:
    """Each problem's bound, from its own jobs."""
    return [bound_of(jobs).memory for jobs in _problems(records).values()]


def _panels(records: list[JobRecord], path: Path, title: str) -> Path:
    """Several problems and no one size to put on an axis (a kernels sweep): one panel per problem, its jobs that
    ran as bars, fastest on top, on a log scale shared by all panels; those that did not run are named in their
    panel and explained once under the figure."""
    import matplotlib.pyplot as plt

    problems = _problems(records)
    ok = [r for r in records if r.ok]
    scale, unit = unit_for("median_us", [r.median_us for r in ok] or [1.0])
    rows = [max(1, sum(j.ok for j in jobs)) for jobs in problems.values()]
    notes = not_run(records, where=False)
    text = wrapped(notes)
    notes_in = NOTE_LINE_IN * (text.count("\n") + 2) if notes else 0.0
    heights = [0.22 * n + 0.9 for n in rows]
    fig = plt.figure(figsize=(WIDTH_IN, sum(heights) + notes_in + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(problems) + 1, 1, height_ratios=[*heights, max(notes_in, 0.01)])
    fig.suptitle(f"{title}\n{subtitle(records)}", fontsize=11)
    axes = [fig.add_subplot(grid[i]) for i in range(len(problems))]
    names = sorted({r.implementation for r in records})
    color = dict(zip(names, _colors(len(names))))  # a backend keeps its colour from panel to panel
    for ax, (problem, jobs) in zip(axes, problems.items()):
        ran = sorted((j for j in jobs if j.ok), key=lambda j: j.median_us)
        labels = [_approximate_label(j.implementation, [j]) for j in ran]
        ax.barh(labels, [j.median_us / scale for j in ran], color=[color[j.implementation] for j in ran])
        for row, j in enumerate(ran):
            ax.text(j.median_us / scale, row, f" {format_time(j.median_us)}", va="center", fontsize=8)
        missing = sorted({j.implementation for j in jobs if not j.ok})
        heading = problem + (f"\ndid not run: {', '.join(missing)}" if missing else "")
        ax.set_title(heading, fontsize=9, loc="left")
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes:
        ax.set_xlim(*_shared_limits(ok, scale))
        plain_ticks(ax.xaxis, log=True)
    axes[-1].set_xlabel(f"median per call ({unit}), log scale")
    if notes:
        panel = fig.add_subplot(grid[-1])
        panel.axis("off")
        panel.text(0.01, 1, f"Did not run:\n{text}", va="top", ha="left", fontsize=8, transform=_figure_left(panel))
    return _save(fig, path)


def _shared_limits(ok: list[JobRecord], scale: float) -> tuple[float, float]:
    values = [r.median_us / scale for r in ok] or [1.0]
    return min(values) / 1.5, max(values) * 2.5  # room for the value written past the longest bar


def tflops_label(records: list[JobRecord]) -> str:
    """An approximate backend's TFLOP/s count its own formula's FLOPs, not softmax attention's useful ones."""
    if any(r.approximate for r in records):
        return "useful FLOP/s\n(dashed, approximate: their own formula's FLOPs)"  # two lines: one is taller than 5 in
    return "useful FLOP/s"


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


def _figure(notes: list[str], height_in: float = PLOT_HEIGHT_IN, heading: str = "Did not run (×):",
            after: str = ""):
    """A figure 990 px wide: the plot, and under it a panel of notes, the jobs that did not run under `heading`, then
    `after` (none without either)."""
    import matplotlib.pyplot as plt

    sections = ([f"{heading}\n{wrapped(notes)}"] if notes else []) + ([wrapped([after])] if after else [])
    text = "\n".join(sections)
    lines = text.count("\n") + 1 if text else 0
    notes_in = NOTE_LINE_IN * (lines + 1) if lines else 0.0
    fig = plt.figure(figsize=(WIDTH_IN, height_in + notes_in), layout="constrained")
    if not lines:
        return fig, fig.add_subplot()
    grid = fig.add_gridspec(2, 1, height_ratios=[height_in, notes_in])
    ax, panel = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    panel.axis("off")
    panel.text(0.01, 1, text, va="top", ha="left", fontsize=8, transform=_figure_left(panel))
    return fig, ax


def _figure_left(panel):
    """x from the figure's left edge, y in the notes panel: the notes get the figure's whole width, whatever room
    the plot's labels take on its left (a long backend name pushed them past the right edge)."""
    from matplotlib.transforms import blended_transform_factory

    return blended_transform_factory(panel.figure.transFigure, panel.transAxes)


TITLE_CHARS = 80  # a title line centred over the plot (the legend takes the figure's right third) stays inside it


def _titled(ax, title: str, records: list[JobRecord]) -> None:
    lines = [title]
    for part in subtitle(records).split(" · ") if records else []:  # broken between its parts, never inside one
        if len(lines) > 1 and len(lines[-1]) + 3 + len(part) <= TITLE_CHARS:
            lines[-1] += f" · {part}"
        elif part:
            lines.append(part)
    ax.set_title("\n".join(lines), fontsize=11)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=DPI)  # the figure's own size: no bbox_inches="tight", which may widen it
    plt.close(fig)
    return path


class _Plot:
    """One sweep's lines, drawn against its numeric axis for one metric at a time."""

    def __init__(self, records: list[JobRecord], lines: dict[str, list[JobRecord]], axis: str, title: str):
        self.records, self.lines, self.axis, self.title = records, lines, axis, title
        self.notes = not_run(records)

    def draw(self, metric: str, quantity: str, path: Path, ceiling: tuple[float | None, str] = (None, "")) -> Path:
        from matplotlib.transforms import blended_transform_factory

        fig, ax = _figure(self.notes, after=launch_bound(self.records) if metric == "median_us" else "")
        limit, limit_name = ceiling
        values = [j.metrics[metric] for jobs in self.lines.values() for j in jobs if j.ok and metric in j.metrics]
        scale, unit = unit_for(metric, values, log=metric == "median_us")
        bottom = blended_transform_factory(ax.transData, ax.transAxes)  # x in data, y in the plot's height
        xs_all: list[float] = []
        for (label, jobs), color in zip(self.lines.items(), _colors(len(self.lines))):
            timed = sorted((j for j in jobs if j.ok and metric in j.metrics), key=self._x)
            xs_all += [self._x(j) for j in jobs]
            if timed:
                # the headline method's medians (the device's time on CUDA), whatever the tables compare by
                errors = _errors([j.metrics[metric] for j in timed], [j.samples.get(j.tags.get("timing.headline", ""),
                                 []) for j in timed], scale) if metric == "median_us" else None
                style = "--" if any(j.approximate for j in timed) else "-"
                ax.errorbar([self._x(j) for j in timed], [j.metrics[metric] / scale for j in timed], yerr=errors,
                            marker="o", capsize=3, label=label, linestyle=style, color=color)
                contended = [j for j in timed if j.contended]  # timed while waiting for a core: hollow
                ax.scatter([self._x(j) for j in contended], [j.metrics[metric] / scale for j in contended], s=60,
                           facecolors="white", edgecolors=color, zorder=3)
            missing = [j for j in jobs if not j.ok]
            if missing:
                ax.scatter([self._x(j) for j in missing], [NOT_RUN_Y] * len(missing), marker="x", s=70,
                           color=color, transform=bottom, clip_on=False, zorder=3,
                           label=None if timed else f"{label}: did not run")
        if limit:
            ax.axhline(limit / scale, linestyle=":", color="gray",
                       label=f"{limit_name} ({limit / scale:.3g} {unit})")
        size_axis(ax, xs_all)
        if metric == "median_us":
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)  # a rate from zero: how far apart two lines are reads true
        plain_ticks(ax.yaxis, log=metric == "median_us")
        ax.set_xlabel(short(self.axis))
        first, *rest = quantity.split("\n")
        ax.set_ylabel("\n".join([f"{first} ({unit})", *rest]))
        _titled(ax, self.title, self.records)
        ax.grid(True, which="both", alpha=0.3)
        if any(j.contended for j in self.records if j.ok):
            ax.scatter([], [], s=60, facecolors="white", edgecolors="gray",
                       label="contended: timed while waiting for a core (no winner)")
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i].endswith("did not run")  # those last
                       or labels[i].startswith("contended"))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize="small", loc="upper left",
                  bbox_to_anchor=(1.01, 1), borderaxespad=0)
        return _save(fig, path)

    def _x(self, job: JobRecord) -> float:
        return float(job.params[self.axis])


def _bars(records: list[JobRecord], path: Path, title: str) -> Path:
    """One bar per job, its median written at its end; a job that did not run is a row without a bar that says
    its status, with why under the plot."""
    keys = problem_keys(records)
    labels = [_approximate_label(", ".join([r.implementation, *(f"{short(k)}={r.params.get(k)}" for k in keys)]),
                                 [r]) for r in records]
    ok = [r for r in records if r.ok]
    scale, unit = unit_for("median_us", [r.median_us for r in ok])
    fig, ax = _figure(not_run(records), height_in=max(3.0, 0.42 * len(records) + 1.4), heading="Did not run:")
    ax.barh(labels, [r.median_us / scale if r.ok else 0 for r in records])
    errors = _errors([r.median_us for r in ok], [r.headline_samples for r in ok], scale) if ok else None
    if errors:
        rows = [i for i, r in enumerate(records) if r.ok]
        ax.errorbar([r.median_us / scale for r in ok], rows, xerr=errors, fmt="none", capsize=3, color="black")
    above = dict(zip(map(id, ok), errors[1] if errors else [0.0] * len(ok)))  # the value is written past its bar
    for row, r in enumerate(records):
        text = f"  {format_time(r.median_us)}" if r.ok else f" {r.status} (why: below)"
        ax.text(r.median_us / scale + above[id(r)] if r.ok else 0, row, text, va="center", fontsize=9)
    ax.margins(x=0.15)  # room for the value written at the longest bar's end
    plain_ticks(ax.xaxis, log=False)
    ax.set_xlabel(f"median per call ({unit}), with its 95% interval")
    _titled(ax, title, records)
    ax.invert_yaxis()  # the sweep's order, top to bottom
    return _save(fig, path)


def _colors(count: int) -> list:
    """A colour per line, the same in every plot of the sweep (a backend keeps its colour from latency to memory);
    past the default cycle's ten, a wider map."""
    import matplotlib

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    if count <= len(cycle):
        return cycle[:count]
    many = matplotlib.colormaps["tab20"]
    return [many(i % 20) for i in range(count)]


def _errors(medians: list[float], samples: list[list[float]], scale: float = 1.0) -> list[list[float]] | None:
    """Distances from each median down and up to its bootstrap interval, from the samples it is the median of; None
    when samples are missing."""
    from attnbench.core.timing.noise import median_interval

    if not all(samples):
        return None
    intervals = [median_interval(found) for found in samples]
    return [[max(0.0, median - low) / scale for median, (low, _) in zip(medians, intervals)],
            [max(0.0, high - median) / scale for median, (_, high) in zip(medians, intervals)]]


def _first(records: list[JobRecord], metric: str) -> float | None:
    return next((r.metrics[metric] for r in records if metric in r.metrics), None)


def _number(value: str | None) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
