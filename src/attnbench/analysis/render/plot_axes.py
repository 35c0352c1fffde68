"""Axes a person reads at a glance: one unit per axis, chosen from the data (µs or ms, GFLOP/s or TFLOP/s), and tick
labels as plain numbers — never matplotlib's `1e6` offset or a `6e+04` label."""

from __future__ import annotations

import math
import statistics

# The metric's own unit first (the one it is recorded in: µs, TFLOP/s, GB/s, MiB), then (scale, unit) from the
# largest: a value v of the metric reads v / scale in that unit.
UNITS = {
    "median_us": ((1e6, "s"), (1e3, "ms"), (1.0, "µs")),
    "tflops": ((1.0, "TFLOP/s"), (1e-3, "GFLOP/s"), (1e-6, "MFLOP/s")),
    "gbps": ((1e3, "TB/s"), (1.0, "GB/s"), (1e-3, "MB/s")),
    "peak_mem_mib": ((1024.0, "GiB"), (1.0, "MiB")),
}


def unit_for(metric: str, values: list[float], log: bool = True) -> tuple[float, str]:
    """(scale, unit) for an axis: on a log axis, the one that puts the data's middle value at 1 or more (30 µs–4 ms
    reads in µs; 0.8–60 ms in ms); on a linear axis from zero, the one that puts its largest value at 1 or more (0.15
    to 6.8 GB/s in GB/s, ticks 0 to 7)."""
    choices = UNITS[metric]
    positive = [v for v in values if v > 0]
    if not positive:
        return choices[-1]
    reference = statistics.median(positive) if log else max(positive)
    return next(((scale, unit) for scale, unit in choices if reference >= scale), choices[-1])


def plain(value: float) -> str:
    """A tick label: up to three significant digits, no exponent (60000, 0.0125, 1.5)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{round(value, digits):.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def plain_ticks(axis, log: bool) -> None:
    """Plain labels on a (log or linear) axis. On a log axis of a few decades some minor ticks are labelled too,
    else one or two powers of ten would be all the numbers on it: the 2s, 3s and 5s below 1.5 decades, the 2s and
    5s below 3."""
    from matplotlib import ticker

    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: plain(value)))
    if not log:
        return
    low, high = sorted(axis.get_view_interval())
    decades = math.log10(high / low) if low > 0 else math.inf
    marks = (2, 3, 5) if decades < 1.5 else (2, 5) if decades < 3 else ()
    axis.set_minor_formatter(ticker.FuncFormatter(lambda value, _: plain(value) if _leading(value) in marks else ""))


def _leading(value: float) -> int | None:
    """The leading digit of a minor tick of a log axis (20 → 2, 0.05 → 5)."""
    if value <= 0:
        return None
    leading = value / 10 ** math.floor(math.log10(value))
    return round(leading) if abs(leading - round(leading)) < 0.01 else None


def size_axis(ax, values: list[float]) -> None:
    """The x axis of sizes: log₂ where they double (64, 128, 256...), each size a labelled tick; plain otherwise."""
    from matplotlib import ticker

    distinct = sorted(set(values))
    if not distinct:
        return
    low, high = distinct[0], distinct[-1]
    if doubling(distinct):
        ax.set_xscale("log", base=2)
        ax.set_xticks(distinct, [plain(x) for x in distinct])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlim(low / 1.15, high * 1.15)  # the first and last sizes (and their ×) off the frame
    else:
        plain_ticks(ax.xaxis, log=False)
        pad = 0.05 * (high - low) or 0.5
        ax.set_xlim(low - pad, high + pad)


def doubling(values: list[float]) -> bool:
    distinct = sorted(set(values))
    return len(distinct) > 2 and all(b / a >= 1.9 for a, b in zip(distinct, distinct[1:]) if a > 0)
