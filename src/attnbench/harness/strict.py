"""Unknown config keys are refused, even when added with `+`.

Hydra's `+key=value` adds a key that no schema declares, so `+shape.seqlen=8` would run with the default
seq_len and record both. Every config group node keeps its structured type (a dataclass), so extra keys are
found generically: a key that is not a field of its node's dataclass. Nodes without a schema are not checked.
"""

from __future__ import annotations

import dataclasses
import difflib

from omegaconf import DictConfig, OmegaConf

NOT_CHECKED = ("hydra",)  # Hydra's own settings: its own schema, and the user's to extend


def unknown_key_problem(cfg: DictConfig) -> str | None:
    """One line naming the first unknown key, the nearest valid key and the valid keys; None if all are known."""
    problems = list(_unknown(cfg, ""))
    return problems[0] if problems else None


def _unknown(node: DictConfig, path: str):
    fields = _fields(node)
    for key, child in node.items_ex(resolve=False):
        if not path and key in NOT_CHECKED:
            continue
        full = f"{path}{key}"
        if fields is not None and key not in fields:
            yield _message(full, str(key), path, fields)
        elif isinstance(child, DictConfig) and not OmegaConf.is_missing(node, key):
            yield from _unknown(child, f"{full}.")


def unknown_key_message(full_key: str, node: DictConfig) -> str:
    """The line for a key that NODE does not hold, given as its full dotted key: the same words for `shape.seqlen=8`,
    which Hydra refuses (attnbench.harness.bad_option), as for `+shape.seqlen=8`, which it adds; a node without a
    schema lists the keys it holds."""
    path, _, key = full_key.rpartition(".")
    fields = _fields(node)
    return _message(full_key, key, f"{path}." if path else "", fields if fields is not None else [str(k) for k in node])


def _fields(node: DictConfig) -> list[str] | None:
    """The keys NODE's schema declares; None for a node without one."""
    schema = OmegaConf.get_type(node)
    return [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None


def _message(full: str, key: str, path: str, fields: list[str]) -> str:
    nearest = difflib.get_close_matches(key, fields, n=1)
    hint = f"did you mean {path}{nearest[0]}? " if nearest else ""
    where = path.rstrip(".") or "the top level"
    return f"unknown config key {full}: {hint}{where} takes {', '.join(fields)}"


# Groups whose option is a registered class, found by its `name`: an override of the name would run another class
# under the schema (and the `choice.*` tag) of the option picked.
NAMED_GROUPS = ("backend", "model", "mask")


def renamed_option_problem(cfg: DictConfig, choices) -> str | None:
    """`backend=flash backend.name=math` would run math recorded as flash: refuse a name that is not the option's."""
    for group in NAMED_GROUPS:
        chosen, name = (choices or {}).get(group), OmegaConf.select(cfg, f"{group}.name")
        if chosen and name is not None and str(name) != chosen:
            return (f"{group}.name={name!r} is not valid: expected {chosen!r}, the option chosen; "
                    f"to run {name}, choose it: {group}={name}")
    return None
