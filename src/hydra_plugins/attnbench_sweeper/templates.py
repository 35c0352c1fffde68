"""Each job's config from a template composed once per choice of config-group options.

Hydra composes a job's config in two steps: it builds the defaults list from the job's config-group overrides
(`backend=flash`, `experiment=seed_sdpa`) and merges the files it names — ~0.05 s of this project's config on
a 2-core machine, most of a trivial job's harness cost — then applies the value overrides (`seed=3`,
`compile=true`, `shape.seq_len=4096`, `+x=1`, `~y`) to the result, which costs about a millisecond. The first
step depends on the group overrides alone, so jobs that share them (a sweep over seeds, compile, dtype, mode,
sizes...) share its result. This module keeps that result (the *template*: the job composed by Hydra with its
group overrides only) and makes each job's config from a copy of it, applying the job's value overrides with
Hydra's own function and filling in the fields Hydra derives from the overrides (the task's override list, the
override dirname, the copied environment variables) as Hydra's `_load_configuration_impl` does. tests/
test_sweeper.py checks the result equals Hydra's composition over a matrix of overrides, and runs Hydra's own
launcher suites through it, so a Hydra release that changes these steps fails there.

A sweep over config groups (`backend=a,b mask=c,d model=e,f`) gives each job its own choice of options, so a
template per choice would still compose every job in full. Such a template is made instead from the templates of
each choice alone, where that is exact: each option changes only its own group's part of the config (compared
with the template of no choice: not an experiment file, which sets other groups and values), no two choices
touch the same part, and no defaults list in the config folders interpolates (where one choice could change what
another loads). Anything else is composed by Hydra.

Jobs that this cannot reproduce exactly are composed by Hydra in full: a job with a Hydra override of its own
(`hydra.job.chdir=true`, `hydra/launcher=...`) or a sweep expression, and any sweep whose command line adds
config folders (`hydra.searchpath`), whose groups the loader's own repository does not know.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in sys.modules.
import copy
import os
import sys
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

# Per process, so that a joblib or submitit worker reuses its templates across the jobs it runs (each job
# arrives with a fresh copy of the loader). A template is ~140 kB; a copy of it takes ~3 ms. (Not pickled,
# though unpickling is 5x faster: in a worker, a structured config's class can be a second copy that Hydra's
# plugin scan made of its module, which pickle refuses.)
_TEMPLATES: "OrderedDict[tuple, DictConfig]" = OrderedDict()
KEEP_AT_MOST = 64  # a sweep over groups keeps one per option, and one per choice of several
_OWN_PART: "dict[tuple, Optional[str]]" = {}  # a template of one choice → the top-level key it changes (None: more)
_PLAIN_DEFAULTS: "dict[str, bool]" = {}  # per sweep: no defaults list in its config folders interpolates
_VARIED: set = set()  # sweeps that chose several options in more than one way


def compose(loader: ConfigLoader, master_config: DictConfig, sweep_overrides: Sequence[str], scope: str) -> DictConfig:
    """The job's config, equal to `loader.load_sweep_config(master_config, sweep_overrides)`.

    Templates are reused only within one `scope` (one sweep: its files cannot change under it).
    """
    split = _split(loader, master_config, sweep_overrides)
    if split is None:
        return loader.load_sweep_config(master_config, list(sweep_overrides))
    group_lines, value_overrides, parsed = split
    template = _template(loader, master_config, group_lines, scope)
    config = copy.deepcopy(template)
    try:
        ConfigLoaderImpl._apply_overrides_to_config(value_overrides, config)
    except OmegaConfBaseException as e:  # as Hydra's load_configuration reports it
        raise ConfigCompositionException().with_traceback(sys.exc_info()[2]) from e
    hydra = config.hydra
    hydra.overrides.task = [o.input_line for o in parsed]
    with open_dict(hydra):
        for key in hydra.job.env_copy:
            hydra.job.env_set[key] = os.environ[key]
    dirname = hydra.job.config.override_dirname
    hydra.job.override_dirname = get_overrides_dirname(overrides=list(parsed), kv_sep=dirname.kv_sep,
                                                       item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
    OmegaConf.copy_cache(from_config=master_config, to_config=config)  # as load_sweep_config: same timestamps
    return config


def _split(loader: ConfigLoader, master_config: DictConfig,
           sweep_overrides: Sequence[str]) -> Optional[Tuple[Tuple[str, ...], List[Override], List[Override]]]:
    """The job's group overrides (as typed), its value overrides and all its overrides, parsed; None where Hydra
    must compose the job in full."""
    repository = getattr(loader, "repository", None)  # ConfigLoaderImpl's; another loader: compose in full
    if repository is None or master_config.hydra.get("searchpath"):
        return None
    parsed = OverridesParser.create().parse_overrides(overrides=list(sweep_overrides))
    if any(o.is_hydra_override() or o.is_sweep_override() for o in parsed):
        return None
    # Hydra's own rule (hydra/_internal/defaults_list.py, Overrides): a key naming a config group selects an
    # option unless its value is a dict, which is merged into the config like any value override.
    is_group = [repository.group_exists(o.key_or_group) and not isinstance(o.value(), dict) for o in parsed]
    groups = tuple(o.input_line for o, group in zip(parsed, is_group) if group)
    return groups, [o for o, group in zip(parsed, is_group) if not group], parsed


def _template(loader: ConfigLoader, master_config: DictConfig, group_lines: Tuple[str, ...], scope: str) -> DictConfig:
    search_path = tuple((e.provider, e.path) for e in loader.get_search_path().get_path())
    hydra_overrides = OmegaConf.to_container(master_config.hydra.overrides.hydra)  # unresolved, as Hydra's
    assert isinstance(hydra_overrides, list)
    key = (scope, search_path, os.getcwd(), master_config.hydra.job.config_name, tuple(hydra_overrides), group_lines)
    template = _TEMPLATES.get(key)
    if template is None:
        # The first choice of several options is composed in full (a sweep over values needs no more); from the
        # second on, the sweep varies its options, and each option's own template pays for itself.
        several = len(group_lines) > 1
        template = _combined(loader, master_config, group_lines, scope) if several and scope in _VARIED else None
        if several:
            _VARIED.add(scope)
        if template is None:
            overrides = [*hydra_overrides, *group_lines]
            template = loader.load_configuration(config_name=master_config.hydra.job.config_name,
                                                 overrides=overrides, run_mode=RunMode.RUN)
        _TEMPLATES[key] = template
        while len(_TEMPLATES) > KEEP_AT_MOST:
            _TEMPLATES.popitem(last=False)
    _TEMPLATES.move_to_end(key)
    return template


def _combined(loader: ConfigLoader, master_config: DictConfig, group_lines: Tuple[str, ...],
              scope: str) -> Optional[DictConfig]:
    """The template of several choices of options, from the template of no choice with each choice's own part of
    the config taken from that choice's template; None where that would not be Hydra's composition."""
    parsed = OverridesParser.create().parse_overrides(overrides=list(group_lines))
    if not all(o.type == OverrideType.CHANGE and o.package is None and isinstance(o.value(), str) for o in parsed):
        return None  # `+group=`, `~group`, `group@package=`, a list of options: Hydra's
    if not _plain_defaults(loader, scope):
        return None
    base = _template(loader, master_config, (), scope)
    combined = copy.deepcopy(base)
    taken: set = set()
    for line, override in zip(group_lines, parsed):
        single = _template(loader, master_config, (line,), scope)
        part = _own_part(base, single, override.key_or_group, (scope, line))
        if part is None or part in taken:
            return None
        taken.add(part)
        with open_dict(combined):
            combined[part] = copy.deepcopy(single._get_node(part))
        choices = combined.hydra.runtime.choices
        for group, choice in single.hydra.runtime.choices.items():
            if group == part or group.startswith(f"{part}/"):
                choices[group] = choice
    return combined


def _own_part(base: DictConfig, single: DictConfig, group: str, key: tuple) -> Optional[str]:
    """The top-level key of the config that choosing this option changes, if it changes nothing else (a nested
    group's choices included) and the template of no choice has that key too (where Hydra puts it); else None."""
    if key not in _OWN_PART:
        part = group.split("/")[0]
        before, after = _comparable(base), _comparable(single)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        before_choices, after_choices = (dict(c.hydra.runtime.choices) for c in (base, single))
        changed |= {f"choice {g}" for g in before_choices.keys() | after_choices.keys()
                    if before_choices.get(g) != after_choices.get(g) and g != part and not g.startswith(f"{part}/")}
        _OWN_PART[key] = part if changed <= {part} and part in before and part in after else None
    return _OWN_PART[key]


def _comparable(config: DictConfig) -> dict:
    """The config as plain data, unresolved, without what differs between any two jobs' templates: their choices
    and the override lists (each job's are written in by `compose`)."""
    plain = OmegaConf.to_container(config, resolve=False)
    assert isinstance(plain, dict)
    hydra = plain["hydra"]
    hydra["runtime"].pop("choices")
    hydra.pop("overrides")
    hydra["job"].pop("override_dirname")
    return plain


def _plain_defaults(loader: ConfigLoader, scope: str) -> bool:
    """No defaults list of any config in the search path interpolates (`- mask: ${backend}_mask`)."""
    repository = getattr(loader, "repository")
    if scope not in _PLAIN_DEFAULTS:
        def configs(group: str = ""):
            prefix = f"{group}/" if group else ""
            for name in repository.get_group_options(group, ObjectType.CONFIG):
                yield prefix + name
            for sub in repository.get_group_options(group, ObjectType.GROUP):
                yield from configs(prefix + sub)

        def interpolates(path: str) -> bool:
            loaded = repository.load_config(path)
            return any("${" in str(getattr(entry, field, "") or "")
                       for entry in (loaded.defaults_list or [] if loaded else [])
                       for field in ("path", "group", "value", "package"))

        _PLAIN_DEFAULTS[scope] = not any(interpolates(path) for path in configs())
    return _PLAIN_DEFAULTS[scope]
