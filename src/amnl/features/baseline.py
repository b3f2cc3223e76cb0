"""Each engine's deviation from its own early cycles (unit-to-unit offsets removed)."""

from __future__ import annotations

import numpy as np


def baseline_deviation(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                       cycles: int) -> np.ndarray:
    """``x`` minus the running mean of its engine's first ``cycles`` rows.

    Engines leave the factory with different wear and manufacturing offsets, which at mid-life
    are as large as the degradation itself. Subtracting the mean of the engine's first rows
    leaves the change since then. Causal: the baseline of row ``t`` is the mean of rows
    ``0..min(t, cycles - 1)`` of its engine, so a live history gives the same values as the
    training files once it is ``cycles`` long.

    Args:
        x: (rows, features) rows of all engines, each engine contiguous and in cycle order.
        starts, lengths: first row and row count of every engine.
        cycles: rows averaged into the baseline (>= 1).

    Returns:
        An array like ``x`` (same dtype).

    Example:
        >>> baseline_deviation(np.array([[1.0], [3.0], [8.0]]), np.array([0]), np.array([3]), 2).ravel()
        array([0., 1., 6.])
    """
    out = np.empty_like(x)
    for start, n in zip(np.asarray(starts), np.asarray(lengths)):
        seg = x[start:start + n].astype(np.float64)
        k = min(cycles, n)
        head = np.cumsum(seg[:k], axis=0) / np.arange(1, k + 1)[:, None]
        base = np.concatenate([head, np.repeat(head[-1:], n - k, axis=0)])
        out[start:start + n] = seg - base
    return out
