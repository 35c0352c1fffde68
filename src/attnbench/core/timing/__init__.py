"""Timing: how a callable's latency is measured (timer) and summarised (stats)."""

from attnbench.core.timing.stats import Stats
from attnbench.core.timing.timer import Measurement, first_call, measure, methods_for

__all__ = ["Measurement", "Stats", "first_call", "measure", "methods_for"]
