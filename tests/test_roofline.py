"""Memory-bound problems read in GB/s and the share of the bandwidth, compute-bound ones in TFLOP/s: the bound of a
problem (the roofline), and the report's tables that show it, with each job's error and first-call time."""

from __future__ import annotations

import csv
import io
import random

from attnbench.analysis.pivot import JobRecord, summarise
from attnbench.analysis.render.console import WIDTH, jobs_table, render
from attnbench.analysis.render.csv_table import to_csv
from attnbench.analysis.render.markdown import markdown
from attnbench.core.roofline import bound_of

# An H200's ceilings as a job records them (bf16 matmul, a copy): the ridge is ~160 FLOP/byte.
H200 = {"device_peak_tflops": 700.0, "device_peak_gbps": 4400.0, "datasheet_tflops": 989.4, "datasheet_gbps": 4800.0}


def _job(backend: str, seq_len: int, q_len: int, median_us: float, intensity: float, ceilings: dict | None = None,
         status: str = "ok", approximate: bool = False, extra: dict | None = None, seed: int = 0) -> JobRecord:
    rng = random.Random(seed)
    samples = [rng.gauss(median_us, median_us * 0.005) for _ in range(51)]
    gbyte, median_us = 0.1, median_us or 1.0  # a job that did not run: its numbers are dropped below
    metrics = {"median_us": median_us, "gflop": intensity * gbyte, "gbyte": gbyte, "arith_intensity": intensity,
               "tflops": intensity * gbyte / median_us * 1e3, "gbps": gbyte / median_us * 1e6,
               "rel_l2_err": 0.4 if approximate else 2.1e-4, "first_call_s": 0.8} | (ceilings or {}) | (extra or {})
    for source in ("device_peak", "datasheet"):  # the shares the job records of the ceilings it has
        for kind in ("gbps", "tflops"):
            if f"{source}_{kind}" in metrics:
                metrics[f"pct_{source}_{kind}"] = 100 * metrics[kind] / metrics[f"{source}_{kind}"]
    tags = {"status": status, "reason": "" if status == "ok" else "no kernel for this", "timing.headline": "events",
            "kernel": backend, "device": "cuda", "approximate": str(approximate).lower()}
    return JobRecord(backend, {"backend.name": backend, "compile": "false", "shape.seq_len": str(seq_len),
                               "shape.q_len": str(q_len), "dtype": "bfloat16", "mode": "fwd"},
                     metrics if status == "ok" else {}, tags, {"events": samples} if status == "ok" else {})


def _decode_sweep(ceilings: dict | None) -> list[JobRecord]:
    """Decode steps (q_len 1, 4 FLOP/byte) over two cache lengths: cudnn ahead of flash, linear approximate and
    faster still, efficient refused."""
    return [job for seq_len in (4096, 8192) for job in (
        _job("flash", seq_len, 1, seq_len / 20, 4.0, ceilings, seed=seq_len + 1),
        _job("cudnn", seq_len, 1, seq_len / 40, 4.0, ceilings, seed=seq_len + 2),
        _job("linear", seq_len, 1, seq_len / 80, 2.0, ceilings, approximate=True, seed=seq_len + 3),
        _job("efficient", seq_len, 1, 0, 4.0, ceilings, status="unsupported"))]


def test_a_problem_below_the_ridge_is_memory_bound_and_one_above_it_compute_bound():
    decode = bound_of([_job("flash", 8192, 1, 50, 4.0, H200)])
    assert decode.memory and decode.unit == "GB/s" and "below the ridge of 159 FLOP/byte (measured" in decode.why
    prefill = bound_of([_job("flash", 8192, 8192, 5000, 2048.0, H200)])
    assert not prefill.memory and prefill.unit == "TFLOP/s"
    # the datasheet's ridge (206) where nothing was measured: 180 FLOP/byte is below it
    datasheet = {k: v for k, v in H200.items() if k.startswith("datasheet")}
    assert bound_of([_job("flash", 1024, 1024, 50, 180.0, datasheet)]).memory


def test_without_ceilings_only_a_decode_step_is_memory_bound():
    assert bound_of([_job("math", 64, 1, 20, 4.0)]).memory  # a CPU: no ceiling, but q_len 1
    square = bound_of([_job("math", 64, 64, 20, 4.0)])
    assert not square.memory and "no ceilings known" in square.why


def test_an_approximate_backends_own_intensity_does_not_decide_the_bound():
    jobs = [_job("linear", 8192, 8192, 50, 1.0, H200, approximate=True), _job("flash", 8192, 8192, 500, 2048.0, H200)]
    assert not bound_of(jobs).memory


def test_the_console_table_reads_a_decode_sweep_in_gb_per_s_with_the_share_of_the_bandwidth():
    text = render(jobs_table(_decode_sweep(H200), "decode"), show=False)
    header = next(line for line in text.splitlines() if line.lstrip().startswith("run")).split()
    assert "GB/s" in header and "TFLOP/s" not in header and "%" in header
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    flash = next(line for line in text.splitlines() if line.split()[:2] == ["flash", "8192"])
    gbps = 0.1 / (8192 / 20) * 1e6  # 244 GB/s, 5.5% of the measured copy's 4400
    assert "244" in flash.split() and "5.5%" in flash.split()


def test_the_report_gives_each_problem_its_winner_throughput_share_error_and_first_call():
    jobs = _decode_sweep(H200)
    jobs[1].metrics["compile_s"] = 12.5  # a kernel compiled at its first call (a JIT backend)
    text = markdown(summarise(jobs), "decode")
    rows = [line for line in text.splitlines() if line.startswith("| seq_len=")]
    header = next(line for line in text.splitlines() if line.startswith("| problem | run"))
    assert header == ("| problem | run | median | speedup | throughput | % of peak | error vs float64 | first call "
                      "| compile |")
    cudnn = next(row for row in rows if "| **cudnn** |" in row and row.startswith("| seq_len=4096"))
    cells = [c.strip() for c in cudnn.split("|")[1:-1]]
    assert cells[0] == "seq_len=4096 · memory-bound" and cells[2] == "102 µs"  # 0.1 GB in 102.4 µs
    assert cells[4] == "977 GB/s" and cells[5] == "22%" and cells[6] == "0.00021"
    assert cells[7] == "800 ms" and cells[8] == "12.5 s"
    linear = next(row for row in rows if "| linear |" in row and row.startswith("| seq_len=4096"))
    assert "approximate" in linear and "**linear**" not in text  # faster, but never the winner
    efficient = next(row for row in rows if "| efficient |" in row)
    assert "unsupported" in efficient
    assert "TFLOP/s" not in "\n".join(rows)


def test_the_csv_says_which_throughput_each_job_is_read_by():
    prefill = [_job("flash", 8192, 8192, 500, 2048.0, H200, seed=1), _job("cudnn", 8192, 8192, 400, 2048.0, H200)]
    rows = list(csv.DictReader(io.StringIO(to_csv(_decode_sweep(H200) + prefill))))
    assert {(r["shape.q_len"], r["bound"]) for r in rows} == {("1", "memory"), ("8192", "compute")}


def test_the_compile_column_is_left_out_where_no_job_compiled():
    text = markdown(summarise(_decode_sweep(None)), "decode")
    header = next(line for line in text.splitlines() if line.startswith("| problem | run"))
    assert header == "| problem | run | median | speedup | throughput | error vs float64 | first call |"


def test_a_description_too_long_for_the_per_job_table_keeps_the_pivot():
    from attnbench.analysis.sweep_report import _fit, _summary

    jobs = [job for seq_len in range(1024, 1024 + 64 * 40, 64) for job in (
        _job("flash", seq_len, 1, seq_len / 20, 4.0, H200, seed=seq_len),
        _job("cudnn", seq_len, 1, seq_len / 40, 4.0, H200, seed=seq_len + 1))]
    problems = summarise(jobs)
    whole = _summary(problems, jobs, "decode", None, None, [], "run")
    assert len(whole) > 8000  # 80 jobs: the per-job table alone is past what MLflow keeps of a description
    shorter = _summary(problems, jobs, "decode", None, None, [], "run", kernel_table=False)
    assert len(shorter) <= 8000 and _fit(shorter, problems) == shorter
    assert "| problem&emsp; | flash&emsp; | cudnn&emsp; | winner&emsp; |" in shorter and "side by side" in shorter


def test_the_ui_view_shows_gb_per_s_for_a_memory_bound_sweep():
    from types import SimpleNamespace

    from attnbench.analysis.view import columns

    def run(job: JobRecord):
        return SimpleNamespace(info=SimpleNamespace(run_name=job.name),
                               data=SimpleNamespace(params=job.params, metrics=job.metrics, tags=job.tags))

    decode = columns([run(job) for job in _decode_sweep(H200)])
    assert "metrics.`gbps`" in decode and "metrics.`tflops`" not in decode
    prefill = columns([run(_job("flash", 8192, 8192, 500, 2048.0, H200)), run(_job("cudnn", 8192, 8192, 400,
                                                                                      2048.0, H200, seed=2))])
    assert "metrics.`tflops`" in prefill and "metrics.`gbps`" not in prefill


def test_the_console_table_reads_a_slow_cpus_flops_in_a_unit_it_fills():
    # a CPU's prefill: ~1 GFLOP/s, which in a TFLOP/s column read 0.00104
    jobs = [_job("math", 16, 16, 10e6, 128.0, seed=1), _job("flash", 16, 16, 12e6, 128.0, seed=2)]
    text = render(jobs_table(jobs, "seed"), show=False)
    header = next(line for line in text.splitlines() if line.lstrip().startswith("run")).split()
    assert "GFLOP/s" in header and "TFLOP/s" not in header
    flash = next(line for line in text.splitlines() if line.split()[:1] == ["flash"])
    assert "1.07" in flash.split()  # 12.8 GFLOP in 12 s
