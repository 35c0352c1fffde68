"""The Record: what result.json holds, round-tripped; files from before its schema still load."""

from __future__ import annotations

import json

from attnbench.core.record import SCHEMA, Record, Status
from attnbench.store import results

OLD_RESULT = {  # a result.json as attnbench wrote it before the schema field (schema 1)
    "id": "abc", "job": "0", "name": "math", "dir": "/somewhere/0", "host": "h", "pid": 1, "started_ms": 1,
    "ended_ms": 2, "status": "ok", "reason": "", "params": {"backend.name": "math"}, "metrics": {"median_us": 3.0},
    "tags": {"case": "c"}, "samples": {"wall": [3.0]}, "traceback": None}


def test_a_record_round_trips_through_result_json(tmp_path):
    record = Record.begun("3", "flash", tmp_path, {"seed": "0"}, {"case": "k"}).ended(
        Record(Status.wrong, "off", metrics={"median_us": 1.5}, tags={"kernel": "flash"}, samples={"wall": [1.5]}))
    results.write(tmp_path, record)
    saved = json.loads((tmp_path / results.RESULT_FILE).read_text())
    assert saved["schema"] == SCHEMA and saved["status"] == "wrong"
    assert results.read(tmp_path) == record
    assert record.tags == {"case": "k", "kernel": "flash"} and record.ended_ms >= record.started_ms


def test_a_result_from_before_the_schema_loads(tmp_path):
    (tmp_path / results.RESULT_FILE).write_text(json.dumps(OLD_RESULT))
    record = results.read(tmp_path)
    assert record.status is Status.ok and record.status == "ok" and record.metrics == {"median_us": 3.0}


def test_only_error_timeout_and_crashed_fail_the_command():
    assert {s for s in Status if s.failed} == {Status.error, Status.timeout, Status.crashed}
