"""Calibrate a model's RUL intervals on its validation engines (never the test files)."""

from __future__ import annotations

import logging
import os

from amnl.data.cmapss import load_subset
from amnl.inference.drift import DriftReference
from amnl.inference.intervals import DEFAULT_COVERAGE, RulIntervals

logger = logging.getLogger(__name__)


def held_out_windows(predictor, data_dir: str | os.PathLike):
    """Predictions and capped truths at every cycle of each engine the model never trained on:
    the validation engines of its subset and of the subsets it pooled (``data.extra_train``),
    by the seeded split of :meth:`Preprocessor.split_units`, as training held them out.

    Returns:
        (predicted RUL, true RUL, {subset: validation unit ids}).
    """
    import numpy as np

    cfg = predictor.config.data
    pre = predictor.preprocessor
    preds, truths, units = [], [], {}
    for name in (cfg.subset, *cfg.extra_train):
        train = load_subset(data_dir, name, test=False).train  # never a test file
        _, val = pre.split_units(train)
        windows = pre.windows(train, units=val, first_end=0)  # every cycle, as test cuts
        preds.append(predictor(windows.arrays())[0])
        truths.append(windows.rul)
        units[name] = val.tolist()
    return np.concatenate(preds), np.concatenate(truths), units


def calibrate(predictor, data_dir: str | os.PathLike, *,
              coverage: float = DEFAULT_COVERAGE) -> RulIntervals:
    """Split-conformal intervals from ``predictor``'s residuals on its held-out engines
    (:func:`held_out_windows`; see :mod:`amnl.inference.intervals`).

    Args:
        predictor: a loaded :class:`amnl.inference.predictor.Predictor`.
        data_dir: the C-MAPSS folder (training files only are read).
        coverage: the stated coverage.
    """
    cfg = predictor.config.data
    rul, true, units = held_out_windows(predictor, data_dir)
    intervals = RulIntervals.fit(rul, true, coverage=coverage, rul_cap=cfg.rul_cap,
                                 source={"subsets": list(units), "split_seed": cfg.split_seed,
                                         "validation_units": units, "windows": len(rul),
                                         "model_id": predictor.model_id,
                                         "runtime": predictor.inference.runtime,
                                         "precision": predictor.inference.precision})
    logger.info("%s: intervals calibrated on %d windows of held-out engines of %s", cfg.subset,
                len(rul), ", ".join(units))
    return intervals


def drift_reference(predictor, data_dir: str | os.PathLike, *, seed: int = 0) -> DriftReference:
    """The training engines' per-condition decile bins of every scaled input (the validation
    engines left out, as in training), for :class:`amnl.inference.drift.DriftMonitor`, with
    the drift line set from simulated in-service fleets of the validation engines (each cut
    at a random cycle, streamed engine after engine)."""
    import numpy as np

    from amnl.data.cmapss import SETTING_COLUMNS, EngineTable
    from amnl.inference.checks import SETTING_TOLERANCE
    from amnl.inference.drift import SIMULATED_FLEETS

    cfg = predictor.config.data
    train = load_subset(data_dir, cfg.subset, test=False).train
    pre = predictor.preprocessor
    train_units, val_units = pre.split_units(train)
    rows = EngineTable(train.path, train.values[np.isin(train.unit, train_units)])
    cond, scaled = pre.scale(rows)
    ref = DriftReference.fit(pre.feature_names, cond, scaled, pre.conditions_.centers_,
                             SETTING_TOLERANCE)
    rng = np.random.default_rng(seed)
    engines = [train.values[train.unit == u] for u in val_units]
    fleets = []
    for _ in range(SIMULATED_FLEETS):
        fleet = EngineTable(train.path, np.concatenate(
            [v[: rng.integers(1, len(v) + 1)] for v in engines]))
        c, z = pre.scale(fleet)
        fleets.append((fleet.columns(SETTING_COLUMNS), c, z))
    ref.set_threshold(fleets)
    return ref
