"""The compose-once sweeper: each job's config composed once, validation of the whole batch kept."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite
from hydra.types import RunMode
from hydra.version import VersionBase, __compat_version__
from omegaconf import OmegaConf

from conftest import CONF, FAST_TIMING, FIXTURES, run_script

# Hydra's plugin scan executes plugin modules itself (again, if already imported): import after it, so that this
# module's classes are the ones Hydra uses.
Plugins.instance()
from hydra_plugins.attnbench_sweeper import templates  # noqa: E402
from hydra_plugins.attnbench_sweeper.compose_once_sweeper import ComposedOnceConfigLoader  # noqa: E402


class CountingLoader(ConfigLoaderImpl):
    """Hydra's own loader, counting its compositions of job configs (run mode; the sweep's own is multirun)."""

    def __init__(self) -> None:
        super().__init__(config_search_path=create_config_search_path(str(CONF)))
        self.compositions = 0

    def load_configuration(self, config_name, overrides, run_mode, *args, **kwargs):
        self.compositions += run_mode == RunMode.RUN
        return super().load_configuration(config_name, overrides, run_mode, *args, **kwargs)


@pytest.fixture
def loaders():
    inner = CountingLoader()
    master = inner.load_configuration("config", overrides=["shape=tiny"], run_mode=RunMode.MULTIRUN)
    return inner, ComposedOnceConfigLoader(inner), master


def hydra_composes(master, overrides):
    """The job's config as Hydra composes it, with nothing of attnbench's sweeper in between."""
    return ConfigLoaderImpl(create_config_search_path(str(CONF))).load_sweep_config(master, list(overrides))


# Two choices of config-group options: no group override (jobs 1 and 2), backend=math (job 3).
BATCH = [["seed=1", "dtype=float32"], ["seed=2", "dtype=bfloat16"], ["seed=3", "backend=math"]]


def test_validation_composes_each_choice_of_groups_once_and_the_launcher_gets_hydras_config(loaders):
    inner, loader, master = loaders
    loader.validate(master, BATCH)
    launched = [loader.load_sweep_config(master, list(job)) for job in BATCH]
    assert inner.compositions == 2
    for job, config in zip(BATCH, launched):
        assert OmegaConf.to_yaml(config) == OmegaConf.to_yaml(hydra_composes(master, job))
    assert [c.seed for c in launched] == [1, 2, 3] and launched[1].dtype.value == "bfloat16"


# Every kind of override a sweep can hold, each job made from a template where it can be: Hydra's composition
# and the template's must agree to the last field of the hydra node (override lists, dirname, choices).
SAME_AS_HYDRA = [
    ["seed=7"],
    ["tracking.experiment=run_${seed}", "seed=3"],  # an interpolation, kept unresolved as Hydra keeps it
    ["backend=flex", "backend.block_size=64", "mask=sliding_window", "mask.window=16"],
    ["experiment=seed_sdpa", "backend=flash", "compile=true"],
    ["shape={batch: 3}", "seed=2"],  # a dict for a group's key: merged like a value, not an option choice
    ["+extra_note=hello", "seed=1"],
    ["++seed=4", "tracking.experiment=x"],
    ["~resume", "seed=1"],
    ["shape=tiny", "shape.seq_len=64", "timing.min_reps=3", "model=encoder_layer"],
    ["compile=true", "compile_mode=max-autotune", "mode=fwd_bwd", "tracking.uri=null"],
    ["hydra.job.chdir=true", "seed=1"],  # a Hydra override of the job's own: composed by Hydra in full
]


@pytest.mark.parametrize("overrides", SAME_AS_HYDRA, ids=[" ".join(o) for o in SAME_AS_HYDRA])
def test_a_config_made_from_a_template_equals_hydras_composition(loaders, overrides):
    inner, loader, master = loaders
    first = loader.load_sweep_config(master, overrides)
    composed = inner.compositions
    second = loader.load_sweep_config(master, overrides)  # a copy of the template
    expected = OmegaConf.to_yaml(hydra_composes(master, overrides))
    assert OmegaConf.to_yaml(first) == expected and OmegaConf.to_yaml(second) == expected
    assert first is not second and inner.compositions == composed + overrides[0].startswith("hydra.")


GROUP_SWEEP = [[f"backend={b}", f"mask={m}", f"model={o}", "shape.seq_len=32"]
               for b in ("math", "flex", "naive") for m in ("causal", "document", "none") for o in ("attention",
                                                                                                  "encoder_layer")]


def _same_as_hydra(master, overrides, config) -> None:
    expected = hydra_composes(master, overrides)
    assert OmegaConf.to_yaml(config) == OmegaConf.to_yaml(expected)
    for part in ("backend", "mask", "model", "shape", "device"):  # each part keeps its option's schema
        ours, hydras = config._get_node(part)._metadata, expected._get_node(part)._metadata
        assert (ours.object_type, ours.ref_type) == (hydras.object_type, hydras.ref_type), part


def test_a_sweep_over_groups_composes_each_option_once_not_each_job(loaders):
    inner, loader, master = loaders
    loader.validate(master, GROUP_SWEEP)
    # The first job in full; from the second, the template of no choice and one of each option alone: 18 jobs.
    assert inner.compositions == 1 + 1 + 3 + 3 + 2
    for job in GROUP_SWEEP:
        _same_as_hydra(master, job, loader.load_sweep_config(master, job))


def test_an_option_that_sets_other_groups_is_composed_by_hydra(loaders):
    inner, loader, master = loaders
    jobs = [["backend=flash", "mask=causal"], ["experiment=seed_sdpa", "backend=flash", "mask=causal"],
            ["backend=math", "mask=causal", "shape.seq_len=8"]]
    loader.validate(master, jobs)  # the experiment file chooses a shape and a model: not its own part alone
    for job in jobs:
        _same_as_hydra(master, job, loader.load_sweep_config(master, job))


def test_defaults_that_interpolate_choices_are_left_to_hydra(tmp_path):
    # The chosen `a` decides which `c` option is loaded: a=a2 changes two parts, and any interpolation in a
    # defaults list (where one choice could decide what another option loads) sends the sweep to Hydra.
    for path, text in {"config.yaml": "defaults:\n  - a: a1\n  - b: b1\n  - c: ${a}\n  - _self_\n",
                       "a/a1.yaml": "x: 1\n", "a/a2.yaml": "x: 2\n", "b/b1.yaml": "y: 1\n", "b/b2.yaml": "y: 2\n",
                       "c/a1.yaml": "z: 1\n", "c/a2.yaml": "z: 2\n"}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    inner = ConfigLoaderImpl(create_config_search_path(str(tmp_path)))
    master = inner.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
    loader = ComposedOnceConfigLoader(inner)
    jobs = [["a=a1", "b=b2"], ["a=a2", "b=b1"], ["a=a2", "b=b2"]]
    loader.validate(master, jobs)
    for job in jobs:
        expected = ConfigLoaderImpl(create_config_search_path(str(tmp_path))).load_sweep_config(master, job)
        assert OmegaConf.to_yaml(loader.load_sweep_config(master, job)) == OmegaConf.to_yaml(expected)
    assert loader.load_sweep_config(master, ["a=a2", "b=b2"]).c.z == 2
    assert templates._interpolated_defaults(inner) and not templates._interpolated_defaults(CountingLoader())


@dataclass
class _TypedPart:  # a schema that one option below puts into another group's part
    y: int = 1


ConfigStore.instance().store(name="attnbench_test_typed_part", node=_TypedPart)
TWO_GROUPS = {"config.yaml": "defaults:\n  - a: a1\n  - b: b1\n  - _self_\n", "a/a1.yaml": "x: 1\n",
              "a/a2.yaml": "x: 2\n", "b/b1.yaml": "y: 1\n", "b/b2.yaml": "y: 2\n"}
# Options that a comparison of values with the no-choice template would take for their part's own (found by a
# reviewer trying to break the combination): each must be composed by Hydra.
NOT_THEIR_OWN = {
    "a global option writes a value equal to the no-choice one": {
        "config.yaml": "defaults:\n  - b: b1\n  - a: a1\n  - _self_\n",
        "a/a2.yaml": "# @package _global_\na:\n  x: 2\nb:\n  y: 1\n"},
    "an option loads a schema into another part (types only change)": {
        "config.yaml": "defaults:\n  - b: b1\n  - a: a1\n  - _self_\n",
        "a/a2.yaml": "defaults:\n  - /attnbench_test_typed_part@_global_.b\n  - _self_\nx: 2\n"},
    "the default option has a nested group the other lacks": {
        "a/a1.yaml": "defaults:\n  - sub: s1\n  - _self_\nx: 1\n", "a/sub/s1.yaml": "q: 1\n"},
    "the other option has a nested group the default lacks": {
        "a/a2.yaml": "defaults:\n  - sub: s1\n  - _self_\nx: 2\n", "a/sub/s1.yaml": "q: 1\n"},
    "no option is the default (a mandatory choice)": {"config.yaml": "defaults:\n  - a: ???\n  - b: b1\n  - _self_\n"},
    "a null default puts the chosen option's key before another": {
        "config.yaml": "defaults:\n  - b: null\n  - a: a1\n  - _self_\nb:\n  z: 0\n"},
    "an option overrides another group, valid only beside another choice of it": {
        "a/a2.yaml": "# @package _global_\ndefaults:\n  - override /b: b1\n  - _self_\na:\n  x: 2\n"},
}


@pytest.mark.parametrize("case", NOT_THEIR_OWN)
def test_options_that_are_not_their_parts_own_are_composed_by_hydra(tmp_path, case):
    for path, text in (TWO_GROUPS | NOT_THEIR_OWN[case]).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    inner = ConfigLoaderImpl(create_config_search_path(str(tmp_path)))
    master = inner.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
    loader = ComposedOnceConfigLoader(inner)
    jobs = [["a=a1", "b=b1"], ["a=a2", "b=b2"], ["a=a2", "b=b1"], ["a=a1", "b=b2"]]
    loader.validate(master, jobs)
    for job in jobs:
        ours = loader.load_sweep_config(master, job)
        expected = ConfigLoaderImpl(create_config_search_path(str(tmp_path))).load_sweep_config(master, job)
        assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(expected), job
        for part in ("a", "b"):
            assert ours._get_node(part)._metadata.object_type == expected._get_node(part)._metadata.object_type


def test_a_template_copy_is_the_jobs_own(loaders):
    inner, loader, master = loaders
    first = loader.load_sweep_config(master, ["seed=1"])
    first.seed = 99  # the launcher writes into its config (the job's number, its output folder)
    assert loader.load_sweep_config(master, ["seed=2"]).seed == 2
    assert loader.load_sweep_config(master, ["timing.min_reps=5"]).seed == 0 and inner.compositions == 1


def test_a_bad_value_fails_as_in_hydra_naming_field_and_value(loaders):
    inner, loader, master = loaders
    loader.validate(master, [["seed=1"]])  # the template exists: the bad value is applied to a copy of it
    with pytest.raises(ConfigCompositionException) as ours:
        loader.validate(master, [*BATCH, ["dtype=float8"]])
    with pytest.raises(ConfigCompositionException) as hydras:
        hydra_composes(master, ["dtype=float8"])
    message = str(ours.value) + str(ours.value.__cause__)
    assert "dtype" in message and "float8" in message
    assert message == str(hydras.value) + str(hydras.value.__cause__)


def test_templates_serve_one_sweep(loaders):
    inner, loader, master = loaders
    loader.load_sweep_config(master, ["seed=1"])
    ComposedOnceConfigLoader(inner).load_sweep_config(master, ["seed=1"])  # another sweep: its files may differ
    assert inner.compositions == 2


def test_a_new_batch_drops_the_configs_nobody_asked_for(loaders):
    inner, loader, master = loaders
    loader.validate(master, BATCH)
    loader.validate(master, BATCH[:1])
    assert list(loader._validated) == [loader._key(master, BATCH[0])]


def test_a_pickled_loader_travels_without_the_held_configs(loaders):
    inner, loader, master = loaders
    loader.validate(master, BATCH)
    shipped = pickle.loads(pickle.dumps(loader))  # what joblib or submitit send to a worker
    assert shipped._validated == {} and len(loader._validated) == len(BATCH)
    assert shipped.scope == loader.scope and shipped.load_sweep_config(master, list(BATCH[0])).seed == 1


def test_the_project_config_selects_this_sweeper(compose_cfg):
    cfg = compose_cfg(return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("compose_once_sweeper.ComposeOnceSweeper")


def test_a_worker_takes_its_validated_config_from_the_sweep_folder_once(loaders, tmp_path):
    inner, loader, master = loaders
    loader.validate(master, BATCH, handoff_dir=tmp_path / ".configs")  # a launcher with workers
    assert len(list((tmp_path / ".configs").iterdir())) == len(BATCH) and loader._validated == {}
    worker = pickle.loads(pickle.dumps(loader))  # the copy a joblib or submitit worker gets with each job
    composed = worker.loader.compositions
    configs = [worker.load_sweep_config(master, list(job)) for job in BATCH]
    assert worker.loader.compositions == composed  # read back, not composed again
    for job, config in zip(BATCH, configs):
        assert OmegaConf.to_yaml(config) == OmegaConf.to_yaml(hydra_composes(master, job))
    assert list((tmp_path / ".configs").iterdir()) == []  # each file taken once
    assert worker.load_sweep_config(master, list(BATCH[0])).seed == 1  # a job run again: composed


def test_a_config_pickle_cannot_save_is_composed_by_the_worker(loaders, tmp_path, monkeypatch):
    from hydra_plugins.attnbench_sweeper import compose_once_sweeper

    def refuses(config):  # what pickle says of a structured config's class that Hydra's plugin scan loaded twice
        raise pickle.PicklingError("Can't pickle <class 'JobLibLauncherConf'>: it's not the same object")

    inner, loader, master = loaders
    monkeypatch.setattr(compose_once_sweeper.pickle, "dumps", refuses)
    loader.validate(master, BATCH, handoff_dir=tmp_path / ".configs")
    assert list((tmp_path / ".configs").iterdir()) == []
    assert [loader.load_sweep_config(master, list(job)).seed for job in BATCH] == [1, 2, 3]


def test_no_more_configs_than_the_hold_limit_are_held(loaders):
    inner, _, master = loaders
    loader = ComposedOnceConfigLoader(inner, hold_at_most=2)
    loader.validate(master, BATCH)
    assert len(loader._validated) == 2
    assert [loader.load_sweep_config(master, list(job)).seed for job in BATCH] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("sweeper, compositions", [("compose_once", 1), ("basic", 6)])
def test_a_real_sweep_composes_each_choice_of_groups_once(store, tmp_path, sweeper, compositions):
    proc = run_script("-m", "seed=1,2,3", f"hydra/sweeper={sweeper}", "shape=tiny", "device=cpu", *FAST_TIMING,
                      store=store, cwd=tmp_path, script=FIXTURES / "run_counting_compositions.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"compositions={compositions}" in proc.stderr
    assert len(list((tmp_path / "multirun").glob("[0-9]*/.hydra/config.yaml"))) == 3


# Hydra's own test suites, run through this sweeper: it subclasses Hydra's basic sweeper and wraps its config
# loader, so a Hydra release that changes those internals fails here.
@pytest.fixture
def hydra_suite_defaults():
    """Hydra's suites expect its compatibility defaults (version_base unset: jobs change directory), while the
    tests above compose with version_base="1.3", which Hydra keeps process-wide."""
    base = VersionBase.instance()
    before = base.version_base
    base.setbase(__compat_version__)
    yield
    base.version_base = before


@pytest.mark.usefixtures("hydra_suite_defaults")
@pytest.mark.parametrize("launcher_name, overrides", [("basic", ["hydra/sweeper=compose_once"])])
class TestHydraLauncherSuiteThroughComposeOnce(LauncherTestSuite):
    pass


@pytest.mark.usefixtures("hydra_suite_defaults")
@pytest.mark.parametrize("launcher_name, overrides",
                         [("basic", ["hydra/sweeper=compose_once", "hydra.sweeper.max_batch_size=2"])])
class TestHydraBatchedSweeperSuiteThroughComposeOnce(BatchedSweeperTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/sweeper=compose_once"])])
class TestHydraIntegrationSuiteThroughComposeOnce(IntegrationTestSuite):
    pass
