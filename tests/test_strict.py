"""Unknown config keys are refused, even added with `+`, naming the nearest valid key, before any job runs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hydra.core.config_store import ConfigStore

from attnbench.harness.strict import unknown_key_problem
from attnbench.store import results
from conftest import FAST_TIMING, REPO, run_script

TINY = ["shape=tiny", "device=cpu", *FAST_TIMING]


@pytest.mark.parametrize("overrides, expected", [
    (["+shape.seqlen=8"], "unknown config key shape.seqlen: did you mean shape.seq_len? shape takes batch, heads,"),
    (["+foo=1"], "unknown config key foo: the top level takes device, backend,"),
    (["+timing.max_job=5"], "unknown config key timing.max_job: did you mean timing.max_job_s?"),
    (["model=causal_self_attention", "+model.n_layer=12"], "unknown config key model.n_layer: model takes name,"),
])
def test_an_unknown_key_is_named_with_the_nearest_valid_one(compose_cfg, overrides, expected):
    assert unknown_key_problem(compose_cfg(*overrides, return_hydra_config=True)).startswith(expected)


@pytest.mark.parametrize("experiment", [None, *sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))])
def test_the_project_configs_have_no_unknown_keys(compose_cfg, experiment):
    overrides = [f"experiment={experiment}"] if experiment else []
    assert unknown_key_problem(compose_cfg(*overrides, return_hydra_config=True)) is None


@dataclass
class WindowedParams:  # an option with its own schema that the project does not have: nothing lists them
    name: str = "windowed"
    window: int = 128


def test_a_new_option_schema_is_checked_through_its_dataclass(compose_cfg):
    ConfigStore.instance().store(group="model", name="windowed_for_test", node=WindowedParams)
    problem = unknown_key_problem(compose_cfg("model=windowed_for_test", "+model.windw=64"))
    assert problem.startswith("unknown config key model.windw: did you mean model.window? model takes name, window")


@pytest.mark.slow
def test_a_sweep_with_an_unknown_key_stops_before_any_job(store, tmp_path):
    proc = run_script("-m", "+shape.seqlen=8", "seed=1,2", *TINY, store=store, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert any(line.startswith("unknown config key shape.seqlen: did you mean shape.seq_len? shape takes batch, "
                               "heads, kv_heads, seq_len, q_len, head_dim") for line in proc.stderr.splitlines())
    assert not (tmp_path / "multirun" / "0").exists()


@pytest.mark.parametrize("chosen, renamed", [("backend=flash", "backend.name=math"), ("mask=none", "mask.name=causal")])
def test_renaming_the_option_chosen_is_refused(compose_cfg, chosen, renamed):
    from attnbench.harness.strict import renamed_option_problem

    group, option = chosen.split("=")
    name = renamed.split("=")[1]
    cfg = compose_cfg(chosen, renamed, return_hydra_config=True)
    assert renamed_option_problem(cfg, cfg.hydra.runtime.choices) == (
        f"{group}.name={name!r} is not valid: expected {option!r}, the option chosen; "
        f"to run {name}, choose it: {group}={name}")
    untouched = compose_cfg(chosen, return_hydra_config=True)
    assert renamed_option_problem(untouched, untouched.hydra.runtime.choices) is None


@pytest.mark.slow
def test_a_sweep_that_renames_the_chosen_backend_stops_before_any_job(store, tmp_path):
    proc = run_script("-m", "backend=flash", "backend.name=math", "seed=1,2", *TINY, store=store, cwd=tmp_path)
    assert proc.returncode == 1 and "backend.name='math' is not valid: expected 'flash'" in proc.stderr
    assert not (tmp_path / "multirun" / "0").exists()


@pytest.mark.slow
def test_a_single_run_with_an_unknown_key_is_an_error_that_ran_nothing(store, tmp_path):
    proc = run_script("+foo=1", *TINY, store=store, cwd=tmp_path)
    assert proc.returncode == 1
    saved = results.read(tmp_path / "outputs")
    assert saved.status == "error" and saved.reason.startswith("unknown config key foo")
    assert saved.metrics == {}  # not even validated: nothing was built or timed


@pytest.mark.slow
def test_an_unparsable_experiment_file_is_one_line_with_its_file_and_line(store, tmp_path):
    from conftest import FIXTURES

    folder = FIXTURES / "experiments"
    proc = run_script("-m", "experiment=unparsable", *TINY, f"hydra.searchpath=[attnbench-experiments://{folder}]",
                      store=store, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{folder}/unparsable.yaml, line 5, column 8: not valid YAML:")
