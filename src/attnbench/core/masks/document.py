"""Documents packed into one sequence: a query sees only its own document (causally, by default).

Lengths are equal (the last document takes the remainder) or drawn at random from the job's seed, so the same
config always gives the same documents.
"""

from __future__ import annotations

import torch

from attnbench.core.masks import Mask, register_mask
from attnbench.core.options import DocumentConfig, DocumentLengths


@register_mask("document")
class Document(Mask):
    Config = DocumentConfig

    def validate(self):
        self._require("documents", 1 <= self.config.documents <= self.seq_len, f"1 … shape.seq_len ({self.seq_len})")

    def starts(self) -> torch.Tensor:
        """First position of each document."""
        n, length = self.config.documents, self.seq_len
        if self.config.lengths is DocumentLengths.equal:
            return torch.arange(n, dtype=torch.int64) * (length // n)
        generator = torch.Generator().manual_seed(self.seed)
        cuts = torch.randperm(length - 1, generator=generator)[: n - 1] + 1
        return torch.cat([torch.zeros(1, dtype=torch.int64), cuts.sort().values])

    def document_of(self) -> torch.Tensor:
        """Document index of every position (seq_len,)."""
        ids = torch.zeros(self.seq_len, dtype=torch.int64)
        ids[self.starts()[1:]] = 1
        return ids.cumsum(0)

    def on(self, device):
        self._document = self.document_of().to(device)
        return self

    def keep(self, q_idx, kv_idx):
        document = self._document
        same = document[q_idx + self.offset] == document[kv_idx]
        return same & (q_idx + self.offset >= kv_idx) if self.config.causal else same

    def row_counts(self):
        starts, document = self.starts(), self.document_of()
        ends = torch.cat([starts[1:], torch.tensor([self.seq_len])])
        own = document[self.positions()]
        if self.config.causal:
            return self.positions() - starts[own] + 1
        return (ends - starts)[own]

    def describe(self):
        causal = ", causal" if self.config.causal else ""
        return f"document({self.config.documents} {self.config.lengths.value}{causal})"
