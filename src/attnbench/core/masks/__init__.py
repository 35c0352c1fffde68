"""Attention masks: which keys each query may see, as one rule shared by every backend and the reference.

A mask is one module here (a `Mask` subclass decorated `@register_mask`) plus `conf/mask/<name>.yaml`; a mask with
fields declares its `Config` dataclass in attnbench.core.options (read without torch). Queries are the *last*
`q_len` of `seq_len` positions, so every mask is aligned bottom-right: a decode step (q_len 1) sits at position
seq_len - 1 and a causal mask lets it see every key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from attnbench.core.errors import ConfigError
from attnbench.core.options import MaskConfig
from attnbench.core.registry import Registry

MASKS: Registry[type["Mask"]] = Registry("mask", __name__)
# Rows of the dense mask built at once: bounds the temporary index tensors for long sequences.
_ROWS_PER_CHUNK = 1024


class Mask(ABC):
    name: ClassVar[str]
    Config: ClassVar[type] = MaskConfig

    def __init__(self, config: Any, q_len: int, seq_len: int, seed: int = 0) -> None:
        # Its Config dataclass, not a DictConfig: a mask rule is traced by torch.compile inside FlexAttention, and
        # Dynamo breaks its graph on OmegaConf's attribute access (flex would then run unfused).
        self.config = config
        self.q_len, self.seq_len, self.seed = q_len, seq_len, seed
        self.offset = seq_len - q_len  # absolute position of query row 0

    def validate(self) -> None:
        """Field rules of this mask for this problem; raise ConfigError. No allocation here."""

    @abstractmethod
    def keep(self, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        """Whether query row q_idx (0 … q_len-1) may see key kv_idx; broadcasts, and is a valid flex mask_mod."""

    def row_counts(self) -> torch.Tensor:
        """Keys each query row keeps (int64, q_len). Exact; subclasses give a closed form, this counts."""
        return torch.cat([self.dense_rows(start, stop).sum(-1) for start, stop in self._chunks()])

    def kept(self) -> int:
        """Score elements kept in one (batch, head): the work an exact kernel must do."""
        return int(self.row_counts().sum())

    def keys_read(self) -> int:
        """Key positions that some query keeps: the keys (and values) a kernel must read at least once. Counted
        row block by row block; masks whose last query sees every key (none, causal, a prefix) say seq_len."""
        seen = torch.zeros(self.seq_len, dtype=torch.bool)
        for start, stop in self._chunks():
            seen |= self.dense_rows(start, stop).any(0)
        return int(seen.sum())

    def positions(self) -> torch.Tensor:
        """Absolute position of each query row."""
        return torch.arange(self.q_len, dtype=torch.int64) + self.offset

    def on(self, device: torch.device) -> "Mask":
        """Move any lookup tables `keep` reads to the device the attention runs on."""
        return self

    def dense_rows(self, start: int, stop: int, device: torch.device | str = "cpu") -> torch.Tensor:
        q_idx = torch.arange(start, stop, device=device)[:, None]
        kv_idx = torch.arange(self.seq_len, device=device)[None, :]
        return self.on(torch.device(device)).keep(q_idx, kv_idx).expand(stop - start, self.seq_len)

    def dense(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The boolean (q_len, seq_len) mask, True where a score is kept."""
        return torch.cat([self.dense_rows(a, b, device) for a, b in self._chunks()])

    def _chunks(self):
        return [(a, min(a + _ROWS_PER_CHUNK, self.q_len)) for a in range(0, self.q_len, _ROWS_PER_CHUNK)]

    def describe(self) -> str:
        return self.name

    def _require(self, field: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ConfigError(f"mask.{field}", getattr(self.config, field), expected)


register_mask = MASKS.register
registered_masks = MASKS.all
get_mask = MASKS.get
