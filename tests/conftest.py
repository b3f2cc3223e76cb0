"""Shared fixtures. Real-data tests use ``cmapss_dir``; everything else runs on synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from amnl.data.cmapss import SUBSETS, subset_files
from amnl.rundir import bundled_dir

#: The real data sit beside the repository: <repo root>/../shared/data/CMAPSS.
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CMAPSS_DIR = REPO_ROOT.parent / "shared" / "data" / "CMAPSS"


@pytest.fixture(scope="session")
def cmapss_dir() -> Path:
    """Folder of the real C-MAPSS files: ``$AMNL_DATA_DIR``, else ``../shared/data/CMAPSS``.

    Skips the test when the files are missing, except under ``CI=true`` where that is a failure.
    """
    env = os.environ.get("AMNL_DATA_DIR")
    folder = Path(env) if env else DEFAULT_CMAPSS_DIR
    missing = [p.name for name in SUBSETS for p in subset_files(folder, name).values()
               if not p.is_file()]
    if missing:
        reason = f"real C-MAPSS data not found in {folder} (missing {', '.join(missing)})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny test models gain nothing from more threads, and one thread stays fast on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test's user cache (on-the-fly ONNX exports, downloads) is a temporary folder:
    nothing is written to the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported(name)``: the bundled model's ONNX FP32 folder (made once a session)."""
    pytest.importorskip("onnxruntime")
    from amnl.export.onnx import export_run

    made: dict[str, Path] = {}

    def get(name: str = "FD001", precision: str = "fp32") -> Path:
        key = f"{name}-{precision}"
        if key not in made:
            out = tmp_path_factory.mktemp(f"export-{key}")
            file = "model_int8.onnx" if precision == "int8" else "model.onnx"
            export_run(bundled_dir(name), out / file, int8=precision == "int8")
            made[key] = out
        return made[key]

    return get
