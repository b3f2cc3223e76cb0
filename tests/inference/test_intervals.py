"""Calibrated RUL intervals: split-conformal coverage, bands, the file, and where they show."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from amnl.errors import ConfigError, ModelError
from amnl.inference.intervals import (
    DEFAULT_BAND_EDGES,
    RulIntervals,
    conformal_quantiles,
    coverage_and_width,
)
from amnl.rundir import CALIBRATION_FILE, DRIFT_FILE, bundled_dir


def heteroscedastic(n: int, seed: int):
    """Predictions over 0-125 whose errors grow with the RUL (as the models' do)."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 125, n)
    pred = true + rng.normal(0, 1 + 0.1 * true)
    return np.clip(pred, 0, 125), true


def test_coverage_holds_on_exchangeable_data_in_every_band():
    pred, true = heteroscedastic(20_000, 0)
    iv = RulIntervals.fit(pred, true, coverage=0.8)
    p2, t2 = heteroscedastic(20_000, 1)  # fresh draws from the same engines
    lo, hi = iv.bounds(p2)
    assert coverage_and_width(lo, hi, t2)["interval_coverage"] == pytest.approx(0.8, abs=0.02)
    band = np.searchsorted(DEFAULT_BAND_EDGES, p2, side="right")
    near, far = band == 0, band == len(DEFAULT_BAND_EDGES) - 1
    assert (hi - lo)[near].mean() < (hi - lo)[far].mean()  # narrower near failure
    for b in (near, far):
        inside = ((t2 >= lo) & (t2 <= hi))[b].mean()
        assert inside == pytest.approx(0.8, abs=0.05)
    assert (lo <= p2).all() and (p2 <= hi).all() and (lo >= 0).all() and (hi <= 125).all()


def test_conformal_quantiles_use_the_finite_sample_correction():
    lo, hi = conformal_quantiles(np.arange(1, 10), 0.8)  # n = 9: ranks 1 and 9
    assert (lo, hi) == (1.0, 9.0)


def test_sparse_bands_fall_back_to_the_global_quantiles_and_tiny_sets_are_refused():
    pred = np.r_[np.full(200, 100.0), np.full(10, 5.0)]
    true = pred + np.r_[np.linspace(-10, 10, 200), np.zeros(10)]
    iv = RulIntervals.fit(pred, true)
    assert iv.n[0] == 10 and iv.lower[0] == iv.lower[1] == pytest.approx(iv.lower[0])
    with pytest.raises(ConfigError, match="too few"):
        RulIntervals.fit(pred[:20], true[:20])


def test_the_file_round_trips_and_a_broken_one_is_named(tmp_path):
    pred, true = heteroscedastic(2000, 2)
    iv = RulIntervals.fit(pred, true, source={"subsets": ["X"]})
    iv.save(tmp_path)
    assert RulIntervals.load(tmp_path) == iv
    assert RulIntervals.load(tmp_path / "missing") is None
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"format": 1, "coverage": 0.8}))
    with pytest.raises(ModelError, match="calibration.json"):
        RulIntervals.load(tmp_path)


@pytest.mark.parametrize("name", ["FD001", "FD002", "FD003", "FD004"])
def test_the_bundled_models_carry_their_calibration_and_drift_reference(name):
    folder = bundled_dir(name)
    iv = RulIntervals.load(folder)
    assert iv is not None and iv.coverage == 0.8 and len(iv.lower) == len(DEFAULT_BAND_EDGES) + 1
    assert name in iv.source["subsets"]  # held-out engines of its own subset, at least
    assert (folder / DRIFT_FILE).is_file()


@pytest.mark.needs_data
def test_predict_and_evaluate_report_the_bounds(cmapss_dir):
    from amnl.cli.app import app

    runner = CliRunner()
    out = runner.invoke(app, ["predict", "--input", str(cmapss_dir / "test_FD002.txt"),
                              "--weights", "FD002"])
    assert out.exit_code == 0, out.output
    records = json.loads(out.stdout)
    assert all(r["rul_lower"] <= r["rul"] <= r["rul_upper"] and r["nominal_coverage"] == 0.8
               for r in records)
    out = runner.invoke(app, ["evaluate", "--dataset", "FD002", "--data-dir", str(cmapss_dir),
                              "--json"])
    metrics = json.loads(out.stdout)
    assert 0 < metrics["interval_coverage"] <= 1 and metrics["interval_width"] > 0


def test_the_rul_cap_default_is_the_configs_constant():
    """One place per fact (#26): the intervals' default cap is amnl.config.RUL_CAP itself, not a
    second 125.0 (which would not follow a change of the constant)."""
    import inspect

    from amnl import config
    from amnl.inference.intervals import RulIntervals

    default = inspect.signature(RulIntervals.fit).parameters["rul_cap"].default
    assert default is config.RUL_CAP
