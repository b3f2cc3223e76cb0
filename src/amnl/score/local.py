"""Scoring in one process: a piece of whole assets at a time, windows in planner-sized batches.

Memory is bounded by a piece (:data:`amnl.score.histories.CHUNK_ROWS` rows, or the longest
asset) plus one batch of windows (:data:`WINDOW_BATCH`, about 14 MB for a 30 x 29 window),
whatever the input's size: the windows of a piece are never all materialised, they are
gathered from its model-ready rows a batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from amnl.errors import DataError
from amnl.features.labels import HEALTH_CLASSES
from amnl.score.histories import Piece

#: Windows gathered and predicted at once.
WINDOW_BATCH = 4096
CYCLES = ("all", "last")


def score_piece(predictor, piece: Piece, cycles: str = "all") -> dict:
    """Predictions of one piece: a column dict (asset, cycle, rul, bounds, health, p_*,
    model_id as arrays; warnings, a list of lists of strings, empty when none), one row per
    scored cycle, in input order.

    Args:
        cycles: ``all`` (every cycle, as the service predicts them one by one) or ``last``
            (each asset's last cycle, as ``amnl predict``).

    The warnings are :mod:`amnl.inference.checks`': with ``last``, each asset's whole history's
    (:func:`~amnl.inference.checks.unit_warnings`, what ``amnl predict`` says); with ``all``,
    each row's, about the history up to that row
    (:func:`~amnl.inference.checks.windows_warnings`, what the service stores with each
    prediction: the readings of its window, a history younger than the window, a first cycle
    other than 1).

    Raises:
        DataError: a value that cannot give a prediction, naming the asset and cycle.
    """
    from amnl.inference import checks

    if cycles not in CYCLES:
        raise DataError(f"--cycles must be all or last, got {cycles!r}")
    table, names = piece
    pre = predictor.preprocessor
    cond, scaled = pre.scale(table)  # its errors name the asset (EngineTable.names)
    w = pre.windows(table, last_only=cycles == "last",
                    first_end=0 if cycles == "all" else None, scaled=scaled)
    rul = np.empty(len(w), np.float32)
    prob = np.empty((len(w), len(HEALTH_CLASSES)), np.float32)
    for b in range(0, len(w), WINDOW_BATCH):
        r, p = predictor(w.x[w.index[b: b + WINDOW_BATCH]])
        rul[b: b + len(r)], prob[b: b + len(r)] = r, p
    bad = ~(np.isfinite(rul) & np.isfinite(prob).all(1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"asset {names[int(w.unit[i]) - 1]} cycle {int(w.cycle[i])}: the model's "
                        "output is not a number", path=table.path)
    out = {"asset": np.array(names, dtype=object)[w.unit - 1], "cycle": w.cycle, "rul": rul}
    if predictor.intervals is not None:
        lo, hi = predictor.intervals.bounds(rul)
        out["rul_lower"], out["rul_upper"] = lo.astype(np.float32), hi.astype(np.float32)
    out["health"] = np.array(HEALTH_CLASSES, dtype=object)[prob.argmax(1)]
    for j, c in enumerate(HEALTH_CLASSES):
        out[f"p_{c}"] = prob[:, j]
    out["model_id"] = np.full(len(w), predictor.model_id, dtype=object)
    if cycles == "last":
        per_asset = checks.unit_warnings(pre, predictor.config, table, cond, scaled)
        out["warnings"] = [per_asset[u - 1] for u in w.unit]
    else:
        out["warnings"] = checks.windows_warnings(pre, predictor.config, table, cond, scaled, w)
    return out


def score_local(predictor, pieces: Iterator[Piece], cycles: str = "all") -> Iterator[dict]:
    """:func:`score_piece` over an input's pieces."""
    for piece in pieces:
        yield score_piece(predictor, piece, cycles)
