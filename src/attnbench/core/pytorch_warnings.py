"""PyTorch's C++ warnings, kept: the dispatcher says *why* a kernel could not run only there."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator

# PyTorch appends the C++ source location to warnings raised in C++: noise in a reason.
_TRIGGERED_AT = re.compile(r"\s*\(Triggered internally at [^)]*\)\.?")


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[str]]:
    """Collect PyTorch's C++ warnings raised inside the block, e.g. "Flash attention kernel not used
    because: ...". The list is complete once the block has exited, also when it raised."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield messages
        finally:  # the warnings matter most when the block raises "No available kernel"
            seen = set()
            for w in caught:
                # Only PyTorch's own C++ warnings (the dispatcher's reasons carry the source location);
                # torch.compile's notices, e.g. about disabled caches, say nothing about the kernel.
                if not _TRIGGERED_AT.search(str(w.message)):
                    continue
                text = _TRIGGERED_AT.sub("", str(w.message)).strip()
                if text not in seen:
                    seen.add(text)
                    messages.append(text)
