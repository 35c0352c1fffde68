"""What a refused command says: an option that does not exist, a group's option given as other than one name, a key
that no schema declares, or a value a field does not take, in one line (the field, the value given, what it takes);
another refusal in Hydra's own words.

Hydra's own message for `backend=flsh` is some twenty lines: the option list one per line, then the search path;
for `shape.batch=abc` five: Hydra's line, OmegaConf's, then the key and the types of the nodes around it; for
`shape.seqlen=8` six; `shape=[1,2]` is a traceback, and `backend=[math,flash]` runs flash.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import typing
from typing import Any

from hydra.errors import CompactHydraException, ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import (ConfigAttributeError, ConfigKeyError, KeyValidationError, OmegaConfBaseException,
                              ValidationError)
from omegaconf.nodes import BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode

from attnbench.harness.strict import unknown_key_message

# How Hydra says where a value it could not merge came from, which no attribute of its exception holds: an override's
# `Error merging override shape.batch=abc` (OmegaConf's error as its cause) names nothing the line does not; a
# file's `In 'shape/typo': ValidationError raised while composing config:` (the error only as its context) names
# the file.
_OVERRIDE = "Error merging override "
_IN_FILE = re.compile(r"In '([^']+)': ValidationError raised while composing config")
# Hydra's words for a key that the node it would set does not hold, the override as given last.
_NOT_A_KEY = re.compile(r"Could not override '[^']*'\.\nTo append to your config use \+(.*)\Z", re.DOTALL)
# The type of the node that refused a value, where no dataclass declares the field.
_NODE_TYPES = {BooleanNode: bool, IntegerNode: int, FloatNode: float, StringNode: str}


def not_an_option(group: str, option: Any, options: list[str]) -> str:
    return f"{group}={_as_given(option)} is not an option: expected one of {', '.join(options)}"


def missing_option_line(error: MissingConfigException) -> str | None:
    """`backend='flsh' is not an option: expected one of cudnn, default, ...` for an option of a config group that
    no source holds; None for another missing config (the primary config, a file a defaults list names)."""
    path, options = error.missing_cfg_file, error.options
    if not path or not options or "/" not in path:
        return None
    group, _, option = path.rpartition("/")
    return not_an_option(group, option, options)


def group_choice_line(arguments: list[str], config_dir: str) -> str | None:
    """`shape=[1, 2] is not an option: expected one of decode, ...` for a group's option given as other than one
    name (a list, a number, null), or a sweep's value that is, in the command line's ARGUMENTS (run.py's config in
    CONFIG_DIR); None when each option is one name. Hydra takes a list as options to merge, the last one winning,
    and crashes on a list of numbers or on a number (its TypeError, its ValueError), before anything here runs."""
    overrides = _overrides([a for a in arguments if "=" in a and not a.startswith("-")])
    given = [(o.key_or_group, value) for o in overrides for value in _values_given(o) if not isinstance(value, str)]
    if not given:  # most commands: no group to look up
        return None
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):  # Hydra's groups, plugins' included
        loader = GlobalHydra.instance().config_loader()
        for group, value in given:
            parent, _, name = group.rpartition("/")
            if name in loader.list_groups(parent):
                return not_an_option(group, value, loader.get_group_options(group))
    return None


def _overrides(arguments: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(arguments)
    except OverrideParseException:  # Hydra says it, as it does
        return []


def _values_given(override) -> list[Any]:
    """The options an override of a group gives: its value, or each value it sweeps; none for a key's value (a dotted
    key, `+`, `~`, a mapping: Hydra sets them in the config) or a glob (names)."""
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    if "." in override.key_or_group or override.is_add() or override.is_force_add() or override.is_delete():
        return []
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return list(value.list)
    if isinstance(value, RangeSweep):  # numbers: its first says it (`seed=range(10**8)` is not listed)
        return [value.start]
    if override.is_sweep_override() or isinstance(value, dict):
        return []
    return [value]


def unknown_key_line(error: Exception) -> str | None:
    """`unknown config key shape.seqlen: did you mean shape.seq_len? shape takes batch, ... (shape.seqlen=8)` for
    a key that its node does not hold, set without `+`: as attnbench.harness.strict says it of `+shape.seqlen=8`,
    then the override given; None where that is not what `error` is."""
    if not isinstance(error, ConfigCompositionException):
        return None
    cause, said = error.__cause__, _NOT_A_KEY.match(str(error))
    if not (said and isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key
            and isinstance(cause.parent_node, DictConfig)):
        return None
    return f"{unknown_key_message(cause.full_key, cause.parent_node)} ({said.group(1)})"


def bad_value_line(error: Exception) -> str | None:
    """`shape.batch='abc' is not valid: expected an integer`, `dtype='float8' is not valid: expected one of float16,
    bfloat16, float32` for a value that Hydra could not put into the config (the field as its full dotted key, the
    value given, what the field takes), with the file that gave it when a file did (`... in shape/typo is not
    valid`); None where that is not what `error` is, or what the field takes cannot be said."""
    if not isinstance(error, ConfigCompositionException):
        return None
    said = str(error)
    if isinstance(error.__cause__, ValidationError) and said.startswith(_OVERRIDE):
        cause, where = error.__cause__, None
    elif isinstance(error.__context__, ValidationError) and (found := _IN_FILE.match(said)):
        cause, where = error.__context__, found.group(1)
    else:
        return None
    if isinstance(cause, KeyValidationError) or not cause.full_key:
        return None
    accepts = _what_it_takes(cause)
    if accepts is None:
        return None
    origin = f" in {where}" if where else ""
    return f"{cause.full_key}={_as_given(cause.value)}{origin} is not valid: expected {accepts}"


def _as_given(value: Any) -> str:
    """The value as the command line writes it: a string quoted, as `backend='flsh'` is; null, true, false."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return f"[{', '.join(_as_given(item) for item in value)}]"
    return repr(value)


def _what_it_takes(cause: ValidationError) -> str | None:
    """What the field takes: the type its schema's dataclass declares for it (Optional included), else the type of
    the node that refused the value; None when neither says."""
    declared = _declared_type(cause.object_type, cause.key)
    if declared is not None:
        return _describe(declared, cause.full_key)
    node = cause.child_node
    if isinstance(node, EnumNode):
        return _describe(node.enum_type, cause.full_key)
    kind = next((kind for node_type, kind in _NODE_TYPES.items() if isinstance(node, node_type)), None)
    return None if kind is None else _describe(kind, cause.full_key)


def _declared_type(object_type: Any, key: Any) -> Any:
    if not (isinstance(object_type, type) and dataclasses.is_dataclass(object_type) and isinstance(key, str)):
        return None
    try:
        hints = typing.get_type_hints(object_type)
    except Exception:  # an annotation its module cannot resolve: the node's type says it
        return None
    declared = hints.get(key)
    return None if declared is Any else declared


def _describe(declared: Any, full_key: str, null: bool = False) -> str | None:
    """`an integer`, `one of float16, bfloat16, float32`, `a number or null` (`null`: Optional), ...; None for a
    type not listed here."""
    origin, args = typing.get_origin(declared), typing.get_args(declared)
    if origin is typing.Union:
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) != 1:
            return None
        return _describe(kinds[0], full_key, null=type(None) in args)
    if isinstance(declared, type) and issubclass(declared, enum.Enum):
        return f"one of {', '.join([member.name for member in declared] + ['null'] * null)}"
    if declared is bool:
        return "true, false or null" if null else "true or false"
    simple = {int: "an integer", float: "a number", str: "a string", bytes: "bytes"}
    if declared in simple:
        taken = simple[declared]
    elif origin is dict or declared is dict:
        taken = f"a mapping of {_name(args[0])} to {_name(args[1])}" if len(args) == 2 else "a mapping"
    elif origin is list or declared is list:
        taken = f"a list of {_name(args[0])}" if args else "a list"
    elif isinstance(declared, type) and dataclasses.is_dataclass(declared) and dataclasses.fields(declared):
        names = [f.name for f in dataclasses.fields(declared)]
        taken = f"a mapping of its fields ({', '.join(names)}), or one set alone: {full_key}.{names[0]}=..."
    else:
        return None
    return f"{taken} or null" if null else taken


def _name(declared: Any) -> str:
    return getattr(declared, "__name__", str(declared))


def refusal_text(error: Exception) -> str | None:
    """What the command prints for an exception Hydra raised instead of printing (run.py): a missing option's line,
    a bad value's, an unknown key's; for another refusal (a CompactHydraException, which Hydra prints without a
    trace) its message, then OmegaConf's that caused it, as Hydra prints them; None for anything else, a bug, whose
    traceback says it."""
    if isinstance(error, MissingConfigException) and (line := missing_option_line(error)) is not None:
        return line
    if (line := bad_value_line(error) or unknown_key_line(error)) is not None:
        return line
    if isinstance(error, CompactHydraException):
        cause = error.__cause__
        return f"{error}\n{cause}" if isinstance(cause, OmegaConfBaseException) else str(error)
    return None
