"""Bad input on the command line: refused in one line, before any run is created in the store; help and a refusal
never import torch (~1.2 s of a 2-core machine's start-up), nor does a refused sweep import MLflow."""

from __future__ import annotations

import pytest

from conftest import FAST_TIMING, REPO, run_script, tracked_runs

TINY = ["shape=tiny", "device=cpu", *FAST_TIMING]


def fast_loop_keeps(cases: list, *keep: int) -> list:
    """The cases, those at the positions in keep as they are, the others marked slow: each starts run.py (~0.5 s on
    2 cores), so `make test-fast` takes one of each path (a single run, a sweep) and `make test` every case."""
    return [case if number in keep else pytest.param(*(case if isinstance(case, tuple) else (case,)),
                                                       marks=pytest.mark.slow)
            for number, case in enumerate(cases)]


def _run_and_say_what_loaded(tmp_path, store, modules: tuple[str, ...], *args: str):
    """run.py with ARGS, which prints, as the process exits, `<module> loaded: True|False` for each module."""
    loaded = ("import atexit, runpy, sys\n"
              f"say = lambda: [print(m, 'loaded:', m in sys.modules, file=sys.stderr) for m in {modules!r}]\n"
              "atexit.register(say)\n"
              f"sys.argv = [{str(REPO / 'run.py')!r}] + sys.argv[1:]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    script = tmp_path / "run_and_say.py"
    script.write_text(loaded)
    return run_script(*args, store=store, cwd=tmp_path, script=script)


@pytest.mark.parametrize("how", ["single run", "sweep"])
def test_a_typo_in_an_option_is_refused_in_one_line_and_leaves_no_run(store, tmp_path, how):
    arguments = ["backend=flsh"] if how == "single run" else ["-m", "backend=math,flsh"]
    proc = run_script(*arguments, *TINY, store=store, cwd=tmp_path)
    assert proc.returncode == 1
    _, parents, children = tracked_runs(store)
    assert [run.info.run_name for run in parents + children] == []  # no empty FAILED parent left behind
    assert not (tmp_path / "multirun" / "0").exists() and not (tmp_path / "outputs" / "result.json").exists()
    line = proc.stderr.strip().splitlines()[0]  # the group, the value given, the allowed values
    assert line.startswith("backend='flsh' is not an option: expected one of ") and "flash, " in line
    assert "Available options" not in proc.stderr and "search path" not in proc.stderr  # Hydra's twenty lines


@pytest.mark.parametrize("option", fast_loop_keeps(["mask=documnt", "model=atention", "experiment=mask"], 0))
def test_a_single_run_names_the_group_the_value_and_the_options(store, tmp_path, option):
    proc = run_script(option, *TINY, store=store, cwd=tmp_path)
    group, value = option.split("=")
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[0]
    assert line.startswith(f"{group}={value!r} is not an option: expected one of "), proc.stderr


# A value of the wrong type, or not among an enum's: (the field, what the command line gives it, a value the sweep's
# other job may take, the options it needs, what the field accepts as the line says it).
BAD_VALUES = [
    ("shape.batch", "abc", "1", [], "an integer"),
    ("dtype", "float8", "float32", [], "one of float16, bfloat16, float32"),
    ("timing.method", "fast", "wall", [], "one of auto, events, wall, cuda_graph, profiler"),
    ("compile", "maybe", "false", [], "true or false"),
    ("timing.max_job_s", "soon", "60", [], "a number or null"),
    ("mask.lengths", "zipf", "equal", ["mask=document"], "one of equal, random"),
    ("shape.batch", "null", "1", [], "an integer"),
]


@pytest.mark.parametrize("how", ["single run", "sweep"])
@pytest.mark.parametrize(("key", "value", "good", "options", "accepts"), fast_loop_keeps(BAD_VALUES, 0),
                         ids=[f"{key}={value}" for key, value, *_ in BAD_VALUES])
def test_a_bad_value_is_refused_in_one_line_naming_the_field_what_it_takes_and_the_value(
        store, tmp_path, how, key, value, good, options, accepts):
    arguments = [f"{key}={value}"] if how == "single run" else ["-m", f"{key}={good},{value}"]
    proc = run_script(*arguments, *options, *TINY, store=store, cwd=tmp_path)  # -m before any override
    assert proc.returncode == 1, proc.stderr
    given = "null" if value == "null" else repr(value)
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"{key}={given} is not valid: expected {accepts}"]
    _, parents, children = tracked_runs(store)
    assert parents + children == []
    assert not (tmp_path / "multirun" / "0").exists() and not (tmp_path / "outputs" / "result.json").exists()


def test_a_bad_value_in_a_config_file_is_one_line_naming_the_file(store, tmp_path):
    conf = tmp_path / "conf" / "shape"
    conf.mkdir(parents=True)
    (conf / "typo.yaml").write_text("batch: two\nheads: 2\nseq_len: 16\nhead_dim: 8\n")
    proc = run_script("shape=typo", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "device=cpu", *FAST_TIMING,
                      store=store, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        "shape.batch='two' in shape/typo is not valid: expected an integer"]


# A key no schema declares, given without `+`: (the arguments, the line the command prints). The key, the nearest
# key and the keys its node takes (attnbench.harness.strict, as for `+shape.seqlen=8`), then the override given.
SHAPE_KEYS = "shape takes batch, heads, kv_heads, seq_len, q_len, head_dim, page_size"
UNKNOWN_KEYS = [
    (["shape.seqlen=8"], f"unknown config key shape.seqlen: did you mean shape.seq_len? {SHAPE_KEYS} (shape.seqlen=8)"),
    (["-m", "shape.seqlen=8"], f"unknown config key shape.seqlen: did you mean shape.seq_len? {SHAPE_KEYS} "
                               "(shape.seqlen=8)"),
    (["-m", "shape.seqlen=8,16"], f"unknown config key shape.seqlen: did you mean shape.seq_len? {SHAPE_KEYS} "
                                  "(shape.seqlen=8)"),
    (["timing.warmup=0.1"], "unknown config key timing.warmup: did you mean timing.warmup_s? timing takes method, "),
    (["-m", "timing.warmup=0.1"], "unknown config key timing.warmup: did you mean timing.warmup_s? timing takes "),
]


@pytest.mark.parametrize(("arguments", "said"), fast_loop_keeps(UNKNOWN_KEYS, 0, 1),
                         ids=[" ".join(a) for a, _ in UNKNOWN_KEYS])
def test_a_key_no_schema_declares_is_refused_in_one_line_without_a_plus_too(store, tmp_path, arguments, said):
    proc = run_script(*arguments, *TINY, store=store, cwd=tmp_path)  # -m before any override
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(said), proc.stderr  # not Hydra's six: "Could not override ..."
    assert lines[0].endswith(f"({arguments[-1].split(',')[0]})")  # the override given
    _, parents, children = tracked_runs(store)
    assert parents + children == []
    assert not (tmp_path / "multirun" / "0").exists() and not (tmp_path / "outputs" / "result.json").exists()


# A group's option given as something other than one name: a list (Hydra would crash on `[1,2]`, and run `[math,
# flash]` as flash recorded as neither), a number, null; in a single run, a sweep's fixed option, a swept one.
GROUP_CHOICES = [
    (["shape=[1,2]"], "shape=[1, 2]"),
    (["backend=[math]"], "backend=['math']"),
    (["backend=[math,flash]"], "backend=['math', 'flash']"),
    (["shape=1"], "shape=1"),
    (["backend=null"], "backend=null"),
    (["-m", "shape=[1,2]"], "shape=[1, 2]"),
    (["-m", "backend=math,[flash]"], "backend=['flash']"),
    (["-m", "shape=range(2)"], "shape=0"),
]


@pytest.mark.parametrize(("arguments", "given"), fast_loop_keeps(GROUP_CHOICES, 0, 5),
                         ids=[" ".join(a) for a, _ in GROUP_CHOICES])
def test_a_group_choice_that_is_not_one_name_is_refused_in_one_line(store, tmp_path, arguments, given):
    group = given.split("=")[0]
    tiny = [] if group == "shape" else ["shape=tiny"]  # were it run after all: a job of seconds, not minutes
    proc = run_script(*arguments, *tiny, "device=cpu", *FAST_TIMING, store=store, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # not Hydra's traceback (TypeError: argument of type 'int' is not iterable)
    assert lines[0].startswith(f"{given} is not an option: expected one of "), proc.stderr
    assert ("seed_sdpa, " if group == "shape" else "flash, ") in lines[0]
    _, parents, children = tracked_runs(store)
    assert parents + children == []
    assert not (tmp_path / "multirun" / "0").exists() and not (tmp_path / "outputs" / "result.json").exists()


def test_a_refused_sweep_never_loads_mlflow(store, tmp_path):
    # MLflow takes ~1.5 s to import; the callbacks Hydra creates before the sweeper checks the jobs must not need it.
    proc = _run_and_say_what_loaded(tmp_path, store, ("mlflow",), "-m", "backend=math,flsh", *TINY)
    assert proc.returncode == 1 and "backend='flsh' is not an option" in proc.stderr
    assert proc.stderr.strip().endswith("mlflow loaded: False")


@pytest.mark.parametrize("arguments", fast_loop_keeps([
    ["--help"], ["backend=flsh"], ["-m", "backend=math,flsh"], ["shape.batch=abc"],
    ["mask=document", "mask.lengths=zipf"], ["-m", "dtype=float16,float8"], ["shape.seqlen=8"],
    ["-m", "timing.warmup=0.1"], ["shape=[1,2]"], ["-m", "backend=math,[flash]"]],
    0, 2, 3, 6, 8), ids=" ".join)  # help, and one of each kind of refusal
def test_help_and_a_refused_command_never_import_torch(store, tmp_path, arguments):
    # Hydra composes the config to print help or refuse it: every option's schema is there without torch, whose
    # import is most of a command's start-up. The job worker (another process) imports torch for the job.
    proc = _run_and_say_what_loaded(tmp_path, store, ("torch",), *arguments)
    assert proc.returncode == (0 if arguments == ["--help"] else 1), proc.stderr
    assert proc.stderr.strip().endswith("torch loaded: False")
