"""Plain-text tables for the benchmarks' terminal output."""

from __future__ import annotations

from collections.abc import Sequence


def align_columns(lines: Sequence[Sequence[str]], left: int = 1) -> str:
    """``lines`` (the header first) as aligned columns, two spaces apart: the first ``left``
    columns flush left (names), the rest flush right (numbers)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) if i < left else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths))) for line in lines)
