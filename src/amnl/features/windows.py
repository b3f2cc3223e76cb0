"""Sliding windows as index maps into one (rows, features) array: no per-window copies.

A window of length W ending at row e of an engine that starts at row s covers rows
max(s, e-W+1) .. e; positions before s repeat row s (front padding, spec decision).
"""

from __future__ import annotations

import numpy as np

#: Window length (spec section 1); profiling also reports 50.
WINDOW = 30


def window_index(starts: np.ndarray, lengths: np.ndarray, window: int = WINDOW, *,
                 last_only: bool = False, stride: int = 1,
                 first_end: int | None = None) -> np.ndarray:
    """Row indices of every window, int64 (n_windows, window).

    Args:
        starts: first row of each engine.
        lengths: cycles of each engine.
        window: window length W.
        last_only: one window per engine, ending at its last cycle (test protocol).
        stride: step between window ends for training windows. Engines shorter than W give a
            single padded window ending at their last cycle.
        first_end: cycle (0-based, within each engine) where the first window ends; default
            ``W - 1``, the first full window. Earlier ends give front-padded windows, as an
            engine cut after that cycle would (the test files' presentation).

    Example:
        >>> window_index(np.array([0]), np.array([3]), window=4, last_only=True)
        array([[0, 0, 1, 2]])
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if last_only:
        ends = starts + lengths - 1
        owner = starts
    else:
        first = window - 1 if first_end is None else first_end
        offset = np.minimum(first, lengths - 1)  # of the first (or only) window end
        counts = (lengths - 1 - offset) // stride + 1
        owner = np.repeat(starts, counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        ends = owner + np.repeat(offset, counts) + within * stride
    return padded_rows(ends, window, owner)


def padded_rows(ends: np.ndarray, window: int, firsts: np.ndarray | int = 0) -> np.ndarray:
    """The rows of the window ending at each of ``ends``: the last ``window`` rows up to it,
    front-padded with the history's first row (``firsts``) while the history is shorter (the
    spec's padding decision). The one place that rule lives: the batch windows
    (:func:`window_index`), the service's streaming windows
    (:meth:`amnl.features.online.OnlineFeatures`) and the windows it rebuilds from stored rows
    all take their rows from it.

    Example:
        >>> padded_rows(np.array([1, 4]), 3)
        array([[0, 0, 1],
               [2, 3, 4]])
    """
    ends = np.asarray(ends, dtype=np.int64)
    idx = ends[:, None] - (window - 1) + np.arange(window)[None, :]
    return np.maximum(idx, np.asarray(firsts, dtype=np.int64).reshape(-1, 1))


def gather(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Materialise windows: (n_windows, window, features) from (rows, features)."""
    return x[index]
