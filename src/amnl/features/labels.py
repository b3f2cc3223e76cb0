"""Targets: piecewise-linear RUL (capped) and the 3-class health state.

The cap and the thresholds are settings (``DataConfig.rul_cap``, ``health_thresholds``; their
defaults in :mod:`amnl.config`), passed in by the caller: no second copy of them here.
"""

from __future__ import annotations

import numpy as np

from amnl.errors import ConfigError

HEALTH_CLASSES = ("healthy", "degrading", "critical")


def train_rul(lengths: np.ndarray, cap: float) -> np.ndarray:
    """RUL of every row of run-to-failure engines: last cycle - cycle, capped.

    Args:
        lengths: cycles per engine, in file order.
        cap: the RUL cap (``DataConfig.rul_cap``).

    Returns:
        float32 (sum(lengths),).

    Example:
        >>> train_rul(np.array([3]), cap=1.0)
        array([1., 1., 0.], dtype=float32)
    """
    rul = np.concatenate([np.arange(n - 1, -1, -1) for n in lengths])
    return np.minimum(rul, cap).astype(np.float32)


def health_labels(rul: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """0 healthy (RUL > hi), 1 degrading (lo < RUL <= hi), 2 critical (RUL <= lo); int64."""
    hi, lo = thresholds
    if not hi > lo:
        raise ConfigError(f"health thresholds must be (high, low) with high > low, got {thresholds}")
    rul = np.asarray(rul)
    return np.where(rul > hi, 0, np.where(rul > lo, 1, 2)).astype(np.int64)
