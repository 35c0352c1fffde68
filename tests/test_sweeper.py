"""The compose-once sweeper: each job's config composed once, validation of the whole batch kept."""

from __future__ import annotations

import pickle

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
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
from hydra_plugins.attnbench_sweeper.compose_once_sweeper import ComposedOnceConfigLoader  # noqa: E402


class CountingLoader(ConfigLoaderImpl):
    """Hydra's own loader, counting the compositions of job configs."""

    def __init__(self) -> None:
        super().__init__(config_search_path=create_config_search_path(str(CONF)))
        self.compositions = 0

    def load_sweep_config(self, master_config, sweep_overrides):
        self.compositions += 1
        return super().load_sweep_config(master_config, sweep_overrides)


@pytest.fixture
def loaders():
    inner = CountingLoader()
    master = inner.load_configuration("config", overrides=["shape=tiny"], run_mode=RunMode.MULTIRUN)
    return inner, ComposedOnceConfigLoader(inner), master


BATCH = [["seed=1", "dtype=float32"], ["seed=2", "dtype=bfloat16"], ["seed=3", "backend=math"]]


def test_validation_composes_each_job_once_and_the_launcher_gets_that_config(loaders):
    inner, loader, master = loaders
    loader.validate(master, BATCH)
    launched = [loader.load_sweep_config(master, list(job)) for job in BATCH]
    assert inner.compositions == len(BATCH)
    for job, config in zip(BATCH, launched):
        fresh = inner.load_sweep_config(master, list(job))
        assert OmegaConf.to_yaml(config) == OmegaConf.to_yaml(fresh)
    assert [c.seed for c in launched] == [1, 2, 3] and launched[1].dtype.value == "bfloat16"


def test_a_config_is_handed_out_once_then_composed_afresh(loaders):
    inner, loader, master = loaders
    loader.validate(master, BATCH[:1])
    first = loader.load_sweep_config(master, list(BATCH[0]))
    second = loader.load_sweep_config(master, list(BATCH[0]))
    assert inner.compositions == 2 and first is not second


def test_a_bad_job_anywhere_in_the_batch_fails_validation_naming_field_and_value(loaders):
    inner, loader, master = loaders
    with pytest.raises(ConfigCompositionException) as err:
        loader.validate(master, [*BATCH, ["dtype=float8"]])
    message = str(err.value) + str(err.value.__cause__)
    assert "dtype" in message and "float8" in message


def test_a_new_batch_drops_the_configs_nobody_asked_for(loaders):
    inner, loader, master = loaders
    loader.validate(master, BATCH)
    loader.validate(master, BATCH[:1])
    loader.load_sweep_config(master, list(BATCH[1]))  # from the first batch: composed again
    assert inner.compositions == len(BATCH) + 1 + 1


def test_a_pickled_loader_travels_without_the_held_configs(loaders):
    inner, loader, master = loaders
    loader.validate(master, BATCH)
    shipped = pickle.loads(pickle.dumps(loader))  # what joblib or submitit send to a worker
    assert shipped._validated == {} and len(loader._validated) == len(BATCH)
    assert shipped.load_sweep_config(master, list(BATCH[0])).seed == 1


def test_the_project_config_selects_this_sweeper(compose_cfg):
    cfg = compose_cfg(return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("compose_once_sweeper.ComposeOnceSweeper")


def test_a_validated_config_beyond_the_hold_limit_is_composed_again(loaders):
    inner, _, master = loaders
    loader = ComposedOnceConfigLoader(inner, hold_at_most=2)
    loader.validate(master, BATCH)
    for job in BATCH:
        loader.load_sweep_config(master, list(job))
    assert inner.compositions == len(BATCH) + 1


@pytest.mark.slow
@pytest.mark.parametrize("sweeper, compositions", [("compose_once", 3), ("basic", 6)])
def test_a_real_sweep_composes_each_job_once(store, tmp_path, sweeper, compositions):
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
