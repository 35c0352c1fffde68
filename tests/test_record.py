"""The Record: what result.json holds, round-tripped; files from before its schema still load; a damaged one is
refused in one line, and the others of its sweep are read."""

from __future__ import annotations

import json

import pytest

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
    assert record.dir == str(tmp_path)  # where the file is, not the folder it was written in


def test_a_result_names_its_own_folder_so_that_the_folder_can_move(tmp_path):
    written_in, moved_to = tmp_path / "here" / "0", tmp_path / "there" / "0"
    record = Record.begun("0", "math", written_in, {}, {}).ended(Record(Status.unsupported, "CUDA only"))
    results.write(written_in, record)
    assert json.loads((written_in / results.RESULT_FILE).read_text())["dir"] == "."
    moved_to.parent.mkdir()
    written_in.rename(moved_to)
    assert results.read(moved_to).dir == str(moved_to)


@pytest.mark.parametrize("change, why", [
    ({"metrics": {}}, "an `ok` result without its median (metrics.median_us is None)"),
    ({"metrics": {"median_us": "fast"}}, "metrics.median_us is 'fast', not a number"),
    ({"status": "finished"}, "status 'finished' is not one of ok, "),
    ({"id": ""}, "id is '', not an id"),
    ({"samples": {"wall": [1.0, "x"]}}, "samples.wall is [1.0, 'x'], not a list of numbers"),
    ({"pid": "1"}, "pid is '1', not an integer"),
    ({"schema": 99}, "schema 99: this attnbench reads schemas 1 to"),
])
def test_a_damaged_result_is_refused_in_one_line_naming_the_file(tmp_path, change, why):
    (tmp_path / results.RESULT_FILE).write_text(json.dumps(OLD_RESULT | change))
    with pytest.raises(ValueError) as refused:  # results.DamagedResult
        results.read(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path / results.RESULT_FILE}: ") and why in str(refused.value)
    assert "\n" not in str(refused.value)


def test_one_damaged_result_does_not_stop_the_others_from_being_read(tmp_path):
    for job, text in {"0": json.dumps(OLD_RESULT), "1": '{"status": "ok", "id": "trunc',
                      "2": json.dumps(OLD_RESULT | {"id": "def", "job": "2"})}.items():
        (tmp_path / job).mkdir()
        (tmp_path / job / results.RESULT_FILE).write_text(text)
    (tmp_path / "3" / results.RESULT_FILE).mkdir(parents=True)  # not a file: said, not skipped in silence
    found = results.read_folder(tmp_path)
    assert [(r.id, r.dir) for r in found.records] == [("abc", str(tmp_path / "0")), ("def", str(tmp_path / "2"))]
    assert [(d.path, d.why) for d in found.damaged] == [
        (tmp_path / "1" / results.RESULT_FILE, "not JSON (Unterminated string starting at: line 1, column 24)"),
        (tmp_path / "3" / results.RESULT_FILE, "not a regular file")]
    assert found.problem(tmp_path).startswith("2 result files cannot be read: 1/result.json (not JSON")


def test_a_result_file_that_links_out_of_the_folder_is_not_read(tmp_path):
    elsewhere, sweep = tmp_path / "elsewhere", tmp_path / "sweep"
    elsewhere.mkdir()
    (elsewhere / results.RESULT_FILE).write_text(json.dumps(OLD_RESULT))
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / results.RESULT_FILE).symlink_to(elsewhere / results.RESULT_FILE)
    (sweep / "1").symlink_to(elsewhere, target_is_directory=True)
    found = results.read_folder(sweep)
    assert found.records == [] and [d.path.parent.name for d in found.damaged] == ["0", "1"]
    assert all(f"a link to {elsewhere / results.RESULT_FILE}, outside {sweep}" in d.why for d in found.damaged)


def test_only_error_timeout_and_crashed_fail_the_command():
    assert {s for s in Status if s.failed} == {Status.error, Status.timeout, Status.crashed}
