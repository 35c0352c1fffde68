"""A job's case: what was measured, apart from how it was timed and where it was recorded.

Two jobs with the same case key ran the same problem (shape, mask, dtype, mode), through the same backend and
model, compiled the same way, on the same device choice, from the same seed. Resuming a sweep skips a case that
already finished `ok`; comparing two sweeps pairs their jobs by case. Timing knobs and the tracking store are not
part of a case: they change how well or where a number was taken, not what it measures.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

# Top-level keys that say how a job was run or recorded, not what it ran. `size` chose the shape and mask values
# a job ran, which are in its case; the size section itself is the sweeper's instruction (attnbench.harness.sizes).
NOT_PART_OF_A_CASE = ("hydra", "timing", "tracking", "resume", "size")
# Keys added after cases were first recorded, left out at their default value: older runs' cases stay the same.
LEFT_OUT_AT_DEFAULT = {"inputs": "normal", "shape.page_size": 0}


def case_config(cfg: DictConfig) -> dict:
    """The resolved config of what was measured, as plain data."""
    kept = [key for key in cfg if key not in NOT_PART_OF_A_CASE]
    case = OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True, enum_to_str=True)
    for dotted, default in LEFT_OUT_AT_DEFAULT.items():
        *parents, key = dotted.split(".")
        node = case
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node and node[key] == default:
            del node[key]
    return case


def case_key(cfg: DictConfig) -> str:
    """A short, stable hash of `case_config` (key order and Python version do not change it)."""
    canonical = json.dumps(case_config(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
