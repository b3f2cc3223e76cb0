from __future__ import annotations

import numpy as np
import pytest

from amnl.evaluate.metrics import balanced_rmse, macro_f1, nasa_score, rmse, rul_metrics


def test_nasa_score_penalises_late_more():
    assert nasa_score(np.array([10.0]), np.array([0.0])) == pytest.approx(np.e - 1)
    assert nasa_score(np.array([0.0]), np.array([13.0])) == pytest.approx(np.e - 1)
    assert nasa_score(np.array([5.0]), np.array([0.0])) > nasa_score(np.array([0.0]), np.array([5.0]))


def test_rmse_mae_and_mean_score():
    m = rul_metrics(np.array([3.0, 0.0]), np.array([0.0, 4.0]))
    assert m["rmse"] == pytest.approx(np.sqrt(12.5)) and m["mae"] == 3.5
    assert m["nasa_mean"] == pytest.approx(m["nasa"] / 2)
    assert rmse([1, 1], [1, 1]) == 0


def test_macro_f1():
    assert macro_f1(np.array([0, 1, 2]), np.array([0, 1, 2])) == 1.0
    assert macro_f1(np.array([0, 0, 0]), np.array([0, 1, 2])) == pytest.approx((0.5 + 0 + 0) / 3)


def test_balanced_rmse_weighs_every_class_alike():
    true = np.zeros(10)
    pred = np.r_[np.zeros(9), 4.0]  # one bad window in a small class
    groups = np.r_[np.zeros(9, int), 1]
    assert rmse(pred, true) == pytest.approx(np.sqrt(1.6))
    assert balanced_rmse(pred, true, groups) == pytest.approx(np.sqrt(8.0))
    assert balanced_rmse(pred, true, np.zeros(10, int)) == pytest.approx(rmse(pred, true))
