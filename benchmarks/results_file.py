"""Where a benchmark's JSON goes (``--out``, else ``benchmarks/results/<stem>-<time>.json``),
and its rows as a plain table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(results: Any, out: Path | None, stem: str) -> Path:
    """Write ``results`` as indented JSON to ``out`` (default: a time-stamped file of
    ``stem`` in :data:`RESULTS`), make its folder, print where it went."""
    out = out or RESULTS / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def print_rows(rows: list[dict], cols: list[tuple[str, str]]) -> None:
    """Rows as ``|``-separated lines: ``cols`` is (key, format) pairs; a missing value is -."""
    print(" | ".join(c for c, _ in cols))
    for r in rows:
        print(" | ".join("-" if r.get(c) is None else f.format(r[c]) for c, f in cols))
