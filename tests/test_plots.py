"""Plots a person reads at a glance: one unit per axis and plain tick labels, titles that say what was measured,
every job that did not run marked and explained, throughput against the ceiling the problem meets first, and
figures that fit 1280 px."""

from __future__ import annotations

import random
import struct

import pytest

from attnbench.analysis.pivot import JobRecord
from attnbench.analysis.render import plots
from attnbench.analysis.render.plot_axes import plain, unit_for
from attnbench.analysis.render.plot_labels import not_run, subtitle


def _job(backend: str, seq_len: int, median_us: float, status: str = "ok", q_len: int | None = None,
         reason: str = "") -> JobRecord:
    rng = random.Random(seq_len * 7 + len(backend))
    samples = [rng.gauss(median_us, median_us * 0.01) for _ in range(21)]
    q, median_us = q_len or seq_len, median_us or 1.0  # a job that did not run: its numbers are dropped below
    metrics = {"median_us": median_us, "gflop": 4e-6 * q * seq_len, "gbyte": 1e-6 * (q + seq_len),
               "tflops": 4e-3 * q * seq_len / median_us, "gbps": (q + seq_len) / median_us}
    return JobRecord(backend, {"backend.name": backend, "compile": "false", "shape.seq_len": str(seq_len),
                               "shape.q_len": str(q), "model.name": "attention", "mode": "fwd",
                               "dtype": "bfloat16"},
                     metrics if status == "ok" else {},
                     {"status": status, "reason": reason, "timing.headline": "wall", "device": "cpu",
                      "env.device_name": "Some CPU", "problem": f"B2 H4 S{seq_len}{' Q1' if q_len == 1 else ''} D64 "
                                                                 "causal"},
                     {"wall": samples} if status == "ok" else {})


def _sweep(q_len: int | None = None) -> list[JobRecord]:
    """Medians from 60 ms to 480 ms (a decode on a CPU reads so), efficient refused at every length."""
    return [job for seq_len in (1024, 2048, 4096, 8192) for job in (
        _job("math", seq_len, 60 * seq_len, q_len=q_len), _job("naive", seq_len, 30 * seq_len, q_len=q_len),
        _job("efficient", seq_len, 0, "unsupported", q_len, "memory-efficient attention runs on CUDA only"))]


def _inside(box, figure) -> bool:
    return box.x0 >= figure.x0 and box.x1 <= figure.x1 and box.y1 <= figure.y1


@pytest.fixture
def drawn(monkeypatch):
    """The figures plot_sweep saves, by file name, with their tick labels, title and legend as saved."""
    from pathlib import Path

    from matplotlib.figure import Figure

    figures = {}
    save = Figure.savefig

    def keep(fig, path, *args, **kwargs):
        save(fig, path, *args, **kwargs)  # lays the ticks out as they are saved
        ax = fig.axes[0]
        figures[Path(path).name] = {
            "ticks": [t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels(),
                                             *ax.get_yticklabels(minor=True)) if t.get_text()],
            "offsets": [ax.xaxis.get_offset_text().get_text(), ax.yaxis.get_offset_text().get_text()],
            "ylabel": ax.get_ylabel(), "xlabel": ax.get_xlabel(), "title": ax.get_title(),
            "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
            "text": " ".join(t.get_text() for a in fig.axes for t in a.texts),
            "title_inside": _inside(ax.title.get_window_extent(), fig.bbox),
            "error_bars": [segment for collection in ax.collections if hasattr(collection, "get_segments")
                           for segment in collection.get_segments()
                           if len(segment) == 2 and segment[0][0] == segment[1][0]]}  # vertical: (x, low), (x, high)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def test_time_is_in_one_readable_unit_with_plain_tick_labels(tmp_path, drawn):
    paths = plots.plot_sweep(_sweep(), tmp_path, "seqlen")
    labels = [label for figure in drawn.values() for label in figure["ticks"]]
    assert labels and not [label for label in labels if "e+" in label or "e-" in label or "×10" in label]
    latency = drawn["latency.png"]
    assert latency["ylabel"] == "median per call (ms)"  # 31 ms to 490 ms: read in ms, not as 490000 µs
    assert not any(offset for figure in drawn.values() for offset in figure["offsets"])  # no "1e6" above an axis
    assert [label for label in latency["ticks"] if label in ("1024", "2048", "4096", "8192")] == [
        "1024", "2048", "4096", "8192"]  # sizes that double: a log₂ axis, each size labelled
    for path in paths:
        width, _ = struct.unpack(">II", path.read_bytes()[16:24])
        assert width <= 1000, (path.name, width)  # beside MLflow's sidebar in a 1280-px window


def test_titles_say_the_model_mode_dtype_problem_and_device(tmp_path, drawn):
    plots.plot_sweep(_sweep(), tmp_path, "seqlen")
    assert drawn["latency.png"]["title"] == "seqlen\nattention · fwd · bfloat16 · B2 H4 S* D64 causal (* varies) · " \
                                            "Some CPU (cpu)"


def test_a_long_title_wraps_inside_the_figure(tmp_path, drawn):
    """A decode sweep on a CPU with a long name: the subtitle, centred over the plot beside its legend, ran past the
    figure's left edge (`ntion · fwd · ...`)."""
    jobs = _sweep(q_len=1)
    for job in jobs:
        job.tags["env.device_name"] = "Intel(R) Xeon(R) Platinum 8480+ Processor"
    plots.plot_sweep(jobs, tmp_path, "sweep decode")
    for name, figure in drawn.items():
        assert figure["title_inside"], (name, figure["title"])
    assert "\n" in drawn["latency.png"]["title"].split("\n", 1)[1]  # the subtitle on two lines


def _launch_bound_sweep(with_wall: bool) -> list[JobRecord]:
    """Events medians of 30 and 60 µs, steady (0.1 %); wall times per call twice that, scattered by 30 %."""
    jobs = []
    for seq_len in (512, 1024):
        for backend, events in (("cudnn", 30.0), ("flash", 60.0)):
            job = _job(backend, seq_len, events)
            rng = random.Random(seq_len + len(backend))
            job.samples = {"events": [rng.gauss(events, events * 0.001) for _ in range(51)],
                           "wall": [rng.gauss(2 * events, 0.6 * events) for _ in range(51)] if with_wall else []}
            job.tags |= {"timing.headline": "events", "launch_bound": "events 30 µs against 12 µs of kernels"}
            job.metrics |= {"wall_median_us": 2 * events} if with_wall else {}
            jobs.append(job)
    return jobs


@pytest.mark.parametrize("with_wall", [True, False])
def test_a_latency_line_is_device_time_and_says_when_the_tables_compare_wall_time(tmp_path, drawn, with_wall):
    from attnbench.analysis.pivot import summarise

    jobs = _launch_bound_sweep(with_wall)
    summarise(jobs)  # as the report does first: launch-bound problems compared by wall time, where every job has it
    plots.plot_sweep(jobs, tmp_path, "seqlen")
    latency = drawn["latency.png"]
    assert ("the report's tables compare those problems by wall time per call" in latency["text"]) is with_wall
    assert len(latency["error_bars"]) == len(jobs)
    for (x, low), (_, high) in latency["error_bars"]:  # around events medians, by the events' own 0.1 % spread
        assert high - low < 0.01 * high, (low, high)


def test_every_backend_that_did_not_run_is_marked_with_why(tmp_path, drawn):
    plots.plot_sweep(_sweep(), tmp_path, "seqlen")
    for figure in drawn.values():
        assert "efficient: did not run" in figure["legend"]
        assert ("efficient (seq_len 1024, 2048, 4096, 8192): unsupported — memory-efficient attention runs on CUDA "
                "only") in figure["text"]


def test_a_bar_chart_keeps_a_row_for_each_job_that_did_not_run(tmp_path, drawn):
    jobs = [_job("math", 1024, 250.0), _job("flash", 1024, 0, "unsupported", reason="needs CUDA")]
    (path,) = plots.plot_sweep(jobs, tmp_path, "seed")
    bars = drawn["latency.png"]
    assert bars["xlabel"] == "median per call (µs), with its 95% interval"
    assert "unsupported (why: below)" in bars["text"] and "flash: unsupported — needs CUDA" in bars["text"]
    assert "250 µs" in bars["text"]


def test_a_memory_bound_sweep_plots_gb_per_s_not_tflops(tmp_path, drawn):
    paths = plots.plot_sweep(_sweep(q_len=1), tmp_path, "decode")
    assert [p.name for p in paths] == ["latency.png", "gbps.png"]
    assert drawn["gbps.png"]["ylabel"] == "minimum bytes moved per second (MB/s)"
    assert [p.name for p in plots.plot_sweep(_sweep(), tmp_path, "prefill")] == ["latency.png", "tflops.png"]


def test_plain_labels_and_units_from_the_data():
    assert [plain(v) for v in (60000.0, 0.0125, 1.5, 100.0, 2e-5)] == ["60000", "0.0125", "1.5", "100", "0.00002"]
    assert unit_for("median_us", [900.0, 40_000.0, 2_000_000.0]) == (1e3, "ms")
    assert unit_for("median_us", [12.0, 80.0]) == (1.0, "µs")
    assert unit_for("tflops", [0.004, 0.02]) == (1e-3, "GFLOP/s")


def test_the_subtitle_and_notes_from_jobs():
    assert subtitle([_job("math", 64, 10.0)]) == "attention · fwd · bfloat16 · B2 H4 S64 D64 causal · Some CPU (cpu)"
    long = "x " * 300
    (note,) = not_run([_job("math", 64, 10.0), _job("flash", 64, 0, "unsupported", reason=long)])
    assert note.startswith("flash: unsupported — x x") and note.endswith("…") and len(note) < 240


def test_a_contended_job_is_drawn_hollow_and_said_in_the_legend(tmp_path, drawn):
    jobs = _sweep()
    jobs[0].tags["contended"] = "its threads waited for a core 52% of the time"
    plots.plot_sweep(jobs, tmp_path, "seqlen")
    assert "contended: timed while waiting for a core (no winner)" in drawn["latency.png"]["legend"]
    assert unit_for("gbps", [0.15, 6.8], log=False) == (1.0, "GB/s")  # a rate from zero: by its largest value


def _shaped(backend: str, batch: int, seq_len: int, median_us: float, status: str = "ok") -> JobRecord:
    job = _job(backend, seq_len, median_us, status, reason="" if status == "ok" else "not installed")
    job.params["shape.batch"] = str(batch)
    return job


def test_whole_shapes_swapped_get_one_panel_per_problem_not_a_size_axis(tmp_path, drawn):
    # shape=long_context,gqa_prefill: batch and seq_len change together, so neither is an axis
    jobs = [_shaped(b, batch, seq, median) for batch, seq in ((4, 4096), (1, 8192))
            for b, median in (("fa4", 470.0), ("flex", 760.0))] + [_shaped("fa3", 4, 4096, 0, "unsupported")]
    assert plots.numeric_axis(jobs) is None
    (path,) = plots.plot_sweep(jobs, tmp_path, "kernels")
    latency = drawn["latency.png"]
    assert "470 µs" in latency["text"] and "760 µs" in latency["text"]
    assert "fa3" in latency["text"] and "not installed" in latency["text"]  # named, and why
    width, _ = struct.unpack(">II", path.read_bytes()[16:24])
    assert width <= 1000


def test_sizes_that_vary_independently_keep_the_first_as_the_axis():
    jobs = [_shaped("math", batch, seq, 100.0) for batch in (1, 4) for seq in (1024, 2048)]
    assert plots.numeric_axis(jobs) == "shape.seq_len"
