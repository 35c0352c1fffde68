"""Numbers as a reader wants them: each value in its own unit, three significant digits (as `:.3g`, trailing zeros
dropped), never in exponent notation."""

from __future__ import annotations

import math


def format_time(us: float | None) -> str:
    """12.3 µs, 12.3 ms, 1.23 s: the unit chosen per value."""
    if us is None:
        return ""
    us = float(f"{us:.3g}")  # rounded first, so that 999.96 µs reads 1 ms, not 1e+03 µs
    for scale, unit in ((1e6, "s"), (1e3, "ms")):
        if us >= scale:
            return f"{_three_digits(us / scale)} {unit}"
    return f"{_three_digits(us)} µs"


def format_memory(mib: float | None) -> str:
    """512 MiB, 1.5 GiB."""
    if mib is None:
        return ""
    mib = float(f"{mib:.3g}")  # as format_time
    return f"{_three_digits(mib / 1024)} GiB" if mib >= 1024 else f"{_three_digits(mib)} MiB"


def format_tflops(value: float | None) -> str:
    """140, 12.3, 0.00137; below a GFLOP/s, `<0.001` (a tiny CPU problem's 0.00000411 says no more)."""
    return format_rate(value)


def format_rate(value: float | None) -> str:
    """A throughput in a column that names its unit (TFLOP/s, GB/s): three digits, `<0.001` below that."""
    if value is None:
        return ""
    return "<0.001" if 0 < value < 0.001 else _three_digits(value)


def format_flops(tflops: float | None) -> str:
    """Useful FLOP/s with its unit scaled: `140 TFLOP/s`, `3.2 GFLOP/s` (a CPU), `726 MFLOP/s`."""
    return _scaled(tflops, ((1, "TFLOP/s"), (1e-3, "GFLOP/s"), (1e-6, "MFLOP/s"), (1e-9, "kFLOP/s")))


def format_bandwidth(gbps: float | None) -> str:
    """Bytes per second with their unit scaled: `3.3 TB/s` (a GPU's decode), `850 GB/s`, `12.3 MB/s` (a CPU's tiny
    problem). Decimal units, as the GB/s of `gbps` and of bandwidth datasheets."""
    return _scaled(gbps, ((1e3, "TB/s"), (1, "GB/s"), (1e-3, "MB/s"), (1e-6, "kB/s")))


def _scaled(value: float | None, units: tuple[tuple[float, str], ...]) -> str:
    """The value in the first unit (largest first) it fills, else the last."""
    if value is None:
        return ""
    scale, unit = next(((s, u) for s, u in units if value >= s), units[-1])
    return f"{_three_digits(value / scale)} {unit}"


def format_percent(value: float | None) -> str:
    """`27%`, `5.5%`, `0.012%`: two digits below 10%."""
    if value is None:
        return ""
    return f"{value:.0f}%" if value >= 10 else f"{float(f'{value:.2g}'):g}%"


def _three_digits(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    value = float(f"{value:.3g}")  # 9.996 → 10.0: its digits counted after rounding
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
