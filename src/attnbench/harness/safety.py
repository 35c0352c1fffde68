"""A shared experiment file may choose what is measured, and nothing that executes code or redirects results.

An experiment file (experiments/NAME.yaml) is merged into the config with Hydra's full power: `hydra.callbacks`
with a `_target_` runs any function when Hydra starts, a `hydra.job_logging` handler writes any file,
`${oc.env:...}` copies secrets into names, params and artifacts, `tracking.uri` sends the results elsewhere.
So a file is checked before Hydra sees it, against what a sweep definition needs:
- `# @package _global_` as its header, read by Hydra's own rules, and no other header line (another package
  could place its keys under `hydra`);
- `defaults`: `_self_` and `override /GROUP: OPTION` for attnbench's own config groups, OPTION a name;
- keys of the config schema, except `tracking` (where results go is the user's choice);
- under `hydra`, only `sweeper.params`, whose keys are schema fields or groups, and whose values for a group
  or a top-level key are names (a path would make Hydra load a file no check has seen);
- under `size`, only `cpu`: the file's CPU size, in the form of `sweeper.params` and checked as it is (which size
  runs is the user's choice: `size=cpu`);
- no `_target_` (or any `_name_` instantiation key) anywhere, no interpolation that calls a resolver
  (`${oc.env:...}`, `${now:...}`, custom ones) or reads `hydra`/`tracking`.
Command-line overrides are not checked: they are the user's own.
"""

from __future__ import annotations

import dataclasses
import io
import re
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, QuotedString
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.plugins.config_source import ConfigSource
from omegaconf import OmegaConf

from attnbench.harness.config import Config

NOT_SHAREABLE = {"tracking": "sets where results are recorded: choose the store on the command line"}
SIZES = ("cpu",)  # what a file may state under `size`: the values of each size (attnbench.harness.sizes)
USERS_CHOICE = {"size": "which size runs is the user's choice (size=cpu on the command line)"}
HYDRA_SETTINGS = {  # why each of Hydra's own settings is the user's alone
    "callbacks": "instantiates objects (any importable function) when Hydra starts",
    "job_logging": "configures log handlers, which can write any file",
    "hydra_logging": "configures log handlers, which can write any file",
    "job": "sets or copies environment variables into the job and its saved config",
    "launcher": "decides what runs the jobs",
    "sweep": "moves the sweep's output folder",
    "run": "moves the run's output folder",
    "searchpath": "loads configs from other places",
}
RESOLVER = re.compile(r"\$\{\s*[\w.\-]*\s*:")  # ${name:...}: a resolver call (oc.env, oc.decode, now, custom)
NODE_REFERENCE = re.compile(r"\$\{\s*\.*([\w\-]+)")
INSTANTIATION_KEY = re.compile(r"^_\w+_$")  # _target_, _args_, _partial_, _recursive_, _convert_
OVERRIDE_PREFIX = re.compile(r"^(\+\+|\+|~)")
OPTION = re.compile(r"^\w[\w\-]*(\.[\w\-]+)*$")  # a name: no `/`, no `..`, no `scheme:`
MAX_BYTES = 1_000_000  # the largest experiment file read (the project's are < 2 kB)
MAX_NODES = 100_000  # keys and values, after alias expansion
HEADER_LINE = re.compile(r"^\s*#\s*@")  # a directive, as Hydra's header reader matches it


class UnsafeExperiment(ConfigCompositionException):
    """An experiment file that cannot be used: one line with the file, the key and why (Hydra prints no trace)."""


def schema_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def read_experiment(data: bytes, file: str) -> str:
    """A file's text from its first MAX_BYTES + 1 bytes (a larger file is refused unread)."""
    if len(data) > MAX_BYTES:
        raise UnsafeExperiment(f"{file}: larger than {MAX_BYTES:,} bytes: an experiment file is a sweep definition")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnsafeExperiment(f"{file}: not UTF-8 text (byte {e.start})") from None


def load_experiment(text: str, file: str) -> Any:
    """The parsed file, after every check; UnsafeExperiment naming the file (and line) if one fails."""
    try:
        _check_size(text, file)
        config = OmegaConf.load(io.StringIO(text))  # as Hydra parses it
    except RecursionError:
        raise UnsafeExperiment(f"{file}: nested too deeply to be a sweep definition") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UnsafeExperiment(f"{file}{where}: not valid YAML: {e.problem or e.context}") from None
    except (yaml.YAMLError, ValueError) as e:
        raise UnsafeExperiment(f"{file}: not valid YAML: {str(e).splitlines()[0]}") from None
    check_experiment(OmegaConf.to_container(config, resolve=False), _package(text, file), file)
    return config


def _check_size(text: str, file: str) -> None:
    """At most MAX_BYTES, and MAX_NODES once its aliases are expanded, counted before anything is expanded: a
    YAML alias bomb (a few lines naming each other) would take minutes and gigabytes to load."""
    if len(text) > MAX_BYTES:
        raise UnsafeExperiment(f"{file}: larger than {MAX_BYTES:,} characters: an experiment file is a sweep "
                               "definition")
    counted: dict[int, int] = {}

    def nodes(node: yaml.Node, open_: set[int]) -> int:
        if id(node) in counted:
            return counted[id(node)]
        if id(node) in open_:
            raise UnsafeExperiment(f"{file}: line {node.start_mark.line + 1}: an alias that contains itself")
        open_.add(id(node))
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        total = 1
        for child in children:
            total += nodes(child, open_)
            if total > MAX_NODES:
                raise UnsafeExperiment(f"{file}: more than {MAX_NODES:,} values once its aliases are expanded: "
                                       "an experiment file is a sweep definition, not data")
        open_.discard(id(node))
        counted[id(node)] = total
        return total

    root = yaml.compose(text, Loader=yaml.SafeLoader)  # the node graph: an alias is the node it names, unexpanded
    if root is not None:
        nodes(root, set())


def hydra_header(text: str) -> dict:
    """A file's header as Hydra reads it (private; guarded by tests/test_upstream.py): the experiments source hands
    Hydra this reading, and the check reads the package from it, so what is checked is what Hydra composes."""
    return ConfigSource._get_header_dict(text)


def _package(text: str, file: str) -> str | None:
    """The package as Hydra reads the header (its last `# @package` line wins); two directives are refused."""
    directives = [line.strip() for line in text.splitlines() if HEADER_LINE.match(line)]
    if len(directives) > 1:
        raise UnsafeExperiment(f"{file}: # @package: {len(directives)} header lines ({'; '.join(directives)}): "
                               "an experiment file has one, `# @package _global_`")
    try:
        header = hydra_header(text)
    except ValueError as e:
        raise UnsafeExperiment(f"{file}: # @package: {e}") from None
    if set(header) != {"package"}:
        raise UnsafeExperiment(f"{file}: # @package: header directives {sorted(header)}: only @package is allowed")
    return header["package"]


def check_experiment(tree: Any, package: str | None, file: str) -> None:
    def refuse(key: str, why: str) -> None:
        raise UnsafeExperiment(f"{file}: {key}: {why}; an experiment file may set config groups, the schema's "
                               "fields and hydra.sweeper.params")

    if package != "_global_":
        refuse("# @package", f"the header must be `# @package _global_`, not {package!r}")
    if not isinstance(tree, dict):
        refuse("(top level)", "expected a mapping of keys to values")
    _check_values(tree, "", refuse)
    allowed = schema_keys()
    for key, value in tree.items():
        if key == "defaults":
            _check_defaults(value, allowed, refuse)
        elif key == "hydra":
            _check_hydra(value, allowed, refuse)
        elif key == "size":
            _check_sizes(value, allowed, refuse)
        elif key in NOT_SHAREABLE:
            refuse(key, NOT_SHAREABLE[key])
        elif key not in allowed:
            refuse(str(key), f"not a setting of attnbench (it takes {', '.join(allowed)})")


def _check_values(node: Any, path: str, refuse) -> None:
    """No instantiation key and no resolver or reference to hydra/tracking, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            full = f"{path}.{key}" if path else str(key)
            if INSTANTIATION_KEY.match(str(key)):
                refuse(full, f"{key} makes Hydra import and call code")
            _check_values(value, full, refuse)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_values(value, f"{path}[{i}]", refuse)
    elif isinstance(node, str):
        _check_text(node, path, refuse)


def _check_text(text: str, key: str, refuse) -> None:
    if RESOLVER.search(text):
        refuse(key, f"{text!r} calls a resolver (it can read the environment or run code)")
    for root in NODE_REFERENCE.findall(text):
        if root in ("hydra", *NOT_SHAREABLE):
            refuse(key, f"{text!r} reads {root}")


def _check_defaults(entries: Any, allowed: list[str], refuse) -> None:
    if not isinstance(entries, list):
        refuse("defaults", "expected a list")
    for i, entry in enumerate(entries):
        if entry == "_self_":
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            refuse(f"defaults[{i}]", f"{entry!r}: expected `override /GROUP: OPTION`")
        (target, option), = entry.items()
        group = str(target).removeprefix("override").strip().lstrip("/")
        if group in USERS_CHOICE:
            refuse(f"defaults[{i}]", USERS_CHOICE[group])
        if group not in allowed or group in NOT_SHAREABLE or "@" in group:
            refuse(f"defaults[{i}]", f"{target!r}: not one of attnbench's config groups")
        if option is not None and not (isinstance(option, str) and OPTION.match(option)):
            refuse(f"defaults[{i}]", f"{option!r}: expected an option name (a name, not a path)")


def _check_hydra(node: Any, allowed: list[str], refuse) -> None:
    node = node or {}
    if not isinstance(node, dict):
        refuse("hydra", "expected a mapping")
    for key in node:
        if key != "sweeper":
            refuse(f"hydra.{key}", HYDRA_SETTINGS.get(key, "one of Hydra's own settings, which are the user's"))
    sweeper = node.get("sweeper") or {}
    if not isinstance(sweeper, dict):
        refuse("hydra.sweeper", "expected a mapping")
    for key in sweeper:
        if key != "params":
            refuse(f"hydra.sweeper.{key}", "only hydra.sweeper.params can be shared")
    _check_params(sweeper.get("params"), "hydra.sweeper.params", allowed, refuse)


def _check_sizes(node: Any, allowed: list[str], refuse) -> None:
    if not isinstance(node, dict):
        refuse("size", "expected a mapping of sizes (size.cpu) to their values")
    for key, values in node.items():
        if key not in SIZES:
            refuse(f"size.{key}", f"a file states the values of a size ({', '.join(SIZES)}); "
                   f"{USERS_CHOICE['size']}")
        if values is not None and not isinstance(values, dict):
            refuse(f"size.{key}", "expected a mapping of keys to values, as hydra.sweeper.params")
        _check_params(values, f"size.{key}", allowed, refuse)


def _check_params(params: Any, where: str, allowed: list[str], refuse) -> None:
    """A sweep's parameters, or a size's values: keys are schema fields or groups, a group's values are names."""
    if params is not None and not isinstance(params, dict):
        refuse(where, "expected a mapping of keys to values")
    for key, values in (params or {}).items():
        full = f"{where}.{key}"
        root = OVERRIDE_PREFIX.sub("", str(key)).split(".")[0].split("@")[0]
        if root in USERS_CHOICE:
            refuse(full, USERS_CHOICE[root])
        if root not in allowed or root in NOT_SHAREABLE:
            refuse(full, f"{root!r} is not something a sweep may vary")
        if isinstance(values, (dict, list)):
            refuse(full, "expected a comma-separated list of values")
        if "." not in str(key):  # a group's option, or a top-level value: never a path
            for value in _swept_values(str(key), values, full, refuse):
                if not OPTION.match(value):
                    refuse(full, f"{value!r}: expected an option name (a name, not a path)")


def _swept_values(key: str, values: Any, full: str, refuse) -> list[str]:
    """The values a sweep parameter lists, as Hydra's override parser reads them (glob and range name none)."""
    try:
        parsed = OverridesParser.create().parse_override(f"{key}={values}").value()
    except OverrideParseException as e:
        refuse(full, f"{values!r}: not a list of values Hydra can read ({str(e).splitlines()[0]})")
    items = parsed.list if isinstance(parsed, ChoiceSweep) else [parsed]
    return [item.text if isinstance(item, QuotedString) else item for item in items
            if isinstance(item, (str, QuotedString))]
