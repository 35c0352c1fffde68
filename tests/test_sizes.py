"""`size=cpu`: every experiment at the CPU size its file states keeps its problem's kind (grouped-query stays
grouped, decode stays one query against a cache, a window keeps its share of the sequence) and is small."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from mlflow.tracking import MlflowClient

from attnbench.harness.safety import UnsafeExperiment, load_experiment
from attnbench.harness.single_run import SingleRunCallback, skipped_sweep_line
from attnbench.harness.sizes import KindCheck, size_plan
from conftest import CONF, FIXTURES, REPO, run_script

Plugins.instance()  # Hydra's plugin scan imports plugin modules itself: import the sweeper's after it
from hydra_plugins.attnbench_sweeper.compose_once_sweeper import ComposedOnceConfigLoader  # noqa: E402

EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
ONE_SAMPLE = ["device=cpu", "timing.warmup_s=0", "timing.min_time_s=0", "timing.min_reps=2", "timing.max_reps=2"]
MAX_CPU_FLOP = 2.5e9  # one forward call at size=cpu: ~0.1-0.5 s on one CPU core in bf16


def sweep_configs(*arguments: str) -> list:
    """Each job's config, as the compose-once sweeper makes the sweep: the file's params (at a size, the size's
    values in place of them), then the command line, each job composed by the sweeper's loader and validated,
    then the launch begins (where what the command line's shape changed is said)."""
    inner = ConfigLoaderImpl(create_config_search_path(str(CONF)))
    master = inner.load_configuration("config", overrides=list(arguments), run_mode=RunMode.MULTIRUN)
    size = size_plan(master)
    params = dict(master.hydra.sweeper.params or {})
    params = size.params(params) if size else params
    parsed = OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in params.items()), *arguments])
    loader = ComposedOnceConfigLoader(inner, size=size)
    loader.kinds = KindCheck.of(master, params, list(arguments))
    configs = [loader.load_sweep_config(master, job) for job in BasicSweeper.split_arguments(parsed, None)[0]]
    with loader.launching():
        return configs


def flop(shape) -> float:
    return 4.0 * shape.batch * shape.heads * shape.q_len * shape.seq_len * shape.head_dim


def share(mask, shape) -> dict:
    """What a mask's proportions are: its lengths as shares of the sequence, its counts as they are."""
    return {k: (v / shape.seq_len if k in ("window", "prefix") else v) for k, v in mask.items()}


# `make test-fast` composes two that hold each kind a size must keep: grouped-query decode, a mask's proportions.
FAST_KINDS = ("decode", "masks")


@pytest.mark.parametrize("name", [n if n in FAST_KINDS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in EXPERIMENTS])
def test_every_experiment_at_cpu_size_keeps_its_problem_and_is_small(name):
    # Every problem of the sweep, through one backend: the backend changes no size (and 104 jobs would take 14 s).
    full = sweep_configs(f"experiment={name}", "device=cpu", "backend=default")
    cpu = sweep_configs(f"experiment={name}", "size=cpu", "device=cpu", "backend=default")
    assert len(cpu) == len(full)  # the same sweep: a key's values replaced by as many
    for big, small in zip(full, cpu):
        b, s = big.shape, small.shape
        job = f"experiments/{name}.yaml, job {' '.join(small.hydra.overrides.task)}"
        assert (s.kv_heads < s.heads) == (b.kv_heads < b.heads), job  # grouped-query stays grouped
        assert s.heads // s.kv_heads == b.heads // b.kv_heads, job  # with as many query heads per kv head
        assert (s.q_len == 1) == (b.q_len == 1) and (s.q_len < s.seq_len) == (b.q_len < b.seq_len), job  # decode
        assert s.page_size == b.page_size, job
        assert small.mask.name == big.mask.name and share(small.mask, s) == share(big.mask, b), job
        for key in ("backend", "model", "mode", "dtype", "compile", "compile_mode"):
            assert small[key] == big[key], f"{job}: {key}"
        assert flop(s) <= min(MAX_CPU_FLOP, flop(b)), job
        assert small.size.name.value == "cpu" and "size=cpu" in small.hydra.overrides.task, job  # the run says so


def test_a_swept_value_is_replaced_by_the_sizes_values():
    lengths = [c.shape.seq_len for c in sweep_configs("experiment=decode", "size=cpu", "backend=math")]
    assert lengths == [64, 128, 256, 512, 1024, 2048]


def test_the_command_line_still_wins_over_the_size():
    configs = sweep_configs("experiment=decode", "size=cpu", "backend=math", "shape.seq_len=32")
    assert [c.shape.seq_len for c in configs] == [32] and configs[0].shape.q_len == 1


def test_a_window_is_set_on_the_jobs_whose_mask_has_one():
    configs = sweep_configs("experiment=masks", "size=cpu", "backend=math")
    assert {c.mask.name: c.mask.get("window") for c in configs} == {"causal": None, "sliding_window": 16,
                                                                   "document": None}
    assert ["mask.window=16" in c.hydra.overrides.task for c in configs] == [False, True, False]


@pytest.mark.parametrize("arguments, says", [
    (["size=cpu"], "size=cpu: no experiment was chosen"),
    (["experiment=fine", "size=cpu", f"hydra.searchpath=[attnbench-experiments://{FIXTURES / 'experiments'}]"],
     "size=cpu: experiment=fine states no cpu size"),
])
def test_a_size_nobody_stated_is_refused_in_one_line(arguments, says):
    with pytest.raises(ConfigCompositionException, match=says):
        sweep_configs(*arguments)


HEADER = "# @package _global_\n"


@pytest.mark.parametrize("body, says", [
    ("size:\n  name: cpu\n", "size.name: a file states the values of a size (cpu); which size runs is the user's"),
    ("defaults:\n  - override /size: cpu\n", "defaults[0]: which size runs is the user's choice"),
    ("size:\n  cpu:\n    shape: ../../etc/x\n", "size.cpu.shape: '../../etc/x': expected an option name"),
    ("size:\n  cpu:\n    tracking.uri: http://x\n", "size.cpu.tracking.uri: 'tracking' is not something"),
    ("size:\n  cpu:\n    shape.seq_len: ${oc.env:HOME}\n", "size.cpu.shape.seq_len: '${oc.env:HOME}' calls a resolver"),
    ("size:\n  cpu:\n    hydra.job.chdir: true\n", "size.cpu.hydra.job.chdir: 'hydra' is not something"),
    ("hydra:\n  sweeper:\n    params:\n      size: full,cpu\n", "hydra.sweeper.params.size: which size runs"),
])
def test_a_files_size_is_data_checked_as_its_sweep_is(body, says):
    with pytest.raises(UnsafeExperiment, match=re.escape(f"x.yaml: {says}")):
        load_experiment(HEADER + body, "x.yaml")


def test_a_files_cpu_size_passes_the_check():
    load_experiment(HEADER + "size:\n  cpu:\n    shape: decode_cpu\n    shape.seq_len: 64,128\n"
                    "    mask.window: 16\n", "x.yaml")


@pytest.mark.parametrize("arguments, says", [
    (["experiment=gqa_prefill", "shape=tiny"], "shape=tiny changes what experiment=gqa_prefill measures: grouped-query "
     "prefill (B 1, 32 query heads over 8, S 8192, D 128) is not run; multi-head prefill (B 2, 2 heads, S 16, D 8) "
     "is run instead; size=cpu runs it small"),
    pytest.param(["experiment=decode", "shape=tiny"], "shape=tiny changes what experiment=decode measures: "
                 "grouped-query decode (B 8, 32 query heads over 8, q_len 1 against 1024 keys, D 128) is not run",
                 marks=pytest.mark.slow),  # `make test-fast` takes the first
    pytest.param(["experiment=kernels", "shape=tiny", "mode=fwd"], "shape=tiny changes what experiment=kernels "
                 "measures: grouped-query prefill (B 1, 32 query heads over 8, S 8192, D 128) is not run; size=cpu",
                 marks=pytest.mark.slow),  # one of its two
])
def test_a_shape_that_changes_an_experiments_problem_says_so_before_any_job_runs(capsys, arguments, says):
    sweep_configs(*arguments, "backend=math")
    err = capsys.readouterr().err
    assert err.count("attnbench: ") == 1 and f"attnbench: {says}" in err, err


@pytest.mark.parametrize("arguments", [  # `make test-fast` takes the first
    ["experiment=gqa_prefill", "shape.seq_len=64", "shape.batch=2"],
    pytest.param(["experiment=decode", "size=cpu", "shape.seq_len=32"], marks=pytest.mark.slow),
    pytest.param(["experiment=masks", "shape=tiny"], marks=pytest.mark.slow)])  # multi-head prefill, as long_context
def test_a_shape_that_keeps_the_problem_says_nothing(capsys, arguments):
    sweep_configs(*arguments, "backend=math")
    assert capsys.readouterr().err == ""


def test_a_single_run_of_an_experiment_says_which_sweep_it_left_out(compose_cfg):
    line = skipped_sweep_line(compose_cfg("experiment=masks", "shape=tiny", return_hydra_config=True))
    assert line == ("attnbench: experiment=masks is a sweep of 15 jobs (over mask, backend); without -m this runs one "
                    "job, with the file's default mask and backend: add -m to run the sweep")
    assert "(over backend)" in skipped_sweep_line(compose_cfg("experiment=masks", "mask=document",
                                                              return_hydra_config=True))
    assert skipped_sweep_line(compose_cfg("experiment=masks", "mask=document", "backend=flex",
                                          return_hydra_config=True)) is None  # the user chose one job
    assert skipped_sweep_line(compose_cfg("backend=flex", return_hydra_config=True)) is None  # no experiment


def test_size_cpu_without_a_sweep_is_refused_before_the_run_starts(compose_cfg):
    with pytest.raises(SystemExit, match="size=cpu runs an experiment's sweep .* which needs -m"):
        SingleRunCallback().on_run_start(compose_cfg("experiment=masks", "size=cpu", return_hydra_config=True))


@pytest.mark.slow
def test_a_single_run_says_so_on_the_console_and_runs_its_job(store, tmp_path):
    proc = run_script("experiment=masks", "shape=tiny", *ONE_SAMPLE, store=store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "attnbench: experiment=masks is a sweep of 15 jobs" in proc.stderr
    refused = run_script("experiment=masks", "size=cpu", *ONE_SAMPLE, store=store, cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.strip().endswith("size=cpu (docs/experiments.md)")
    assert "job 1/1" not in refused.stderr


# experiment -> (jobs, {status: count}) at size=cpu on a CPU: the kernels a CPU has none of (efficient, cudnn, the
# third-party libraries) and flex's backward are `unsupported`; compile_modes' eager repeats are `skipped`.
AT_CPU_SIZE = {
    "compile_modes": (8, {"ok": 5, "skipped": 3}),
    "decode": (42, {"ok": 30, "unsupported": 12}),
    "decode_paged": (12, {"unsupported": 12}),  # FlashInfer: CUDA
    "gqa_prefill": (7, {"ok": 5, "unsupported": 2}),
    "kernels": (104, {"ok": 20, "unsupported": 84}),
    "kernels_decode": (26, {"ok": 6, "unsupported": 20}),
    "masks": (15, {"ok": 9, "unsupported": 6}),
    "seed_causal_self_attention": (2, {"ok": 2}),
    "seed_sdpa": (5, {"ok": 3, "unsupported": 2}),
    "seqlen_scaling": (54, {"ok": 42, "unsupported": 12}),
    "training": (12, {"ok": 6, "unsupported": 6}),
}
RECORDED = ("shape.batch", "shape.heads", "shape.kv_heads", "shape.seq_len", "shape.q_len", "shape.head_dim")


def test_every_experiment_has_its_cpu_size_run_below():
    assert set(AT_CPU_SIZE) == set(EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n if n == "seed_sdpa" else pytest.param(n, marks=pytest.mark.long)
                                  for n in sorted(AT_CPU_SIZE)])
def test_an_experiment_runs_at_cpu_size_and_its_runs_record_the_sizes_that_ran(name, store, tmp_path):
    """One timed sample per job (the timing is not part of a size; benchmarks/cpu_sizes.py times the real runs)."""
    jobs, statuses = AT_CPU_SIZE[name]
    proc = run_script("-m", f"experiment={name}", "size=cpu", *ONE_SAMPLE, store=store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("attnbench").experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == jobs
    assert Counter(c.data.tags["status"] for c in children) == Counter(statuses)
    assert all(c.data.params["size.name"] == "cpu" and c.data.tags["choice.size"] == "cpu" for c in children)
    composed = Counter(tuple(str(c.shape[k.split(".")[1]]) for k in RECORDED)
                       for c in sweep_configs(f"experiment={name}", "size=cpu", "device=cpu"))
    assert Counter(tuple(c.data.params[k] for k in RECORDED) for c in children) == composed


def test_a_run_logs_the_size_that_ran_not_the_sizes_its_file_states(compose_cfg):
    from attnbench.store.tracking.store import job_params

    params = job_params(compose_cfg("experiment=decode"))
    assert params["size.name"] == "full" and params["shape.q_len"] == "1"
    assert not [key for key in params if key.startswith("size.cpu")]
