"""Broken files and bad outputs give one line naming the file and exit 2, never a traceback."""

from __future__ import annotations

import json
import shutil
import sys
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amnl.cli.app import app
from amnl.data.synthetic import write_fleet

runner = CliRunner()
BUNDLED = Path(str(resources.files("amnl.weights"))) / "FD001"


@pytest.fixture
def model_copy(tmp_path):
    d = tmp_path / "model"
    shutil.copytree(BUNDLED, d)
    return d


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    return write_fleet(tmp_path_factory.mktemp("h"), "FD001", n_train=2, n_test=3, seed=0)["test"]


def _one_line(res, *fragments):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.mark.parametrize("content", [b"", b"\x00" * 1000, b"\xff" * 100_000])
def test_broken_weights(model_copy, histories, content):
    (model_copy / "model.safetensors").write_bytes(content)
    res = runner.invoke(app, ["predict", "--input", str(histories), "--run", str(model_copy)])
    _one_line(res, "model.safetensors: not a readable safetensors file")


def test_config_that_does_not_match_the_weights(model_copy, histories):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["model"]["lstm_hidden"] = 128
    (model_copy / "config.json").write_text(json.dumps(cfg))
    res = runner.invoke(app, ["predict", "--input", str(histories), "--run", str(model_copy)])
    _one_line(res, "config.json does not match the weights", "size mismatch")


def test_broken_config_and_preprocessing_name_the_file(model_copy, histories):
    (model_copy / "config.json").write_text('{"data": {"subset": "FD001",\n')
    res = runner.invoke(app, ["predict", "--input", str(histories), "--run", str(model_copy)])
    _one_line(res, "config.json:2:col 1: not valid JSON")
    shutil.copy(BUNDLED / "config.json", model_copy / "config.json")
    (model_copy / "preprocess.npz").write_bytes(b"PK\x03\x04 not really a zip")
    res = runner.invoke(app, ["predict", "--input", str(histories), "--run", str(model_copy)])
    _one_line(res, "preprocess.npz: not a preprocessing file")
    assert "pickle" not in res.stderr


def test_garbage_config_and_profile_files(tmp_path):
    garbage = tmp_path / "g.json"
    garbage.write_bytes(bytes(range(128, 256)))
    _one_line(runner.invoke(app, ["train", "--config", str(garbage), "--data-dir", str(tmp_path)]),
              "g.json: not a JSON config")
    _one_line(runner.invoke(app, ["plan", "--memory-mb", "100", "--profile", str(garbage)]),
              "g.json: not an `amnl profile --json` file")


def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path, histories):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    _one_line(runner.invoke(app, ["profile", "--json", str(tmp_path / "folder"), "--no-rss"]),
              "is a folder")
    _one_line(runner.invoke(app, ["profile", "--json", str(tmp_path / "file" / "p.json"), "--no-rss"]),
              "--json")
    _one_line(runner.invoke(app, ["evaluate", "--out", str(tmp_path / "file"), "--data-dir",
                                  str(histories.parent)]), "is a file")
    _one_line(runner.invoke(app, ["distill-targets", "--run", str(BUNDLED), "--out",
                                  str(tmp_path / "folder"), "--data-dir", str(histories.parent)]),
              "folder")


def test_onnx_runtime_without_onnxruntime_names_the_extra(histories, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = runner.invoke(app, ["predict", "--input", str(histories), "--runtime", "onnx"])
    _one_line(res, "amnl[export]")


def test_without_matplotlib_nothing_claims_a_plot(tmp_path, histories, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    res = runner.invoke(app, ["profile", "--plot", str(tmp_path / "p.png"), "--no-rss"])
    _one_line(res, "amnl[plot]")  # up front: nothing was measured
    assert "measuring" not in res.output
    res = runner.invoke(app, ["evaluate", "--data-dir", str(histories.parent), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "predictions.png" not in res.stdout and "no plot: matplotlib is not installed" in res.stderr
    assert (tmp_path / "predictions.csv").is_file() and not (tmp_path / "predictions.png").exists()
