"""The fitted preprocessing that travels with a model: feature selection, regimes, scaling.

State is saved as plain arrays (``preprocess.npz``) plus JSON metadata, never as a pickle.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amnl.config import DataConfig
from amnl.data.cmapss import INFORMATIVE_SENSORS, SETTING_COLUMNS, EngineTable
from amnl.errors import DataError, ModelError, NotFittedError
from amnl.features.baseline import baseline_deviation
from amnl.features.conditions import OperatingConditions
from amnl.features.labels import health_labels
from amnl.features.scaling import ConditionScaler
from amnl.features.smoothing import smooth_engines
from amnl.features.windows import window_index

#: The age input is the cycle number divided by this (ages of 1-5, like the scaled sensors).
CYCLE_SCALE = 100.0


@dataclass
class Windows:
    """Model-ready data of one split: scaled rows plus window index maps and labels.

    Attributes:
        x: float32 (rows, features) scaled features of all engines.
        index: int64 (n_windows, window) rows of each window (see :mod:`amnl.features.windows`).
        unit: int64 (n_windows,) engine id of each window.
        rul: float32 (n_windows,) capped RUL at the window's last cycle (NaN when unknown).
        health: int64 (n_windows,) health class (-1 when unknown).
        cycle: int64 (n_windows,) cycle number of the window's last row.
    """

    x: np.ndarray
    index: np.ndarray
    unit: np.ndarray
    rul: np.ndarray
    health: np.ndarray
    cycle: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def arrays(self) -> np.ndarray:
        """The windows materialised: float32 (n_windows, window, features)."""
        return self.x[self.index]


class Preprocessor:
    """Select features, find operating regimes and z-score per regime (scikit-learn contract).

    Args:
        config: the data settings (feature set, clusters, window, RUL cap, health thresholds).

    Attributes:
        conditions_: fitted :class:`OperatingConditions`.
        scaler_: fitted :class:`ConditionScaler`.

    Example:
        >>> pre = Preprocessor(DataConfig()).fit(train_table)  # doctest: +SKIP
        >>> w = pre.windows(train_table)  # all training windows
        >>> w.arrays().shape
        (17731, 30, 14)
    """

    #: Its files in a run directory (listed with the others in :mod:`amnl.rundir`).
    STATE_FILE = "preprocess.npz"
    META_FILE = "preprocess.json"

    def __init__(self, config: DataConfig | None = None) -> None:
        self.config = config or DataConfig()

    @property
    def feature_names(self) -> list[str]:
        extra = SETTING_COLUMNS if self.config.use_settings else []
        return [*extra, *INFORMATIVE_SENSORS]

    def fit(self, table: EngineTable, units: np.ndarray | None = None) -> Preprocessor:
        """Learn regimes and per-regime statistics from training engines only.

        Args:
            table: a training file.
            units: restrict fitting to these unit ids (the training part of a validation split).
        """
        rows = np.ones(len(table), bool) if units is None else np.isin(table.unit, units)
        settings = table.columns(SETTING_COLUMNS)[rows]
        self.conditions_ = OperatingConditions(self.config.n_clusters).fit(settings)
        cond = self.conditions_.predict(settings)
        x = table.columns(self.feature_names)[rows]
        self.scaler_ = ConditionScaler().fit(x, cond, self.conditions_.n_conditions_)
        return self

    def scale(self, table: EngineTable) -> tuple[np.ndarray, np.ndarray]:
        """Each row's operating condition and its per-condition z-scored features, float32
        (rows, len(feature_names)): the first step of :meth:`transform`.

        Raises:
            DataError: a value that is not finite once scaled (e.g. 1e308 in a sensor) cannot
                give a right prediction; the unit, cycle and column are named.
        """
        if not hasattr(self, "scaler_"):
            raise NotFittedError("Preprocessor is not fitted: call fit() on training engines, "
                                 "or load a run directory")
        cond = self.conditions_.predict(table.columns(SETTING_COLUMNS))
        raw = table.columns(self.feature_names)
        scaled = self.scaler_.transform(raw, cond)
        bad = ~np.isfinite(scaled)
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            raise DataError(f"{table.where(r)}: "
                            f"{self.feature_names[c]} ({raw[r, c]:g}) is not finite once scaled "
                            "by the training statistics", path=table.path, row=r)
        return cond, scaled

    def transform(self, table: EngineTable, scaled: np.ndarray | None = None) -> np.ndarray:
        """Scaled (and, if configured, smoothed) features of every row, float32 (rows, n_features),
        followed by their deviations from the engine's baseline when ``baseline_cycles`` > 0, by
        their slow smoothing when ``slow_smoothing`` < 1 and by the age (cycle /
        :data:`CYCLE_SCALE`) when ``cycle_feature`` is set.

        Args:
            table: the rows.
            scaled: :meth:`scale`'s z-scores of ``table``, when the caller has them already.
        """
        if scaled is None:
            scaled = self.scale(table)[1]
        x = smooth_engines(scaled, table.starts, table.lengths, self.config.smoothing)
        parts = [x]
        if self.config.baseline_cycles:
            parts.append(baseline_deviation(x, table.starts, table.lengths,
                                            self.config.baseline_cycles))
        if self.config.slow_smoothing < 1.0:
            parts.append(smooth_engines(scaled, table.starts, table.lengths,
                                        self.config.slow_smoothing))
        if self.config.cycle_feature:
            parts.append((table.cycle / CYCLE_SCALE).astype(x.dtype)[:, None])
        out = np.concatenate(parts, axis=1) if len(parts) > 1 else x
        if not np.isfinite(out).all():  # finite z-scores too large for the smoothing
            r = int(np.flatnonzero(~np.isfinite(out).all(1))[0])
            raise DataError(f"{table.where(r)}: a smoothed "
                            "feature is not finite (a value too large for the smoothing)",
                            path=table.path, row=r)
        return out

    def windows(self, table: EngineTable, *, units: np.ndarray | None = None,
                last_only: bool = False, rul_after_end: np.ndarray | None = None,
                first_end: int | None = None, scaled: np.ndarray | None = None) -> Windows:
        """Scaled windows and labels of a file.

        Args:
            table: a train or test file.
            units: keep only these unit ids.
            last_only: one window per engine at its last cycle (test protocol).
            rul_after_end: for test files, the true RUL after each engine's last cycle
                (``RUL_FDxxx``); training files are run to failure, so this is 0.
            first_end: windows end at every cycle from this one on (0-based, front-padded
                where shorter than the window); default: from the first full window.
            scaled: :meth:`scale`'s z-scores of the whole ``table`` (not with ``units``).

        Returns:
            A :class:`Windows`.
        """
        if units is not None:  # transform only the kept engines' rows
            if rul_after_end is not None:
                rul_after_end = np.asarray(rul_after_end)[np.isin(table.units, units)]
            table = EngineTable(table.path, table.values[np.isin(table.unit, units)])
            scaled = None
        x = self.transform(table, scaled)
        starts, lengths, unit_ids = table.starts, table.lengths, table.units
        index = window_index(starts, lengths, self.config.window, last_only=last_only,
                             first_end=first_end)
        ends = index[:, -1]
        owner = np.searchsorted(starts, ends, side="right") - 1
        unit = unit_ids[owner]
        if rul_after_end is None and last_only:
            rul = np.full(len(index), np.nan, np.float32)
        else:
            offset = np.zeros(len(starts)) if rul_after_end is None else np.asarray(rul_after_end)
            last_row = starts + lengths - 1
            raw = (last_row[owner] - ends) + offset[owner]
            rul = np.minimum(raw, self.config.rul_cap).astype(np.float32)
        health = np.where(np.isnan(rul), -1, health_labels(np.nan_to_num(rul),
                                                            self.config.health_thresholds))
        return Windows(x, index, unit.astype(np.int64), rul, health.astype(np.int64),
                       table.cycle[ends].astype(np.int64))

    def split_units(self, table: EngineTable) -> tuple[np.ndarray, np.ndarray]:
        """Seeded engine-level split of a training file into (train units, validation units)."""
        units = table.units
        rng = np.random.default_rng(self.config.split_seed)
        n_val = int(round(self.config.val_fraction * len(units)))
        val = np.sort(rng.choice(units, size=n_val, replace=False)) if n_val else units[:0]
        return np.setdiff1d(units, val), val

    # -- persistence -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        np.savez(d / self.STATE_FILE, **{f"conditions_{k}": v for k, v in
                                          self.conditions_.get_state().items()},
                 **{f"scaler_{k}": v for k, v in self.scaler_.get_state().items()})
        meta = {"features": self.feature_names, "n_conditions": self.conditions_.n_conditions_}
        (d / self.META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, config: DataConfig) -> Preprocessor:
        d = Path(directory)
        try:
            with np.load(d / cls.STATE_FILE, allow_pickle=False) as z:
                state = dict(z)
            obj = cls(config)
            obj.conditions_ = OperatingConditions.from_state(
                {k[len("conditions_"):]: v for k, v in state.items() if k.startswith("conditions_")})
            obj.scaler_ = ConditionScaler.from_state(
                {k[len("scaler_"):]: v for k, v in state.items() if k.startswith("scaler_")})
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # no pickle
            kind = type(exc).__name__
            raise ModelError(f"{d / cls.STATE_FILE}: not a preprocessing file of plain arrays "
                             f"({kind}); copy the run directory again or retrain") from None
        return obj

