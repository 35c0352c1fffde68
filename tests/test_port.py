"""`make ui` and `make server` on a port they cannot use: one line naming the port and who holds it, exit 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from attnbench.store.tracking.port import port_holder, port_problem

REPO = Path(__file__).resolve().parents[1]


def _listening() -> socket.socket:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken


def test_a_busy_port_is_one_line_naming_the_port_its_holder_and_the_next_one():
    with _listening() as taken:
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "attnbench.store.tracking.port", str(port), "ui"],
                              capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"attnbench: port {port} on 127.0.0.1 cannot be used (")
    assert f"held by pid {os.getpid()} (" in line  # this test's process, found through /proc
    assert line.endswith(f"make ui PORT={port + 1}")


def test_the_holder_is_left_out_where_proc_does_not_say(tmp_path):
    with _listening() as taken:
        assert port_holder(taken.getsockname()[1], proc=tmp_path) is None  # no /proc (macOS): the port alone


def test_a_port_that_is_not_a_number_is_refused_before_anything_binds():
    for text in ("abc", "0", "65536", ""):
        assert port_problem(text, "ui") == (f"PORT={text!r} is not a port: expected a whole number from 1 to 65535, "
                                            "e.g. make ui PORT=5001")


def test_make_ui_serves_and_links_on_the_chosen_port():
    planned = subprocess.run(["make", "-n", "ui", "PORT=5123"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    assert "attnbench.store.tracking.port '5123' ui" in planned  # checked before anything starts
    assert "--base http://127.0.0.1:5123" in planned and "--port 5123" in planned
    assert "5000" not in planned
