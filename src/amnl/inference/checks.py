"""Is an input inside what the model was trained on? Warnings for each prediction.

A prediction for readings the model never saw is a guess however confident it looks: FD002
readings given to an FD001 model came out "critical" with p 0.999, readings in degrees Celsius
and kPa "critical" at RUL 11, one typo (``s_2 = 64300``) "critical" at RUL 5. The prediction is
still made (what cannot be right is rejected earlier, by the readers and
:meth:`amnl.features.pipeline.Preprocessor.transform`), with a warning saying what is wrong:

* **unknown operating condition**: a cycle's settings further than
  :data:`SETTING_TOLERANCE` (in every setting's own unit) from every condition centre fitted
  on the training engines; such a cycle is scaled as the nearest one;
* **sensors beyond the training range**: a per-condition z-score of a model input beyond
  :data:`Z_LIMIT` (the training files reach 9.6);
* **age beyond the longest training engine**: a last cycle past the longest run-to-failure
  history of the subsets the model trained on;
* **a history that starts mid-life**: a first cycle other than 1. The model smooths the
  sensors from the first cycle given and reads the age from the cycle numbers, so FD001's test
  engine 31 gives RUL 7.5 whole (truth 8) and 23.6 from its last 40 cycles (41.3 renumbered
  from 1, which no check can see);
* **a history shorter than the window**: padded with its first cycle, so a 3-cycle history
  looks like a healthy new engine.

These facts live here and nowhere else; every front door asks this module:

* ``amnl predict``, ``/v1/predict``, ``amnl score --cycles last``: :func:`unit_warnings`, over
  each unit's whole history as given;
* the service and ``amnl score --cycles all``, one prediction per cycle: :func:`window_warnings`
  over the readings of that prediction's window (their flags from :func:`reading_flags`), and
  its model inputs: the smoothed features carry a reading from before the window (a typo's
  weight in the slow smoothing halves only every 34 cycles), so a window whose inputs lie
  beyond :data:`Z_LIMIT` is flagged too; :class:`StreamChecks` wraps both for the service.
"""

from __future__ import annotations

import numpy as np

from amnl.config import RunConfig
from amnl.data.cmapss import SETTING_COLUMNS, EngineTable
from amnl.features.pipeline import Preprocessor, Windows

#: A cycle is in a known operating condition when every setting is within this of a centre.
#: Within one condition the C-MAPSS settings vary by at most 0.009 (kft, Mach or degrees;
#: ``experiments/training_ranges.py``, ``benchmarks/results/training-ranges.json``).
SETTING_TOLERANCE = 0.1
#: Largest |z| of a per-condition scaled sensor counted as within the training range: the four
#: training files reach 8.6-9.6 (their test files 4.3-9.9; the same script).
Z_LIMIT = 12.0
#: Longest engine, in cycles, of each published training file (NASA's C-MAPSS; the same script).
LONGEST_TRAINING_ENGINE = {"FD001": 362, "FD002": 378, "FD003": 525, "FD004": 543}
#: Bit of :func:`reading_flags` set when a reading's settings are far from every condition
#: (bits 0..F-1: feature j beyond :data:`Z_LIMIT`).
UNKNOWN_CONDITION = np.uint32(1 << 31)


def longest_training_engine(config: RunConfig) -> int:
    """Cycles of the longest training engine of the subsets the run trained on."""
    subsets = (config.data.subset, *config.data.extra_train)
    return max(LONGEST_TRAINING_ENGINE[s] for s in subsets)


def reading_flags(pre: Preprocessor, settings: np.ndarray, cond: np.ndarray,
                  scaled: np.ndarray) -> np.ndarray:
    """What of each reading lies outside the training range, as a bit mask per reading.

    Args:
        pre: the model's fitted preprocessing.
        settings: float (n, 3) the readings' operating settings.
        cond, scaled: their conditions and z-scores (:meth:`Preprocessor.scale`, or
            :meth:`amnl.features.online.OnlineFeatures.step`).

    Returns:
        uint32 (n,): bit ``j`` set when feature ``j`` (``pre.feature_names``) is beyond
        :data:`Z_LIMIT`, :data:`UNKNOWN_CONDITION` when the settings are further than
        :data:`SETTING_TOLERANCE` from every condition; 0 for a reading inside the range.
    """
    unknown = (np.abs(np.asarray(settings, np.float64) - pre.conditions_.centers_[cond])
               > SETTING_TOLERANCE).any(1)
    beyond = np.abs(scaled) > Z_LIMIT
    bits = (beyond.astype(np.uint32) << np.arange(beyond.shape[1], dtype=np.uint32)).sum(
        1, dtype=np.uint32)
    return bits | np.where(unknown, UNKNOWN_CONDITION, np.uint32(0))


def smoothed_columns(pre: Preprocessor) -> np.ndarray:
    """Columns of a model-ready row that are smoothed z-scores (fast and slow smoothing; not
    the baseline deviations, which may reach twice the range, nor the age)."""
    cfg, fs = pre.config, len(pre.feature_names)
    cols = list(range(fs))
    start = fs * (1 + bool(cfg.baseline_cycles))
    if cfg.slow_smoothing < 1.0:
        cols += range(start, start + fs)
    return np.array(cols, np.int64)


def history_warnings(first_cycle: int, n_cycles: int, last_cycle: int, window: int,
                     oldest: int) -> list[str]:
    """What about a history as a whole makes its prediction unreliable (empty when nothing).

    Args:
        first_cycle: the history's first cycle (the asset's first, in the service).
        n_cycles: cycles from it to the predicted one; last_cycle: the predicted one.
        window: the model's window; oldest: :func:`longest_training_engine`.
    """
    w = []
    if first_cycle != 1:
        w.append(f"history starts at cycle {first_cycle}, not 1: the model needs each asset's "
                 "history from its first cycle (it smooths the sensors from there and reads the "
                 "age from the cycle numbers), so this prediction may be far off")
    if n_cycles < window:
        w.append(f"history shorter than the model's window: {n_cycles} of {window} cycles, "
                 "padded with its first cycle, it looks younger and healthier than it may be")
    if last_cycle > oldest:
        w.append(f"age {last_cycle} cycles, beyond the longest training engine ({oldest} cycles)")
    return w


def unit_warnings(pre: Preprocessor, config: RunConfig, table: EngineTable,
                  cond: np.ndarray, scaled: np.ndarray) -> list[list[str]]:
    """The warnings of each unit of ``table`` over its whole history, in its unit order (empty
    lists when fine): what ``amnl predict`` and ``/v1/predict`` report.

    Args:
        cond, scaled: :meth:`Preprocessor.scale` of ``table`` (the prediction computes them
            anyway).
    """
    starts, lengths = table.starts, table.lengths
    settings = table.columns(SETTING_COLUMNS)
    flags = reading_flags(pre, settings, cond, scaled)
    unknown = (flags & UNKNOWN_CONDITION) != 0
    beyond = np.abs(scaled) > Z_LIMIT
    n_unknown = np.add.reduceat(unknown.astype(np.int64), starts)
    n_beyond = np.add.reduceat(beyond.any(1).astype(np.int64), starts)
    features = np.add.reduceat(beyond.astype(np.int64), starts, axis=0)
    last_cycle = table.cycle[starts + lengths - 1]
    oldest = longest_training_engine(config)
    names = pre.feature_names
    out: list[list[str]] = []
    for i in range(len(starts)):
        w = []
        if n_unknown[i]:
            first = starts[i] + int(np.flatnonzero(unknown[starts[i]: starts[i] + lengths[i]])[0])
            w.append(f"operating settings far from every training condition in {n_unknown[i]} "
                     f"of {lengths[i]} cycles (first at cycle {int(table.cycle[first])}: "
                     f"{', '.join(f'{v:g}' for v in settings[first])})")
        if n_beyond[i]:
            worst = [names[j] for j in np.argsort(-features[i], kind="stable")[:3]
                     if features[i][j]]
            w.append(f"sensors beyond {Z_LIMIT:g} training standard deviations in {n_beyond[i]} "
                     f"of {lengths[i]} cycles ({', '.join(worst)})")
        w += history_warnings(int(table.cycle[starts[i]]), int(lengths[i]),
                              int(last_cycle[i]), config.data.window, oldest)
        out.append(w)
    return out


def window_warnings(flags: np.ndarray, cycles: np.ndarray, names: list[str], *,
                    inputs_beyond: bool, last_cycle: int, oldest: int, first_cycle: int = 1,
                    window: int = 0) -> list[str]:
    """The warnings of one prediction from the readings of its window: what the service
    stores with each prediction and ``amnl score --cycles all`` writes beside each row.

    Args:
        flags: uint32 (k,) :func:`reading_flags` of the window's readings (k <= the window;
            fewer while the history is younger), oldest first; cycles: their cycle numbers.
        names: the features, in the flags' bit order (``pre.feature_names``).
        inputs_beyond: whether a smoothed model input of the window (:func:`smoothed_columns`)
            lies beyond :data:`Z_LIMIT`.
        last_cycle: the cycle the window ends at; oldest: :func:`longest_training_engine`.
        first_cycle: the history's first cycle; window: the model's window
            (:func:`history_warnings`).
    """
    w: list[str] = []
    k = len(flags)
    unknown = (flags & UNKNOWN_CONDITION) != 0
    if unknown.any():
        last = int(cycles[np.flatnonzero(unknown)[-1]])
        w.append(f"operating settings far from every training condition in {int(unknown.sum())} "
                 f"of the window's {k} cycles (last at cycle {last})")
    sensors = flags & ~UNKNOWN_CONDITION
    if sensors.any():
        counts = [int(((sensors >> np.uint32(j)) & np.uint32(1)).sum()) for j in range(len(names))]
        worst = [names[j] for j in np.argsort(-np.array(counts), kind="stable")[:3] if counts[j]]
        w.append(f"sensors beyond {Z_LIMIT:g} training standard deviations in "
                 f"{int((sensors != 0).sum())} of the window's {k} cycles ({', '.join(worst)})")
    elif inputs_beyond:
        w.append(f"smoothed inputs beyond {Z_LIMIT:g} training standard deviations: a reading "
                 "before the window lay outside the training range and still weighs on them")
    w += history_warnings(int(first_cycle), int(last_cycle) - int(first_cycle) + 1,
                          int(last_cycle), window, oldest)
    return w


def windows_warnings(pre: Preprocessor, config: RunConfig, table: EngineTable,
                     cond: np.ndarray, scaled: np.ndarray, w: Windows) -> list[list[str]]:
    """:func:`window_warnings` of every window of ``w`` (a batch front door's per-cycle
    predictions, e.g. ``amnl score --cycles all``), one list per window, in its order.

    Args:
        cond, scaled: :meth:`Preprocessor.scale` of ``table``.
        w: ``pre.windows(table, ..., scaled=scaled)``.

    Example (``amnl.score.local.score_piece``, a ``warnings`` column of lists of strings,
    empty when none)::

        cond, scaled = pre.scale(table)
        w = pre.windows(table, last_only=cycles == "last", ..., scaled=scaled)
        if cycles == "all":  # each row as the service checks it
            out["warnings"] = windows_warnings(pre, predictor.config, table, cond, scaled, w)
        else:  # each asset's last cycle, as amnl predict checks it (one list per unit)
            out["warnings"] = unit_warnings(pre, predictor.config, table, cond, scaled)
    """
    flags = reading_flags(pre, table.columns(SETTING_COLUMNS), cond, scaled)
    index = w.index
    # a front-padded window repeats its first row: count each row once
    distinct = np.ones(index.shape, bool)
    distinct[:, 1:] = index[:, 1:] != index[:, :-1]
    win_flags = np.where(distinct, flags[index], np.uint32(0))
    cols = smoothed_columns(pre)
    beyond = np.zeros(len(index), bool)
    for b in range(0, len(index), 4096):  # bounded memory: a batch of windows at a time
        part = w.x[index[b: b + 4096]][:, :, cols]
        beyond[b: b + 4096] = (np.abs(part) > Z_LIMIT).any((1, 2))
    oldest, window = longest_training_engine(config), config.data.window
    first = table.cycle[table.starts][np.searchsorted(table.starts, index[:, -1], "right") - 1]
    young = w.cycle - first + 1 < window
    names = pre.feature_names
    flagged = beyond | win_flags.any(1) | (w.cycle > oldest) | (first != 1) | young
    out: list[list[str]] = [[] for _ in range(len(index))]
    for i in np.flatnonzero(flagged):
        rows = index[i][distinct[i]]
        out[i] = window_warnings(flags[rows], table.cycle[rows], names,
                                 inputs_beyond=bool(beyond[i]), last_cycle=int(w.cycle[i]),
                                 oldest=oldest, first_cycle=int(first[i]), window=window)
    return out


class StreamChecks:
    """The service's checks: per-reading flags as readings arrive, warnings per prediction.

    Args:
        pre, config: the model's preprocessing and run configuration.
    """

    def __init__(self, pre: Preprocessor, config: RunConfig) -> None:
        self.pre, self.names = pre, pre.feature_names
        self.window = config.data.window
        self.oldest = longest_training_engine(config)
        self.columns = smoothed_columns(pre)

    def flags(self, settings: np.ndarray, cond: np.ndarray, z: np.ndarray) -> np.ndarray:
        """:func:`reading_flags` of readings (what ``OnlineFeatures.step`` returned)."""
        return reading_flags(self.pre, settings, cond, z)

    def flagged(self, windows: np.ndarray, any_flag: np.ndarray, cycles: np.ndarray,
                first_cycles: np.ndarray) -> np.ndarray:
        """Which of n predictions have a warning, at once (bool (n,)): only those need
        :meth:`warnings`.

        Args:
            windows: float32 (n, W, F) model-ready; any_flag: bool (n,) whether a reading of
                each window is flagged; cycles, first_cycles: int (n,).
        """
        beyond = (np.abs(windows[:, :, self.columns]) > Z_LIMIT).any((1, 2))
        return (beyond | any_flag | (cycles > self.oldest) | (first_cycles != 1)
                | (cycles - first_cycles + 1 < self.window))

    def consecutive(self, online, state, first_cycle: int, before: np.ndarray,
                    settings: np.ndarray, cond: np.ndarray, z: np.ndarray, cycles: np.ndarray,
                    windows: np.ndarray) -> list[tuple[str, ...]]:
        """The warnings of n consecutive new cycles of one asset, their flags recorded.

        Args:
            online: the :class:`amnl.features.online.OnlineFeatures` that stepped ``state``
                past them; before: its :meth:`~amnl.features.online.OnlineFeatures.recent_flags`
                before the step.
            settings, cond, z, cycles, windows: the new cycles' settings and what the step
                returned.
        """
        flags = self.flags(settings, cond, z)
        online.record_flags(state, flags)
        seen = np.concatenate([before, flags])  # the windows' older readings, then these
        ends = len(before) + np.arange(1, len(flags) + 1)
        starts = np.maximum(ends - self.window, 0)
        count = np.concatenate([[0], np.cumsum(seen != 0)])
        cycles = np.asarray(cycles, np.int64)
        need = self.flagged(windows, count[ends] > count[starts], cycles,
                            np.full(len(cycles), first_cycle))
        out: list[tuple[str, ...]] = [()] * len(cycles)
        for k in np.flatnonzero(need):
            out[k] = tuple(self.warnings(seen[starts[k]: ends[k]], int(cycles[k]), windows[k],
                                         first_cycle))
        return out

    def fleet_step(self, online, states: list, first_cycles: np.ndarray, settings: np.ndarray,
                   cond: np.ndarray, z: np.ndarray, cycles: np.ndarray, windows: np.ndarray
                   ) -> list[tuple[str, ...]]:
        """The warnings of one new cycle each of n assets (``OnlineFeatures.step_many``),
        their flags recorded."""
        flags = self.flags(settings, cond, z)
        for s, f in zip(states, flags):
            online.record_flags(s, f[None])
        cycles = np.asarray(cycles, np.int64)
        first_cycles = np.asarray(first_cycles, np.int64)
        # a ring holds the flags of the last W rows only (a reused slot is cleared)
        any_flag = np.stack([s.flags for s in states]).any(1)
        need = self.flagged(windows, any_flag, cycles, first_cycles)
        out: list[tuple[str, ...]] = [()] * len(states)
        for k in np.flatnonzero(need):
            out[k] = tuple(self.warnings(online.recent_flags(states[k]), int(cycles[k]),
                                         windows[k], int(first_cycles[k])))
        return out

    def warnings(self, flags: np.ndarray, last_cycle: int, window: np.ndarray,
                 first_cycle: int) -> list[str]:
        """The warnings of the prediction of ``window`` (float32 (W, F), model-ready) ending
        at ``last_cycle`` of an asset whose first cycle is ``first_cycle``, whose readings have
        ``flags`` (the last ``len(flags)`` cycles, oldest first)."""
        beyond = bool((np.abs(window[:, self.columns]) > Z_LIMIT).any())
        if (not beyond and not flags.any() and last_cycle <= self.oldest and first_cycle == 1
                and last_cycle >= self.window):
            return []
        cycles = np.arange(last_cycle - len(flags) + 1, last_cycle + 1)
        return window_warnings(flags, cycles, self.names, inputs_beyond=beyond,
                               last_cycle=last_cycle, oldest=self.oldest,
                               first_cycle=first_cycle, window=self.window)
