"""pyproject.toml: one place for the version and for each group of optional dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import amnl

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
ONNX_TRIO = {"onnx", "onnxruntime", "onnxscript"}


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def _closure(extras: dict[str, list[str]], extra: str) -> set[str]:
    """The package names an extra pulls in, through self-references such as amnl[export]."""
    names: set[str] = set()
    for req in extras[extra]:
        if _name(req) == "amnl":
            for inner in re.search(r"\[(.*)\]", req).group(1).split(","):
                names |= _closure(extras, inner.strip())
        else:
            names.add(_name(req))
    return names


def test_the_version_is_written_once():
    """amnl.__version__ is the version; pyproject takes it from there (it was written twice)."""
    data = _project()
    assert "version" not in data["project"] and "version" in data["project"]["dynamic"]
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "amnl.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", amnl.__version__)


def test_the_onnx_trio_is_listed_once_and_reaches_every_extra_that_runs_onnx():
    """onnx, onnxruntime and onnxscript are the export extra's; the extras that run a model on
    ONNX Runtime include it (they repeated the three names, five times)."""
    extras = _project()["project"]["optional-dependencies"]
    listed = {e: {_name(r) for r in reqs} & ONNX_TRIO for e, reqs in extras.items()}
    assert listed.pop("export") == ONNX_TRIO
    assert not any(listed.values()), listed
    for extra in ("serve", "score", "ray", "dev"):
        assert ONNX_TRIO <= _closure(extras, extra), extra
    assert {"fastapi", "pyarrow", "ray", "psycopg", "pytest"} <= _closure(extras, "dev")
