"""No profiler noise on the console: kineto (torch.profiler's library) writes `USDT: ... profiler_start` and
`profiler_stop` to stderr around every profiled call, and a job profiles one call to see which kernel ran."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROFILE_ONE_CALL = """
import torch
from attnbench.core.timing.profiling import profile_call
found = profile_call(lambda: torch.ones(8) @ torch.ones(8), torch.device("cpu"))
print("ops", len(found.ops))
"""


@pytest.mark.slow  # a process that imports torch (~2 s)
def test_a_profiled_call_prints_nothing_of_the_profilers_own():
    env = {"PATH": "/usr/bin:/bin"}  # no KINETO_LOG_LEVEL from the caller's environment
    proc = subprocess.run([sys.executable, "-c", PROFILE_ONE_CALL], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ops ") and int(proc.stdout.split()[1]) > 0  # it still profiled the call
    noise = [line for line in proc.stderr.splitlines() if line.startswith(("USDT:", "STAGE:"))]
    assert not noise, noise


@pytest.mark.slow  # as above
def test_a_user_who_asks_for_kinetos_log_still_gets_it():
    env = {"PATH": "/usr/bin:/bin", "KINETO_LOG_LEVEL": "0"}
    proc = subprocess.run([sys.executable, "-c", PROFILE_ONE_CALL], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("USDT:") for line in proc.stderr.splitlines()), proc.stderr[-2000:]
