"""Thread counts for measurements, restored afterwards (no process-wide state left behind)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def resolve_threads(threads: int) -> int:
    """``threads``, or every core for 0."""
    return threads or os.cpu_count() or 1


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count at ``threads`` (0: every core), then
    put the previous count back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(resolve_threads(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
