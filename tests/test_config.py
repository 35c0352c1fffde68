"""Every option composes; bad input fails before any work, naming the field, the choices and the value."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from attnbench.core.backends import registered_backends
from attnbench.core.errors import ConfigError
from attnbench.core.validation import validate
from attnbench.harness.config import DeviceName, Dtype, job_spec
from conftest import CONF, REPO


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["device", "backend", "model", "shape", "mask"])
def test_every_option_of_every_group_composes(compose_cfg, group):
    for option in _options(group):
        cfg = compose_cfg(f"{group}={option}")
        if group == "shape":
            assert all(cfg.shape[k] > 0 for k in ("batch", "heads", "kv_heads", "seq_len", "q_len", "head_dim"))
        else:
            assert str(getattr(cfg[group].name, "value", cfg[group].name)) == option


def test_group_options_match_the_registries():
    assert _options("device") == sorted(d.value for d in DeviceName)
    assert set(_options("backend")) <= set(registered_backends())


def test_each_option_is_typed_by_the_config_its_implementation_takes(compose_cfg):
    # Hydra reads the schemas from attnbench.core.options, without torch; the job builds each part with its class's
    # own Config. The two must be one dataclass, or a field would be typed one way and read another.
    from attnbench.core.masks import registered_masks
    from attnbench.core.models import registered_models
    from attnbench.core.options import OPTION_GROUPS

    for group, registry in (("backend", registered_backends()), ("mask", registered_masks()),
                            ("model", registered_models())):
        for name, implementation in registry.items():
            if implementation.__module__.startswith("attnbench."):  # not a test's stand-in
                assert implementation.Config is OPTION_GROUPS[group].config(name), f"{group}={name}"
    assert OmegaConf.get_type(compose_cfg("backend=flex").backend) is registered_backends()["flex"].Config


def test_a_job_spec_is_typed_without_torch():
    # The command's own process composes and types each job; the job worker, another process, imports torch.
    typed = ("import sys\n"
             "from hydra import compose, initialize_config_dir\n"
             "from attnbench.harness.config import job_spec, register_configs\n"
             "register_configs()\n"
             f"with initialize_config_dir(config_dir={str(CONF)!r}, version_base='1.3'):\n"
             "    cfg = compose('config', overrides=['backend=flex', 'mask=document', 'model=encoder_layer'])\n"
             "spec = job_spec(cfg)\n"
             "print(type(spec.backend).__name__, type(spec.mask).__name__, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", typed], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["FlexConfig", "DocumentConfig", "False"], proc.stderr


def test_defaults_are_the_articles_seed(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model.name == "attention" and cfg.backend.name == "default" and cfg.mask.name == "none"
    assert (cfg.shape.batch, cfg.shape.heads, cfg.shape.seq_len, cfg.shape.head_dim) == (64, 32, 256, 32)
    assert (cfg.shape.kv_heads, cfg.shape.q_len) == (32, 256)  # by default: as many kv heads, a square problem
    assert cfg.dtype is Dtype.float16 and cfg.compile is False


def test_kv_heads_and_q_len_follow_heads_and_seq_len_unless_set(compose_cfg):
    cfg = compose_cfg("shape.heads=8", "shape.seq_len=64")
    assert (cfg.shape.kv_heads, cfg.shape.q_len) == (8, 64)
    cfg = compose_cfg("shape=decode", "shape.seq_len=2048")
    assert (cfg.shape.heads, cfg.shape.kv_heads, cfg.shape.q_len, cfg.shape.seq_len) == (32, 8, 1, 2048)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "experiments").glob("*.yaml")))
def test_every_experiment_composes_with_its_sweep(compose_cfg, name):
    cfg = compose_cfg(f"experiment={name}", return_hydra_config=True)
    assert cfg.hydra.sweeper.params, f"experiments/{name}.yaml defines no sweep"
    assert cfg.shape.batch > 0


def test_experiment_files_are_shareable_sweeps():
    for path in (REPO / "experiments").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# @package _global_"), path
        assert f"experiment={path.stem}" in text, f"{path} lacks its usage comment"


def test_seed_experiments_match_the_article(compose_cfg):
    sdpa = compose_cfg("experiment=seed_sdpa", return_hydra_config=True)
    assert set(sdpa.hydra.sweeper.params.backend.split(",")) == {"default", "math", "flash", "efficient", "cudnn"}
    assert sdpa.model.name == "attention" and sdpa.mask.name == "none"
    assert (sdpa.shape.batch, sdpa.shape.heads, sdpa.shape.seq_len, sdpa.shape.head_dim) == (64, 32, 256, 32)
    csa = compose_cfg("experiment=seed_causal_self_attention", return_hydra_config=True)
    assert csa.model.name == "causal_self_attention" and csa.mask.name == "causal"
    assert (csa.shape.batch, csa.shape.seq_len, csa.shape.heads, csa.shape.head_dim) == (32, 128, 8, 64)
    assert csa.hydra.sweeper.params.compile.replace(" ", "") in ("false,true", "true,false")


def test_command_line_wins_over_an_experiment(compose_cfg):
    cfg = compose_cfg("experiment=seed_sdpa", "shape=tiny", "dtype=float32")
    assert cfg.shape.seq_len == 16 and cfg.dtype is Dtype.float32


@pytest.mark.parametrize(
    "override, field, value, allowed",
    [
        ("dtype=float64", "dtype", "float64", "bfloat16"),
        ("compile_mode=fastest", "compile_mode", "fastest", "max-autotune"),
        ("timing.method=stopwatch", "timing.method", "stopwatch", "events"),
        ("device.name=tpu", "device.name", "tpu", "cuda"),
        ("shape.batch=many", "shape.batch", "many", "Integer"),
    ],
)
def test_bad_values_fail_at_composition_naming_field_choices_and_value(compose_cfg, override, field, value, allowed):
    with pytest.raises((ValidationError, ConfigCompositionException)) as info:
        compose_cfg(override)
    message = str(info.value) + str(info.value.__cause__ or "")
    assert field in message and value in message and allowed in message


@pytest.mark.parametrize("override, option", [("backend=fastest", "flash"), ("model=bert", "attention"),
                                              ("shape=huge", "tiny"), ("mask=diagonal", "sliding_window")])
def test_unknown_group_option_lists_the_available_ones(compose_cfg, override, option):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(override)
    group, given = override.split("=")
    assert given in str(info.value) and option in str(info.value) and group in str(info.value)


@pytest.mark.parametrize("overrides, key", [(["model=causal_self_attention", "model.n_layer=12"], "n_layer"),
                                            (["backend=flash", "backend.block_size=64"], "block_size"),
                                            (["mask=causal", "mask.window=8"], "window"),
                                            (["causal=true"], "causal")])
def test_a_field_the_option_does_not_have_is_refused(compose_cfg, overrides, key):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(*overrides)
    assert key in str(info.value) + str(info.value.__cause__)


def test_each_option_has_its_own_fields(compose_cfg):
    assert compose_cfg("backend=flex").backend.block_size == 128
    assert compose_cfg("backend=performer", "backend.features=64").backend.features == 64
    assert compose_cfg("mask=sliding_window", "mask.window=8").mask.window == 8
    with pytest.raises((ValidationError, ConfigCompositionException)):
        compose_cfg("mask=document", "mask.lengths=zipf")  # an Enum of the mask's schema


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["shape.batch=0"], "shape.batch"),
        (["shape.head_dim=-8"], "shape.head_dim"),
        (["timing.min_reps=20", "timing.max_reps=10"], "timing.max_reps"),
        (["timing.min_time_s=-1"], "timing.min_time_s"),
        (["model=causal_self_attention", "model.dropout=1.5"], "model.dropout"),
        (["model=encoder_layer", "model.feedforward=0"], "model.feedforward"),
        (["shape.heads=8", "shape.kv_heads=3"], "shape.kv_heads"),
        (["shape.q_len=300"], "shape.q_len"),
        (["mask=document", "mask.documents=0"], "mask.documents"),
        (["mask=sliding_window", "mask.window=0"], "mask.window"),
    ],
)
def test_cross_field_rules_fail_before_any_allocation(compose_cfg, overrides, field):
    cfg = compose_cfg("device=cpu", *overrides)
    with pytest.raises(ConfigError) as info:
        validate(job_spec(cfg))
    assert info.value.field == field and field in str(info.value) and "expected" in str(info.value)
