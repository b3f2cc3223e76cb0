"""Where a benchmark's JSON goes: ``--out``, else ``benchmarks/results/<stem>-<time>.json``."""

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
