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
template per choice would still compose every job in full. From a sweep's second choice of several options on,
such a template is made instead from the template of no choice, with each option's own part of the config taken
from the template of that option alone, where that is exact: everything the option loads, and everything the
default option it replaces loaded, goes under its group's top-level key (per Hydra's defaults lists: not an
experiment file or any `@package _global_` option), the rest of the config is unchanged, both name the same
nested groups, no two choices take the same part, the config and each option compose on their own, and no
defaults list in the config folders interpolates (where one choice could change what another option loads).
Anything else is composed by Hydra; tests/test_sweeper.py holds the cases where a comparison of values alone
would have been wrong.

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
_OWN_PART: "dict[tuple, Optional[str]]" = {}  # (sweep, one choice) → the top-level key that is its own, or None
_COMBINABLE: "dict[str, bool]" = {}  # per sweep: may its templates of several choices be combined (_no_choice)
_NO_CHOICE_FILES: "dict[str, set]" = {}  # per sweep: (file, package) of its defaults list with no group choice
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
    hydra_overrides = _hydra_overrides(master_config)
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


def _hydra_overrides(master_config: DictConfig) -> List[str]:
    """The sweep's Hydra overrides, unresolved, as Hydra passes them to each job's composition."""
    overrides = OmegaConf.to_container(master_config.hydra.overrides.hydra)
    assert isinstance(overrides, list)
    return overrides


def _combined(loader: ConfigLoader, master_config: DictConfig, group_lines: Tuple[str, ...],
              scope: str) -> Optional[DictConfig]:
    """The template of several choices of options, from the template of no choice with each choice's own part of
    the config taken from that choice's template; None where that would not be Hydra's composition."""
    parsed = OverridesParser.create().parse_overrides(overrides=list(group_lines))
    if not all(o.type == OverrideType.CHANGE and o.package is None and isinstance(o.value(), str) for o in parsed):
        return None  # `+group=`, `~group`, `group@package=`, a list of options: Hydra's
    base = _no_choice(loader, master_config, scope)
    if base is None:
        return None
    combined = copy.deepcopy(base)
    taken: set = set()
    for line, override in zip(group_lines, parsed):
        part = _own_part(loader, master_config, base, line, override.key_or_group, scope)
        if part is None or part in taken:
            return None
        taken.add(part)
        single = _template(loader, master_config, (line,), scope)
        with open_dict(combined):
            combined[part] = copy.deepcopy(single._get_node(part))
        choices = combined.hydra.runtime.choices
        for group in _choices_in(single, part):  # the same groups as the no-choice template's (_own_part)
            choices[group] = single.hydra.runtime.choices[group]
    return combined


def _no_choice(loader: ConfigLoader, master_config: DictConfig, scope: str) -> Optional[DictConfig]:
    """The template of no group choice, if this sweep's templates may be combined: no defaults list of any config
    in the search path interpolates (`- c: ${a}`: one choice could change what another option loads), and the
    config composes with no choice (no mandatory `???` option)."""
    if scope not in _COMBINABLE:
        try:
            _COMBINABLE[scope] = not _interpolated_defaults(loader) and (
                _template(loader, master_config, (), scope) is not None)
        except Exception:  # noqa: BLE001 - Hydra composes each job, and says what is wrong with it
            _COMBINABLE[scope] = False
    return _template(loader, master_config, (), scope) if _COMBINABLE[scope] else None


def _own_part(loader: ConfigLoader, master_config: DictConfig, base: DictConfig, line: str, group: str,
              scope: str) -> Optional[str]:
    """The top-level key of the config that choosing this option (alone) changes, if it is the option's own: what
    the option loads, and what the default option it replaces loaded, all lands under that key (Hydra's defaults
    lists say where each file goes: an `@package _global_` file or a schema put elsewhere is not), the values
    outside it are unchanged, the top-level keys come in the same order (a group whose default is null puts its
    key elsewhere than the primary config's values for it), and it names the same nested groups. None otherwise, or where the option alone
    does not compose (it may only be valid beside another choice)."""
    key = (scope, line)
    if key not in _OWN_PART:
        part = group.split("/")[0]
        try:
            single = _template(loader, master_config, (line,), scope)
            own = (_loads_only_into(loader, master_config, line, part, scope)
                   and _changed(base, single) <= {part} and part in base
                   and list(base.keys()) == list(single.keys())
                   and list(_choices_in(base, part)) == list(_choices_in(single, part)))
        except Exception:  # noqa: BLE001 - the job itself is composed by Hydra
            own = False
        _OWN_PART[key] = part if own else None
    return _OWN_PART[key]


def _loads_only_into(loader: ConfigLoader, master_config: DictConfig, line: str, part: str, scope: str) -> bool:
    """Every file that differs between the defaults lists of no choice and of this choice goes under `part`."""
    def loaded(group_lines: List[str]) -> set:
        found = loader.compute_defaults_list(master_config.hydra.job.config_name,
                                             [*_hydra_overrides(master_config), *group_lines], RunMode.RUN)
        return {(d.config_path, d.package) for d in found.defaults}

    if scope not in _NO_CHOICE_FILES:
        _NO_CHOICE_FILES[scope] = loaded([])
    return all(package == part or (package or "").startswith(f"{part}.")
               for _, package in _NO_CHOICE_FILES[scope] ^ loaded([line]))


def _changed(base: DictConfig, single: DictConfig) -> set:
    """Top-level keys whose values differ, unresolved ("hydra" for the Hydra node, choices and override lists
    aside: each job's are written in by `compose`)."""
    before, after = _comparable(base), _comparable(single)
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _choices_in(config: DictConfig, part: str) -> List[str]:
    return [g for g in config.hydra.runtime.choices if g == part or g.startswith(f"{part}/")]


def _comparable(config: DictConfig) -> dict:
    """The config as plain data, unresolved, without the choices and override lists."""
    plain = OmegaConf.to_container(config, resolve=False)
    assert isinstance(plain, dict)
    hydra = plain["hydra"]
    hydra["runtime"].pop("choices")
    hydra.pop("overrides")
    hydra["job"].pop("override_dirname")
    return plain


def _interpolated_defaults(loader: ConfigLoader) -> bool:
    """Does a defaults list of any config in the search path interpolate?"""
    repository = getattr(loader, "repository")

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

    return any(interpolates(path) for path in configs())
