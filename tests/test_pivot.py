"""The sweep pivot and the plots from job records: problems, winners, noise-aware speedups, CSV, PNGs."""

from __future__ import annotations

import csv
import io
import random
import re

from attnbench.analysis.pivot import JobRecord, summarise
from attnbench.analysis.render.csv_table import to_csv
from attnbench.analysis.render.markdown import markdown


def _job(backend: str, seq_len: int, median: float, spread: float = 1.0, status: str = "ok", compile: bool = False,
         seed: int = 0) -> JobRecord:
    rng = random.Random(seed)
    samples = sorted(rng.gauss(median, spread) for _ in range(101))
    metrics = {"median_us": samples[50], "tflops": 1.0} if status == "ok" else {"job_s": 0.1}
    return JobRecord(name=backend, params={"backend.name": backend, "shape.seq_len": str(seq_len),
                                            "compile": str(compile).lower(), "timing.min_reps": "10"},
                     metrics=metrics, tags={"status": status, "timing.headline": "events", "reason": ""},
                     samples={"events": samples} if status == "ok" else {})


def test_rows_are_problems_and_the_winner_is_claimed_only_beyond_noise():
    records = [_job("math", 512, 1000, seed=1), _job("flash", 512, 100, spread=5, seed=2),
               _job("cudnn", 512, 101, spread=5, seed=3),
               _job("math", 1024, 4000, seed=4), _job("flash", 1024, 400, seed=5), _job("cudnn", 1024, 300, seed=6)]
    problems = summarise(records)
    assert [p.label for p in problems] == ["seq_len=512", "seq_len=1024"]
    assert problems[0].winner == "no winner: flash ~ cudnn within noise"  # 1% apart, samples scatter by 5%
    assert problems[1].winner == "cudnn (1.33× over flash)"
    assert problems[0].baseline.params["backend.name"] == "math"  # the slowest of the problem


def test_the_pivot_shows_medians_speedups_ties_and_statuses():
    records = [_job("math", 512, 1000, seed=1), _job("flash", 512, 100, seed=2),
               _job("efficient", 512, 0, status="unsupported"), _job("naive", 512, 1100, spread=400, seed=3)]
    text = markdown(summarise(records), "seqlen")
    header, _, row = text.splitlines()[2:5]
    assert header == "| problem | math | flash | efficient | naive | winner |"
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "1 ms ~"  # math is within the noise of the baseline (the slowest, naive)
    assert cells[2].startswith("99.8 µs 1") and cells[2].endswith("×") and cells[3] == "unsupported"
    assert "within noise" in text


def test_a_named_baseline_is_used_where_it_ran():
    records = [_job("math", 512, 1000, seed=1), _job("flash", 512, 100, seed=2)]
    (problem,) = summarise(records, baseline_backend="flash")
    assert problem.baseline.params["backend.name"] == "flash"
    assert "1 ms 0.0998×" in markdown([problem], "t", "flash")  # math is 10× slower than the baseline


def test_the_csv_has_one_row_per_job_with_the_varied_params_and_every_metric():
    records = [_job("math", 512, 1000), _job("flash", 1024, 100), _job("efficient", 512, 0, status="unsupported")]
    rows = list(csv.DictReader(io.StringIO(to_csv(records))))
    assert [r["backend.name"] for r in rows] == ["math", "flash", "efficient"]
    assert "timing.min_reps" not in rows[0]  # it did not vary
    assert rows[2]["status"] == "unsupported" and rows[2]["median_us"] == "" and float(rows[0]["median_us"]) > 0


def test_plots_are_drawn_for_what_varied(tmp_path):
    from attnbench.analysis.render.plots import numeric_axis, plot_sweep

    over_lengths = [_job(b, s, 10.0 * s / 512 * (1 if b == "flash" else 3), seed=i)
                    for i, (b, s) in enumerate((b, s) for b in ("flash", "math") for s in (512, 1024, 2048))]
    for r in over_lengths:
        r.metrics |= {"peak_mem_mib": 8.0, "device_peak_tflops": 700.0}
    over_lengths.append(_job("math", 4096, 0, status="oom"))
    assert numeric_axis(over_lengths) == "shape.seq_len"
    paths = plot_sweep(over_lengths, tmp_path / "plots", "seqlen")
    assert [p.name for p in paths] == ["latency.png", "tflops.png", "memory.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 10_000 for p in paths)

    no_axis = [_job("math", 512, 100), _job("flash", 512, 10)]
    assert numeric_axis(no_axis) is None
    assert [p.name for p in plot_sweep(no_axis, tmp_path / "bars", "seed")] == ["latency.png"]


def test_a_backends_own_field_is_no_variation_unless_it_varies_among_its_jobs():
    from attnbench.analysis.pivot import varied

    flex = _job("flex", 512, 80)
    flex.params["backend.block_size"] = "128"
    others = [_job("flash", 512, 90), _job("cudnn", 512, 50)]
    assert varied([flex, *others]) == ["backend.name"]  # absent elsewhere: not a column of its own
    other_flex = _job("flex", 512, 70)
    other_flex.params["backend.block_size"] = "64"
    assert varied([flex, other_flex, *others]) == ["backend.name", "backend.block_size"]


def test_a_launch_bound_problem_is_compared_by_wall_time_with_the_kernels_beside_it():
    # Events say compiled is faster, but they time the host's gaps; per call in a Python loop it is slower.
    eager, compiled = _job("default", 128, 100, seed=1), _job("default", 128, 80, compile=True, seed=2)
    for job, wall in ((eager, 110.0), (compiled, 130.0)):
        job.tags["launch_bound"] = "events far above the kernels: launch-bound events"
        job.samples["wall"] = [wall + 0.01 * i for i in range(-50, 51)]
        job.metrics |= {"wall_median_us": wall, "kernel_us": 27.0}
    problems = summarise([eager, compiled])
    assert problems[0].winner == "default (1.18× over default+compile)"
    text = markdown(problems, "csa")
    assert "launch-bound, so compared by wall time per call" in text
    assert "default 27 µs, default+compile 27 µs" in text


def test_a_winner_over_a_job_whose_timing_was_unstable_says_so():
    math, flash = _job("math", 512, 1000, seed=1), _job("flash", 512, 300, seed=2)
    math.tags["timing.unstable"] = "events cv=0.210"
    (problem,) = summarise([math, flash])
    assert problem.winner == "flash (3.34× over math); timing unstable: math events cv=0.210"


def test_approximate_and_contended_jobs_are_never_winners_nor_speedups():
    from attnbench.analysis.pivot import ratio, speedup, winners_line

    math, flash = _job("math", 512, 1000, seed=1), _job("flash", 512, 300, seed=2)
    linear = _job("linear", 512, 100, seed=3)  # the fastest: not softmax attention
    linear.tags["approximate"] = "true"
    linear.metrics["rel_l2_err"] = 0.52
    cudnn = _job("cudnn", 512, 50, seed=4)  # faster still, but timed while waiting for a core
    cudnn.tags["contended"] = "its threads waited for a core 40% of the time"
    (problem,) = summarise([math, flash, linear, cudnn])
    assert problem.winner == "flash (3.34× over math)"
    assert re.fullmatch(r"approximate \(not softmax, ranked apart\): linear [\d.]+ µs, error 0.52 vs softmax",
                        problem.approximate)
    assert speedup(problem.baseline, linear) == "" and speedup(problem.baseline, cudnn) == ""
    line = winners_line([problem])
    assert line.startswith("**Winner: flash (3.34× over math)** · approximate") and "cudnn" not in line
    text = markdown([problem], "t")
    assert "(approximate)" in text and "(contended)" in text and "contended (no speedup, never a winner): cudnn" in text
    assert ratio(1.004) == "1.004×" and ratio(1.71) == "1.71×" and ratio(12.34) == "12.3×"


def test_where_nothing_qualifies_the_line_says_why():
    linear = _job("linear", 512, 100, seed=3)
    linear.tags["approximate"] = "true"
    (only_approximate,) = summarise([linear, _job("math", 512, 0, status="oom")])
    assert only_approximate.winner == "no winner: no exact backend ran ok (approximate ones are ranked apart)"
    (none_ran,) = summarise([_job("math", 512, 0, status="oom")])
    assert none_ran.winner == "no winner: no job ran ok" and not none_ran.has_winner
    assert summarise([_job("math", 512, 100)])[0].winner == "math (the only exact job that ran ok)"


def test_the_tflops_axis_says_whose_flops_an_approximate_line_counts():
    from attnbench.analysis.render.plots import tflops_label

    exact = [_job("math", 512, 100)]
    linear = _job("linear", 512, 50)
    linear.tags["approximate"] = "true"
    assert tflops_label(exact) == "useful FLOP/s"  # its unit (TFLOP/s, GFLOP/s) follows, chosen from the data
    assert "approximate: their own formula's FLOPs" in tflops_label([*exact, linear])


def test_a_resumed_sweeps_jobs_are_the_same_problems_as_the_first_runs():
    first, resumed = _job("math", 1024, 100.0), _job("flash", 1024, 50.0, seed=1)
    first.params["resume"], resumed.params["resume"] = "false", "true"
    problems = summarise([first, resumed])
    assert len(problems) == 1 and problems[0].has_winner
