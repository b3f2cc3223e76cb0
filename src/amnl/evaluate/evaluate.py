"""One evaluation routine for every runtime and precision (torch FP32/BF16/FP16/INT8, ONNX).

A runtime is any callable ``predict(x) -> (rul (N,), probabilities (N, 3))`` over windows
``x`` float32 (N, W, F); the numbers are comparable by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amnl.data.cmapss import Subset
from amnl.errors import DataError
from amnl.evaluate.metrics import balanced_rmse, health_metrics, rmse, rul_metrics
from amnl.features.pipeline import Preprocessor, Windows
from amnl.inference import PredictFn


def score_windows(predict: PredictFn, windows: Windows, prefix: str = "") -> dict[str, float]:
    """RUL and health metrics of ``predict`` on labelled windows."""
    rul, prob = predict(windows.arrays())
    out = {**rul_metrics(rul, windows.rul),
           "rmse_balanced": balanced_rmse(rul, windows.rul, windows.health),
           **health_metrics(prob.argmax(1), windows.health)}
    return {f"{prefix}{k}": v for k, v in out.items()}


@dataclass
class TestReport:
    """Result of the last-window test protocol on one subset."""

    metrics: dict[str, float]
    unit: np.ndarray
    true_rul: np.ndarray
    """Capped true RUL after the last cycle of each test engine."""
    pred_rul: np.ndarray
    probabilities: np.ndarray
    rul_lower: np.ndarray | None = None
    """Calibrated bounds of each prediction (None without a calibration)."""
    rul_upper: np.ndarray | None = None
    warnings: list[list[str]] | None = None
    """Each engine's input warnings (:func:`amnl.inference.checks.unit_warnings`), when the
    caller checked them (``amnl evaluate`` does)."""


def evaluate_test(predict: PredictFn, pre: Preprocessor, subset: Subset, *,
                  all_windows: bool = False, intervals=None) -> TestReport:
    """Score on the official test set: one prediction per engine from its last window.

    Metrics: ``rmse``, ``mae``, ``nasa``, ``nasa_mean``, health accuracy / macro-F1 (truth
    capped at the RUL cap); ``rmse_raw`` against the uncapped truth; and, with
    ``all_windows``, the secondary figure ``all_windows_rmse`` over every test window (labels =
    capped RUL at that cycle; about 100x the windows, so it dominates the cost).
    """
    if subset.test is None or subset.rul is None:
        raise DataError(f"{subset.name}: test file and RUL file are needed for evaluation")
    last = pre.windows(subset.test, last_only=True, rul_after_end=subset.rul)
    rul, prob = predict(last.arrays())
    metrics = {**rul_metrics(rul, last.rul), **health_metrics(prob.argmax(1), last.health),
               "rmse_raw": rmse(rul, subset.rul), "n_engines": len(last)}
    if all_windows:
        every = pre.windows(subset.test, rul_after_end=subset.rul)
        metrics["all_windows_rmse"] = score_windows(predict, every)["rmse"]
        metrics["n_windows"] = len(every)
    lower = upper = None
    if intervals is not None:
        from amnl.inference.intervals import coverage_and_width

        lower, upper = intervals.bounds(rul)
        metrics.update(coverage_and_width(lower, upper, last.rul),
                       interval_stated_coverage=intervals.coverage)
    return TestReport(metrics, last.unit, last.rul, rul, prob, lower, upper)

