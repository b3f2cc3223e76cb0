"""RUL and health metrics: pure numpy functions."""

from __future__ import annotations

import numpy as np


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, float) - np.asarray(true, float)) ** 2)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(true, float))))


def nasa_score(pred: np.ndarray, true: np.ndarray) -> float:
    """Sum over engines of exp(-d/13) - 1 (early, d < 0) or exp(d/10) - 1 (late), d = pred - true.

    Example:
        >>> round(nasa_score(np.array([10.0]), np.array([0.0])), 3)
        1.718
    """
    d = np.asarray(pred, float) - np.asarray(true, float)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(true)))


def macro_f1(pred: np.ndarray, true: np.ndarray, n_classes: int = 3) -> float:
    """Mean F1 over the classes present in ``true`` or ``pred``."""
    pred, true = np.asarray(pred), np.asarray(true)
    scores = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (true == c))
        fp = np.sum((pred == c) & (true != c))
        fn = np.sum((pred != c) & (true == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def rul_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, NASA score (sum and mean per engine)."""
    s = nasa_score(pred, true)
    return {"rmse": rmse(pred, true), "mae": mae(pred, true), "nasa": s,
            "nasa_mean": s / max(len(np.asarray(pred)), 1)}


def balanced_rmse(pred: np.ndarray, true: np.ndarray, groups: np.ndarray) -> float:
    """Root of the mean over groups (health classes) of each group's mean squared error.

    Every group present weighs the same, however many windows it has.

    Example:
        >>> balanced_rmse(np.array([0.0, 0.0, 0.0, 3.0]), np.zeros(4), np.array([0, 0, 0, 1]))
        2.1213203435596424
    """
    err = (np.asarray(pred, float) - np.asarray(true, float)) ** 2
    groups = np.asarray(groups)
    return float(np.sqrt(np.mean([err[groups == g].mean() for g in np.unique(groups)])))


def health_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    return {"health_accuracy": accuracy(pred, true), "health_macro_f1": macro_f1(pred, true)}
