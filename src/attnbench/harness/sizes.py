"""`size=cpu`: an experiment at the CPU size its file states — the same problem, in minutes on 2 cores.

A shared file may hold data only (attnbench.harness.safety), so it states its CPU size in the form its sweep already
has (`hydra.sweeper.params`): `size.cpu` maps an override's key to a value or a comma-separated list of values.
At `size=cpu` the sweeper reads it (`SizePlan`):
- a key the file sweeps: its values replace the file's (decode's KV caches of 1k … 32k become 64 … 2048), which no
  config group option could do, since a sweep's values are not part of any config;
- any other key: one value for every job (`shape: gqa_prefill_cpu`, a shape option of conf/shape/);
- a field of a backend, model or mask option (`mask.window`): set on the jobs whose option has that field (the
  sliding-window jobs of a sweep over masks, not the causal ones) — it must be a field of some option of its group.
The command line still wins over all of them. What size=cpu set is in each job's overrides (its folder's
`.hydra/overrides.yaml`), its run's params (`shape.*`, `mask.*`, `size.name`) and its `choice.size` tag.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields

from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from attnbench.core.options import OPTION_GROUPS
from attnbench.harness.strict import NAMED_GROUPS

FULL = "full"
DOCS = "docs/experiments.md"


@dataclass(frozen=True)
class SizePlan:
    """What `size=NAME` does to a sweep: `values` (key -> value or comma-separated values) from the file."""

    name: str
    values: dict[str, str]
    option_fields: frozenset[str] = field(default_factory=frozenset)  # `mask.window=16`: where the option has it

    def params(self, file_params: dict[str, str]) -> dict[str, str]:
        """The sweep at this size: the file's, each key the size states replaced in place, the others added."""
        return {**file_params, **self.values}

    def job_overrides(self, overrides: list[str], config_without: DictConfig) -> list[str]:
        """A job's overrides without the option fields its options lack (`config_without`: composed without any)."""
        return [o for o in overrides if o not in self.option_fields or _has(config_without, o.split("=", 1)[0])]


def size_plan(config: DictConfig) -> SizePlan | None:
    """The plan for the size the command chose, or None for `full`; one line if the experiment states no such size."""
    size = OmegaConf.select(config, "size")
    if size is None:
        return None
    name = str(getattr(size.name, "value", size.name))
    if name == FULL:
        return None
    values = {str(k): str(v) for k, v in (size.get(name) or {}).items()}
    experiment = config.hydra.runtime.choices.get("experiment")
    if not values:
        what = f"experiment={experiment} states" if experiment else "no experiment was chosen, which would state"
        raise ConfigCompositionException(
            f"size={name}: {what} no {name} size (`size.{name}` in its file); size={name} runs one experiment file "
            f"at the size it states: -m experiment=NAME size={name} ({DOCS})")
    fields = [f"{key}={value}" for key, value in values.items() if key.split(".")[0] in NAMED_GROUPS and "." in key]
    for line in fields:
        _check_option_field(line.split("=", 1)[0], name, experiment)
    return SizePlan(name, values, frozenset(fields))


def _check_option_field(key: str, size: str, experiment: str | None) -> None:
    """`mask.window` is a field of some mask option (the sliding window's), or the plan has a typo."""
    group, _, name = key.partition(".")
    if not (OPTION_GROUPS[group].has_field(name) or _a_plugin_backend_has(group, name)):
        raise ConfigCompositionException(
            f"size.{size}.{key} (experiment={experiment}): no {group} option has a field {name!r}")


def _a_plugin_backend_has(group: str, name: str) -> bool:
    """Whether an installed plugin's backend has the field: loading plugins imports torch, so only when asked."""
    if group != "backend":
        return False
    from attnbench.core.backends import registered_backends

    return any(name in {f.name for f in dataclass_fields(backend.Config)} for backend in registered_backends().values())


def _has(config: DictConfig, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node[part]
    return True


@dataclass(frozen=True)
class ProblemKind:
    """What kind of attention problem a shape is, whatever its sizes: what `size=cpu` keeps and `shape=tiny` may
    not (tiny has as many key/value heads as query heads, and as many queries as keys)."""

    heads: str  # multi-head | grouped-query | multi-query
    queries: str  # prefill (q_len = seq_len) | decode (q_len 1) | partial (1 < q_len < seq_len)
    paged: bool

    @classmethod
    def of(cls, shape: DictConfig) -> ProblemKind:
        heads = ("multi-head" if shape.kv_heads == shape.heads else
                 "multi-query" if shape.kv_heads == 1 else "grouped-query")
        queries = ("prefill" if shape.q_len == shape.seq_len else "decode" if shape.q_len == 1 else "partial")
        return cls(heads, queries, shape.page_size > 0)


def describe(shape: DictConfig) -> str:
    """`grouped-query decode (B 8, 32 query heads over 8, q_len 1 against 4096 keys, D 128)`"""
    kind = ProblemKind.of(shape)
    heads = f"{shape.heads} heads" if kind.heads == "multi-head" else f"{shape.heads} query heads over {shape.kv_heads}"
    queries = f"S {shape.seq_len}" if kind.queries == "prefill" else f"q_len {shape.q_len} against {shape.seq_len} keys"
    paged = f", pages of {shape.page_size}" if kind.paged else ""
    return f"{kind.heads} {kind.queries} (B {shape.batch}, {heads}, {queries}, D {shape.head_dim}{paged})"


class KindCheck:
    """`shape=tiny` on gqa_prefill would run multi-head attention under the file's name: the kinds of problem the
    sweep runs against those the file states (its jobs without the command line's shape overrides; where the file
    sweeps a shape key the command line replaced, each of its values), said in one line before any job runs."""

    KEEP = ("shape", "experiment", "size", "hydra")  # what decides a job's shape: nothing else is composed again

    def __init__(self, experiment: str, given: list[str], stated_values: dict[str, list[str]]) -> None:
        self.experiment, self.given, self.stated_values = experiment, given, stated_values
        self.ran: dict[ProblemKind, str] = {}
        self.stated: dict[ProblemKind, str] = {}
        self._seen: set[tuple] = set()

    @classmethod
    def of(cls, config: DictConfig, params: dict[str, str], arguments: list[str]) -> KindCheck | None:
        given = [a for a in arguments if _key(a).split(".")[0] == "shape"]
        experiment = config.hydra.runtime.choices.get("experiment")
        if not given or not experiment:
            return None
        keys = {_key(a) for a in given}
        return cls(experiment, given, {k: str(v).split(",") for k, v in params.items() if k in keys})

    def job(self, config: DictConfig, compose, overrides: list[str]) -> None:
        """Note a validated job's kind, and the kinds the file states for it (`compose(overrides)`: a config)."""
        self.ran.setdefault(ProblemKind.of(config.shape), describe(config.shape))
        given = {_key(a) for a in self.given}
        kept = [o for o in overrides if _key(o).split(".")[0] in self.KEEP and _key(o) not in given]
        for alternative in itertools.product(*([f"{k}={v}" for v in vs] for k, vs in self.stated_values.items())):
            reference = (*kept, *alternative)
            if reference not in self._seen:
                self._seen.add(reference)
                shape = compose(list(reference)).shape
                self.stated.setdefault(ProblemKind.of(shape), describe(shape))

    def say(self) -> None:
        missing = [text for kind, text in self.stated.items() if kind not in self.ran]
        extra = [text for kind, text in self.ran.items() if kind not in self.stated]
        if missing or extra:
            what = "; ".join([*(f"{t} is not run" for t in missing), *(f"{t} is run instead" for t in extra)])
            print(f"attnbench: {' '.join(self.given)} changes what experiment={self.experiment} measures: {what}; "
                  f"size=cpu runs it small and keeps its problem ({DOCS})", file=sys.stderr)
        self.ran, self.stated = {}, {}  # said once


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]
