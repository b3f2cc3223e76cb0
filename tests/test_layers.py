"""Imports follow the data flow (#26 review): data -> features -> model -> train -> evaluate ->
inference -> serve; the profiler measures the pipeline and is imported by none of its stages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "amnl"
PIPELINE = ("data", "features", "model", "train", "evaluate", "inference")


def imported(path: Path) -> set[str]:
    """Every amnl module a file imports, at its top or inside a function."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "amnl" or n.startswith("amnl.")}


def offenders(stage: str, forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    out = {}
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        bad = {m for m in imported(path) if m.startswith(forbidden)}
        if bad:
            out[str(path.relative_to(PACKAGE))] = bad
    return out


@pytest.mark.parametrize("stage", PIPELINE)
def test_no_pipeline_stage_imports_the_profiler(stage):
    """inference/runtime.py imported profiling.memory and train/run.py profiling.machine."""
    assert offenders(stage, ("amnl.profiling",)) == {}


def test_the_data_stage_imports_no_later_stage():
    """data/check.py imported features.conditions (to count operating regimes)."""
    later = tuple(f"amnl.{s}" for s in (*PIPELINE[1:], "serve", "score", "export", "cli"))
    assert offenders("data", later) == {}


def test_inference_does_not_import_evaluate():
    """inference/predictor.py imported evaluate for the runtime's type."""
    assert offenders("inference", ("amnl.evaluate",)) == {}
