"""Where runs go and how a config becomes MLflow params, within MLflow's limits."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# MLflow's limits: param values up to 6000 characters, at most 100 params per log_batch call, and
# names made of letters, digits, "_", "-", ".", " " and "/" only.
MAX_PARAM_VALUE = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_TAG_VALUE = 8000
_BAD_NAME_CHARS = re.compile(r"[^\w\-. /]")


def project_root(config: DictConfig) -> Path:
    """The folder holding conf/: where the embedded store lives, whatever Hydra's output folder is."""
    for source in OmegaConf.select(config, "hydra.runtime.config_sources", default=[]) or []:
        if source.provider == "main" and source.schema == "file":
            return Path(source.path).resolve().parent
    return Path.cwd().resolve()


def tracking_uri(config: DictConfig) -> str:
    uri = config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = project_root(config) / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    # MLflow 3 refuses the plain ./mlruns file store; SQLite is the embedded default.
    return f"sqlite:///{store / 'mlflow.db'}"


def default_uri() -> str:
    """The store a command outside a sweep reads: $MLFLOW_TRACKING_URI, else the checkout's mlruns/ (the sweeps'
    default when attnbench is installed from a checkout), else ./mlruns."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    checkout = Path(__file__).resolve().parents[3]
    root = checkout if (checkout / "conf" / "config.yaml").is_file() else Path.cwd()
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def artifact_location(config: DictConfig, uri: str) -> str | None:
    """Artifacts of a local SQLite store go beside it; a server chooses its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
    return None


def safe_name(name: str) -> str:
    return _BAD_NAME_CHARS.sub("_", name)


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts → dotted keys; lists and scalars → strings MLflow accepts."""
    if not isinstance(tree, dict):
        return {safe_name(prefix): _value(tree)}
    flat: dict[str, str] = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


# An experiment's stated CPU sizes (`size.cpu`: what size=cpu would set): the sizes that ran are in shape.*, mask.*
# and size.name; logging the statement too would give every run a dozen params that describe another run.
NOT_PARAMS = ("size.cpu.",)


def job_params(config: DictConfig) -> dict[str, str]:
    """The flattened resolved job config, without Hydra's own node."""
    job_only = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    params = flatten(OmegaConf.to_container(job_only, resolve=True, enum_to_str=True))
    return {key: value for key, value in params.items() if not key.startswith(NOT_PARAMS)}


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]
