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
    schema = OmegaConf.get_type(node)
    fields = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key, child in node.items_ex(resolve=False):
        if not path and key in NOT_CHECKED:
            continue
        full = f"{path}{key}"
        if fields is not None and key not in fields:
            yield _message(full, str(key), path, fields)
        elif isinstance(child, DictConfig) and not OmegaConf.is_missing(node, key):
            yield from _unknown(child, f"{full}.")


def _message(full: str, key: str, path: str, fields: list[str]) -> str:
    nearest = difflib.get_close_matches(key, fields, n=1)
    hint = f"did you mean {path}{nearest[0]}? " if nearest else ""
    where = path.rstrip(".") or "the top level"
    return f"unknown config key {full}: {hint}{where} takes {', '.join(fields)}"
