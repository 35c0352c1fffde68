"""Timing: how a callable's latency is measured (timer), summarised (stats) and told apart from another's (noise),
and what the host and the GPU did meanwhile (watch). Import the module you need: `noise` and `stats` load no torch,
so a report can judge samples without it."""
