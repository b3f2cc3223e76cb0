"""Targets: piecewise-linear RUL (capped) and the 3-class health state."""

from __future__ import annotations

import numpy as np

#: RUL cap: early-life degradation is invisible in the sensors (spec section 1).
RUL_CAP = 125.0
#: Health thresholds on the capped RUL (decision): healthy > 80, degrading (30, 80], critical <= 30.
HEALTH_THRESHOLDS = (80.0, 30.0)
HEALTH_CLASSES = ("healthy", "degrading", "critical")


def train_rul(lengths: np.ndarray, cap: float = RUL_CAP) -> np.ndarray:
    """RUL of every row of run-to-failure engines: last cycle - cycle, capped.

    Args:
        lengths: cycles per engine, in file order.

    Returns:
        float32 (sum(lengths),).

    Example:
        >>> train_rul(np.array([3]), cap=1.0)
        array([1., 1., 0.], dtype=float32)
    """
    rul = np.concatenate([np.arange(n - 1, -1, -1) for n in lengths])
    return np.minimum(rul, cap).astype(np.float32)


def health_labels(rul: np.ndarray, thresholds: tuple[float, float] = HEALTH_THRESHOLDS) -> np.ndarray:
    """0 healthy (RUL > hi), 1 degrading (lo < RUL <= hi), 2 critical (RUL <= lo); int64."""
    hi, lo = thresholds
    if not hi > lo:
        raise ValueError(f"health thresholds must be (high, low) with high > low, got {thresholds}")
    rul = np.asarray(rul)
    return np.where(rul > hi, 0, np.where(rul > lo, 1, 2)).astype(np.int64)
