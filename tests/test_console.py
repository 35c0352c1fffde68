"""What a sweep prints: the end-of-sweep table within 100 columns, and one progress line per job and phase."""

from __future__ import annotations

import json
import random
import re

import pytest

from attnbench.analysis.pivot import JobRecord
from attnbench.analysis.render.console import WIDTH, jobs_table, render
from attnbench.core.units import format_memory, format_tflops, format_time
from conftest import SMALL_SWEEP

LONG_REASON = ("backend=cudnn: Flash attention kernel not used because: the head dimension is not a multiple of "
               "eight | cuDNN attention requires compute capability nine and a head dimension that is a multiple "
               "of eight, and refused this problem")


def test_each_time_carries_its_own_unit_and_no_number_reads_in_exponent_notation():
    assert [format_time(t) for t in (12.34, 12_340.0, 1_234_000.0)] == ["12.3 µs", "12.3 ms", "1.23 s"]
    assert format_time(999.96) == "1 ms" and format_time(1.5e9) == "1500 s"  # never `1e+03 µs`
    assert [format_tflops(r) for r in (140.4, 12.34, 0.001374, 1234.5, 4.1e-6)] == [
        "140", "12.3", "0.00137", "1230", "<0.001"]
    assert [format_memory(m) for m in (512.0, 1536.0)] == ["512 MiB", "1.5 GiB"]


def _gpu_job(name: str, seq_len: int, median_us: float, status: str = "ok", reason: str = "") -> JobRecord:
    rng = random.Random(seq_len + len(name))
    samples = [rng.gauss(median_us, median_us * 0.01) for _ in range(31)]
    backend, _, compiled = name.partition("+")
    metrics = {"median_us": median_us, "wall_median_us": median_us * 1.2, "tflops": 150.0,
               "peak_mem_mib": seq_len / 4} if status == "ok" else {}
    return JobRecord(name, {"backend.name": backend, "compile": str(bool(compiled)).lower(),
                            "shape.seq_len": str(seq_len), "shape.q_len": str(seq_len), "model.name": "attention",
                            "mode": "fwd", "dtype": "bfloat16"}, metrics,
                     {"status": status, "reason": reason, "kernel": "efficient (dense mask)", "device": "cuda",
                      "timing.headline": "events", "problem": f"B8 H32 S{seq_len} D128 causal"},
                     {"events": samples} if status == "ok" else {})


def test_a_gpu_sweep_fits_100_columns_with_whole_numbers_and_whole_words():
    jobs = [job for seq_len in (1024, 16384) for job in (
        _gpu_job("math", seq_len, seq_len * 2.5), _gpu_job("efficient+compile", seq_len, seq_len * 0.25),
        _gpu_job("cudnn", seq_len, 0, status="unsupported", reason=LONG_REASON))]
    text = render(jobs_table(jobs, "sweep"), show=False)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    header = next(line for line in lines if line.lstrip().startswith("run")).split()
    # what varied and what was measured; q_len repeats seq_len, model/mode/dtype are the same for every job
    assert header[:3] == ["run", "seq_len", "status"] and "q_len" not in header and "model" not in header
    assert "wall" in header and "peak" in header  # wall time differs from the headline (events) here
    assert "every job: model attention, mode fwd, dtype bfloat16, on cuda" in " ".join(text.split())
    for job in jobs:
        if job.ok:
            assert format_time(job.median_us) in text and format_time(job.metrics["wall_median_us"]) in text
    assert "40.96 ms" not in text and "41 ms" in text  # 16384 × 2.5 µs, three digits
    assert text.count("[1]") == 3  # both cudnn rows point to one note, given once below the table
    assert set(LONG_REASON.split()) <= set(text.split())  # the reason in full, wrapped between words


@pytest.fixture(scope="module")
def sweep(small_sweep):
    """A real tiny CPU sweep over backends × sequence lengths (conftest's, which test_report reads too): 6 jobs,
    math and naive ok, efficient unsupported (CUDA only) at both lengths."""
    return small_sweep.stdout, small_sweep.folder / "multirun"


def test_the_table_is_printed_as_saved_and_fits_100_columns_with_reasons_below(sweep):
    stdout, folder = sweep
    text = (folder / "summary.txt").read_text()
    assert text.strip() and text in stdout  # stdout is not a terminal: 100 columns, the same text as saved
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    header = next(line for line in lines if line.lstrip().startswith("run")).split()
    assert header[:3] == ["run", "seq_len", "status"]  # seq_len varied; q_len, equal to it, is not repeated
    for constant in ("model", "mode", "compile", "backend", "wall", "peak"):  # the same for all, or not measured
        assert constant not in header, constant
    assert "every job: model attention, mode fwd, dtype float16, on cpu" in " ".join(text.split())
    reason = json.loads((folder / "4" / "result.json").read_text())["reason"]  # efficient, seq_len 16
    assert reason and f"[1] {reason}" in text
    rows = [line.split() for line in lines if line.split()[:1] in (["math"], ["naive"], ["efficient"])]
    assert [row[:3] for row in rows] == [["math", "16", "ok"], ["math", "32", "ok"], ["naive", "16", "ok"],
                                         ["naive", "32", "ok"], ["efficient", "16", "unsupported"],
                                         ["efficient", "32", "unsupported"]]
    assert all(re.fullmatch(r"[\d.]+", row[3]) and row[4] in ("µs", "ms", "s") for row in rows[:4])
    assert [row[-1] for row in rows[4:]] == ["[1]", "[1]"]


def test_each_job_shows_its_number_of_all_and_every_phase_in_order(sweep):
    stdout, _ = sweep
    progress = [line for line in stdout.splitlines() if line.startswith("job ")]
    heads = [line.split(" · ")[0] for line in progress]
    assert list(dict.fromkeys(heads)) == [f"job {n}/6" for n in range(1, 7)]  # in order, never mixed
    first = [line.split(" · ") for line in progress if line.startswith("job 1/6 ")]
    assert {overrides for _, overrides, _ in first} == {  # the command line's, with this job's values
        "backend=math shape=tiny device=cpu shape.seq_len=16 " + " ".join(SMALL_SWEEP[4:])}
    assert [phase for *_, phase in first][:-1] == ["planning", "building", "first call", "checking the output",
                                                   "verifying the kernel", "timing"]
    assert first[-1][-1].startswith("ok after ")
    # efficient is refused while the job is planned: no other phase, then its status
    unsupported = [line.split(" · ")[-1] for line in progress if line.startswith("job 5/6 ")]
    assert unsupported[0] == "planning" and unsupported[1].startswith("unsupported after ") and len(unsupported) == 2
