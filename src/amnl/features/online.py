"""Streaming-exact preprocessing: one asset's readings in, one model-ready window per cycle out.

:class:`OnlineFeatures` applies a fitted :class:`~amnl.features.pipeline.Preprocessor` one
cycle at a time. Per asset it keeps an :class:`AssetState`: the fast and slow exponential
smoothing, the running sum of the baseline cycles, the age, the last operating condition and
a ring buffer of the last W model-ready rows. A reading costs O(features), never a pass over
the history, and gives **bit for bit** the window that
:meth:`Preprocessor.windows(history, last_only=True) <amnl.features.pipeline.Preprocessor.windows>`
gives on the history cut at that cycle: the same float64 operations run in the same order
(``tests/features/test_online.py`` checks every cycle of the four C-MAPSS test files).

The state serialises to a few kilobytes of plain numbers (:meth:`AssetState.to_bytes`), no
pickle, so a service can store it in the transaction that stores the readings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from amnl.data.cmapss import SENSOR_COLUMNS, SETTING_COLUMNS
from amnl.errors import DataError
from amnl.features.pipeline import CYCLE_SCALE, Preprocessor
from amnl.features.windows import padded_rows

#: The raw columns of a reading, in this order: the 3 settings, then s_1..s_21.
READING_COLUMNS = [*SETTING_COLUMNS, *SENSOR_COLUMNS]

#: magic, version, rows, last cycle, condition, sizes of fast / slow / base_sum, F, W
_HEADER = struct.Struct("<4sIqqqIIIII")
#: Version 2 adds the rows' check flags after the ring (version 1 snapshots read with none).
_MAGIC, _VERSION = b"AMNS", 2


@dataclass
class AssetState:
    """Everything the next cycle of one asset depends on.

    Attributes:
        rows: cycles seen so far.
        last_cycle: the last cycle's number (0 before the first).
        condition: operating condition of the last cycle (-1 before the first).
        fast, slow: float64 (scaled features,) smoothing states (empty when not configured).
        base_sum: float64 (scaled features,) sum of the baseline cycles' smoothed rows.
        ring: float32 (W, model features) the last W model-ready rows; row ``i`` of the
            asset is at ``i % W``.
        flags: uint32 (W,) the check flags of the same rows
            (:func:`amnl.inference.checks.reading_flags`, set by the caller with
            :meth:`OnlineFeatures.record_flags`; 0 when none were recorded).
    """

    rows: int
    last_cycle: int
    condition: int
    fast: np.ndarray
    slow: np.ndarray
    base_sum: np.ndarray
    ring: np.ndarray
    flags: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.flags is None:
            self.flags = np.zeros(len(self.ring), np.uint32)

    def copy(self) -> AssetState:
        return AssetState(self.rows, self.last_cycle, self.condition, self.fast.copy(),
                          self.slow.copy(), self.base_sum.copy(), self.ring.copy(),
                          self.flags.copy())

    def to_bytes(self) -> bytes:
        """A compact, pickle-free snapshot (header, float64 states, float32 ring, uint32
        flags)."""
        w, f = self.ring.shape
        head = _HEADER.pack(_MAGIC, _VERSION, self.rows, self.last_cycle, self.condition,
                            len(self.fast), len(self.slow), len(self.base_sum), f, w)
        return b"".join((head, self.fast.tobytes(), self.slow.tobytes(), self.base_sum.tobytes(),
                         np.ascontiguousarray(self.ring, np.float32).tobytes(),
                         np.ascontiguousarray(self.flags, "<u4").tobytes()))

    @classmethod
    def from_bytes(cls, blob: bytes) -> AssetState:
        """The state written by :meth:`to_bytes`.

        Raises:
            DataError: not a snapshot of this format.
        """
        if len(blob) < _HEADER.size:
            raise DataError("asset state snapshot is truncated")
        magic, version, rows, last, cond, nf, ns, nb, f, w = _HEADER.unpack_from(blob)
        if magic != _MAGIC or version not in (1, _VERSION):
            raise DataError(f"not an asset state snapshot (magic {magic!r}, version {version})")
        sizes = [nf * 8, ns * 8, nb * 8, w * f * 4, w * 4 if version >= 2 else 0]
        if len(blob) != _HEADER.size + sum(sizes):
            raise DataError("asset state snapshot has the wrong size")
        o = _HEADER.size
        parts = []
        for n, dtype in zip(sizes, ("<f8", "<f8", "<f8", "<f4", "<u4")):
            parts.append(np.frombuffer(blob, dtype, n // np.dtype(dtype).itemsize, o).copy())
            o += n
        fast, slow, base, ring, flags = parts
        return cls(rows, last, cond, fast, slow, base, ring.reshape(w, f),
                   flags.astype(np.uint32, copy=False) if version >= 2 else None)


class OnlineFeatures:
    """A fitted preprocessing applied cycle by cycle (see the module docstring).

    Args:
        pre: the model's fitted preprocessing.

    Example:
        >>> online = OnlineFeatures(pre)  # doctest: +SKIP
        >>> state = online.new_state()
        >>> windows, cond, z = online.step(state, cycles, raw)  # raw: (n, 24) READING_COLUMNS
        >>> windows.shape  # one window per new cycle
        (n, 30, 29)
    """

    def __init__(self, pre: Preprocessor) -> None:
        self.pre = pre
        cfg = pre.config
        self.window = cfg.window
        self.names = pre.feature_names
        self._cols = [READING_COLUMNS.index(n) for n in self.names]
        self._settings = [READING_COLUMNS.index(n) for n in SETTING_COLUMNS]
        #: where the 3 settings are in a reading row
        self.settings = list(self._settings)
        #: columns a reading must have (the rest may be missing)
        self.required = sorted({*SETTING_COLUMNS, *self.names}, key=READING_COLUMNS.index)
        fs = len(self.names)
        self.n_features = (fs * (1 + bool(cfg.baseline_cycles) + (cfg.slow_smoothing < 1.0))
                           + bool(cfg.cycle_feature))

    def new_state(self) -> AssetState:
        """The state of an asset before its first reading."""
        fs = len(self.names)
        cfg = self.pre.config
        empty = np.zeros(0)
        return AssetState(0, 0, -1,
                          np.zeros(fs) if cfg.smoothing < 1.0 else empty,
                          np.zeros(fs) if cfg.slow_smoothing < 1.0 else empty,
                          np.zeros(fs) if cfg.baseline_cycles else empty,
                          np.zeros((self.window, self.n_features), np.float32))

    def scale(self, cycles: np.ndarray, raw: np.ndarray, *, label: str | list[str] = "reading"
              ) -> tuple[np.ndarray, np.ndarray]:
        """Operating condition and z-scores of readings, as :meth:`Preprocessor.scale`.

        Args:
            label: names the asset in error messages (one per row, or one for all).

        Raises:
            DataError: a value not finite once scaled, naming the cycle and column.
        """
        raw = np.asarray(raw, np.float64)
        cond = self.pre.conditions_.predict(raw[:, self._settings])
        x = raw[:, self._cols]
        scaled = self.pre.scaler_.transform(x, cond)  # the batch pipeline's own arithmetic
        bad = ~np.isfinite(scaled)
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            who = label[r] if isinstance(label, list) else label
            raise DataError(f"{who} cycle {int(cycles[r])}: {self.names[c]} ({x[r, c]:g}) is "
                            "not finite once scaled by the training statistics", row=r)
        return cond, scaled

    def step(self, state: AssetState, cycles: np.ndarray, raw: np.ndarray, *,
             label: str = "reading") -> tuple[np.ndarray, np.ndarray]:
        """Apply consecutive cycles to ``state`` (in place) and return their windows.

        Args:
            state: the asset's state (changed only when every cycle is valid).
            cycles: int (n,) cycle numbers, consecutive after ``state.last_cycle``; the caller
                checks the order (the service answers a gap with a 422).
            raw: float (n, 24) readings in :data:`READING_COLUMNS` order (NaN where an optional
                sensor is missing).
            label: names the asset in error messages.

        Returns:
            float32 (n, W, F) the window at each cycle, int64 (n,) their conditions and float32
            (n, len(names)) their z-scores.

        Raises:
            DataError: a value not finite once scaled, or a smoothed feature out of range;
                ``state`` is then unchanged.
        """
        cycles = np.asarray(cycles, np.int64)
        cond, scaled = self.scale(cycles, raw, label=label)
        new = state.copy()
        out = np.empty((len(cycles), self.window, self.n_features), np.float32)
        for i in range(len(cycles)):
            self._advance([new], cycles[i: i + 1], cond[i: i + 1], scaled[i: i + 1], [label])
            out[i] = self._windows([new])[0]
        _assign(state, new)
        return out, cond, scaled

    def step_many(self, states: list[AssetState], cycles: np.ndarray, raw: np.ndarray,
                  labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """One cycle each of many different assets at once (a fleet's cycle), vectorised
        across them: the same float64 operations as :meth:`step`, so the same bits.

        Args:
            states: one per asset (each changed in place only when every reading is valid).
            cycles: int (n,) each asset's next cycle; raw: float (n, 24).
            labels: names of the assets, for error messages.

        Returns:
            float32 (n, W, F) windows, int64 (n,) conditions, float32 (n, len(names)) z-scores.

        Raises:
            DataError: as :meth:`step`; its ``row`` is the index of the offending asset.
        """
        cycles = np.asarray(cycles, np.int64)
        cond, scaled = self.scale(cycles, raw, label=labels)
        new = [s.copy() for s in states]
        self._advance(new, cycles, cond, scaled, labels)
        for s, n in zip(states, new):
            _assign(s, n)
        return self._windows(states), cond, scaled

    def _advance(self, states: list[AssetState], cycles: np.ndarray, cond: np.ndarray,
                 z: np.ndarray, labels: list[str]) -> None:
        """Append one model-ready row to each of ``states`` (distinct assets)."""
        cfg = self.pre.config
        rows = np.array([s.rows for s in states])
        first = (rows == 0)[:, None]
        z64 = z.astype(np.float64)
        if cfg.smoothing < 1.0:
            a = cfg.smoothing
            prev = np.stack([s.fast for s in states])
            fast64 = np.where(first, z64, a * z64 + (1.0 - a) * prev)
            fast = fast64.astype(np.float32)
        else:
            fast = z
        parts = [fast]
        if cfg.baseline_cycles:
            base = np.stack([s.base_sum for s in states])
            base = np.where((rows < cfg.baseline_cycles)[:, None], base + fast.astype(np.float64),
                            base)
            n = np.minimum(rows + 1, cfg.baseline_cycles)[:, None]
            parts.append((fast.astype(np.float64) - base / n).astype(np.float32))
        if cfg.slow_smoothing < 1.0:
            a = cfg.slow_smoothing
            prev = np.stack([s.slow for s in states])
            slow64 = np.where(first, z64, a * z64 + (1.0 - a) * prev)
            parts.append(slow64.astype(np.float32))
        if cfg.cycle_feature:
            parts.append((cycles / CYCLE_SCALE).astype(np.float32)[:, None])
        row = np.concatenate(parts, axis=1)
        bad = ~np.isfinite(row).all(1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{labels[i]} cycle {int(cycles[i])}: a smoothed feature is not "
                            "finite (a value too large for the smoothing)", row=i)
        for i, s in enumerate(states):
            if cfg.smoothing < 1.0:
                s.fast = fast64[i]
            if cfg.baseline_cycles:
                s.base_sum = base[i]
            if cfg.slow_smoothing < 1.0:
                s.slow = slow64[i]
            s.ring[s.rows % self.window] = row[i]
            s.flags[s.rows % self.window] = 0  # until the caller records this row's
            s.rows += 1
            s.last_cycle = int(cycles[i])
            s.condition = int(cond[i])

    def recent_flags(self, state: AssetState) -> np.ndarray:
        """uint32 (min(rows, W),) the recorded flags of the asset's last rows, oldest first."""
        n = min(state.rows, self.window)
        return state.flags[np.arange(state.rows - n, state.rows) % self.window]

    def record_flags(self, state: AssetState, flags: np.ndarray) -> None:
        """Record the check flags of the last ``len(flags)`` rows stepped (only the last W
        are kept), e.g. :func:`amnl.inference.checks.reading_flags` of what :meth:`step`
        returned."""
        if len(flags) == 1 and state.rows:  # a fleet step: one each
            state.flags[(state.rows - 1) % self.window] = flags[0]
            return
        n = min(len(flags), self.window, state.rows)
        state.flags[np.arange(state.rows - n, state.rows) % self.window] = flags[len(flags) - n:]

    def _windows(self, states: list[AssetState]) -> np.ndarray:
        """Each state's model input at its last cycle, float32 (n, W, F): the last W rows in
        order, front-padded with the first row while the asset is younger than W (spec
        decision)."""
        w = self.window
        # the history's rows as padded_rows gives them, each at its ring slot (row % W)
        idx = padded_rows(np.array([s.rows for s in states]) - 1, w) % w
        rings = np.stack([s.ring for s in states])
        return rings[np.arange(len(states))[:, None], idx]


def _assign(state: AssetState, new: AssetState) -> None:
    state.rows, state.last_cycle, state.condition = new.rows, new.last_cycle, new.condition
    state.fast, state.slow, state.base_sum, state.ring = new.fast, new.slow, new.base_sum, new.ring
    state.flags = new.flags
