"""The FD001 test set shipped inside the package: NASA's bytes, and evaluation without data."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from typer.testing import CliRunner

from amnl.cli.app import app
from amnl.data.paths import sample_dir


def published_sums() -> dict[str, str]:
    from importlib import resources

    text = (resources.files("amnl.data") / "SHA256SUMS").read_text()
    return {name: digest for digest, name in (line.split() for line in text.splitlines() if line)}


def test_the_sample_is_nasas_files_byte_for_byte():
    sums = published_sums()
    for name in ("test_FD001.txt", "RUL_FD001.txt"):
        data = gzip.decompress((sample_dir() / f"{name}.gz").read_bytes())
        assert hashlib.sha256(data).hexdigest() == sums[name], name


def test_evaluate_runs_on_the_sample_when_no_data_folder_is_set_up(monkeypatch, tmp_path):
    monkeypatch.delenv("AMNL_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty cache: no data there
    out = CliRunner().invoke(app, ["evaluate", "--dataset", "FD001", "--json"])
    assert out.exit_code == 0, out.output
    assert "using the FD001 test set shipped with amnl" in out.stderr
    import json

    metrics = json.loads(out.stdout)
    assert metrics["n_engines"] == 100
    assert metrics["rmse"] == pytest.approx(11.021, abs=0.01)


def test_other_subsets_still_need_the_data(monkeypatch, tmp_path):
    monkeypatch.delenv("AMNL_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    out = CliRunner().invoke(app, ["evaluate", "--dataset", "FD002"])
    assert out.exit_code == 2 and "not found" in out.stderr
