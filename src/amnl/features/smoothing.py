"""Causal exponential smoothing of each engine's sensor history."""

from __future__ import annotations

import numpy as np


def smooth_engines(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                   alpha: float) -> np.ndarray:
    """Exponentially weighted moving average along each engine, started at its first row.

    ``s_0 = x_0``, ``s_t = alpha * x_t + (1 - alpha) * s_{t-1}``: every output row depends only
    on its engine's rows up to itself, so training windows and live data see the same filter.

    Args:
        x: (rows, features) rows of all engines, each engine contiguous and in cycle order.
        starts, lengths: first row and row count of every engine.
        alpha: smoothing factor in (0, 1]; 1 returns ``x`` unchanged.

    Returns:
        An array like ``x`` (same dtype).
    """
    if alpha >= 1.0:
        return x
    starts, lengths = np.asarray(starts), np.asarray(lengths)
    out = x.astype(np.float64)
    # Step through time with all engines at once (at most a few hundred vectorised steps).
    for t in range(1, int(lengths.max(initial=0))):
        rows = starts[lengths > t] + t
        out[rows] = alpha * out[rows] + (1.0 - alpha) * out[rows - 1]
    return out.astype(x.dtype, copy=False)
