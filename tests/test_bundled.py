"""Bundled models: evaluate with no training, on the real test files (needs_data)."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from amnl.cli.app import app
from amnl.data.cmapss import SUBSETS
from amnl.rundir import INFERENCE_FILES

BUNDLED = Path(str(resources.files("amnl.weights")))
PRESENT = [s for s in SUBSETS if (BUNDLED / s).is_dir()]
#: The bundled models' published test RMSE (README, docs/results.md), last window, truth and
#: predictions capped at 125: evaluation must reproduce them.
PUBLISHED_RMSE = {"FD001": 11.021, "FD002": 11.891, "FD003": 10.742, "FD004": 11.152}


def test_bundled_models_are_complete_and_fp16():
    from safetensors.torch import load_file

    assert PRESENT, "no bundled model in src/amnl/weights"
    for name in PRESENT:
        d = BUNDLED / name
        assert all((d / f).is_file() for f in INFERENCE_FILES), name
        state = load_file(str(d / "model.safetensors"))
        assert {str(v.dtype) for v in state.values() if v.is_floating_point()} == {"torch.float16"}
        assert json.loads((d / "source.json").read_text())["val_rmse"] > 0


def test_bundled_models_follow_the_configs():
    """configs/fd00x.json retrain the bundled model's recipe (seed, threads and device aside)
    and spell out every field, so that a change of a default cannot change a recipe."""
    from dataclasses import fields

    from amnl.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in PRESENT:
        path = configs / f"{name.lower()}.json"
        raw = json.loads(path.read_text())
        for section, klass in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
            assert sorted(raw[section]) == sorted(f.name for f in fields(klass)), (path, section)
        recipe = RunConfig.load(path).recipe()
        assert RunConfig.load(BUNDLED / name / "config.json").recipe() == recipe, name


@pytest.mark.needs_data
@pytest.mark.parametrize("name", PRESENT)
def test_evaluate_bundled(name, cmapss_dir, tmp_path):
    res = CliRunner().invoke(app, ["evaluate", "--dataset", name, "--data-dir", str(cmapss_dir),
                                   "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    rows = list(csv.DictReader((tmp_path / "predictions.csv").read_text().splitlines()))
    truth = np.minimum(np.loadtxt(cmapss_dir / f"RUL_{name}.txt"), 125)
    pred = np.array([float(r["pred_rul"]) for r in rows])
    assert len(rows) == len(truth)
    # The reported RMSE is the one recomputed from the CSV against RUL_FDxxx (capped at 125).
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)), abs=1e-2)
    assert metrics["rmse"] == pytest.approx(PUBLISHED_RMSE[name], abs=5e-3)
    assert 0 <= pred.min() and pred.max() <= 125  # a predicted RUL never exceeds the cap
