"""Is the fleet still sending what the model was trained on? PSI per condition and feature.

**Decision: the population stability index (PSI) on training deciles, not KS.** For every
operating condition and model input, the training engines' per-condition z-scores are cut at
their deciles (:class:`DriftReference`, saved with the model as ``drift.json``); the service
keeps the bin of each recent reading in a ring of the last :data:`WINDOW` readings per
condition (:class:`DriftMonitor`), so a reading costs O(features) and the memory is bounded.
PSI compares the recent bin shares ``a`` with the training shares ``e``:
``sum((a - e) * ln(a / e))``. KS would need the recent raw values sorted against the training
distribution at every update; PSI needs eleven edges a feature.

**Decision: the drift line is measured, not the textbook 0.25.** Training engines run to
failure; a fleet in service is younger (its engines have not failed yet), so its sensors sit
earlier on the degradation curve and PSI against all training readings reaches 1.2 without
any drift (FD001's held-out engines, each cut at a random cycle). :meth:`DriftReference.fit`
therefore simulates such in-service fleets from the held-out engines, with the same monitor,
and puts the line at :data:`THRESHOLD_MARGIN` times the largest PSI they show (at least
:data:`PSI_DRIFT`); it is saved as ``psi_threshold``.

Readings whose settings lie further than :data:`amnl.inference.checks.SETTING_TOLERANCE` from
every condition centre are **unknown conditions**: they are counted, not binned (they belong to
no training condition; before, they were silently scaled as the nearest one). A share of them
over :data:`UNKNOWN_DRIFT` among the recent readings is drift too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amnl.errors import ModelError
from amnl.rundir import DRIFT_FILE, write_atomic

#: Recent readings per condition the PSI is computed over.
WINDOW = 2000
#: PSI is reported once a condition has this many recent readings.
MIN_READINGS = 200
#: The least drift line (0.1-0.25 is the customary "moderate shift").
PSI_DRIFT = 0.25
#: The drift line is this times the largest PSI of simulated in-service fleets.
THRESHOLD_MARGIN = 1.25
#: In-service fleets simulated for the line.
SIMULATED_FLEETS = 20
#: Share of unknown-condition readings among the recent ones above which the fleet drifts.
UNKNOWN_DRIFT = 0.05
#: Decile bins.
N_BINS = 10
FORMAT_VERSION = 1


@dataclass
class DriftReference:
    """Training decile edges and shares per condition and feature.

    Attributes:
        features: the model inputs' names (the scaled sensors).
        edges: float (conditions, features, N_BINS - 1) inner bin edges.
        expected: float (conditions, features, N_BINS) training shares of each bin.
        centers: float (conditions, 3) the condition centres (settings).
        tolerance: a setting further than this from its centre is an unknown condition.
        psi_threshold: PSI above this is drift (see the module docstring).
    """

    features: list[str]
    edges: np.ndarray
    expected: np.ndarray
    centers: np.ndarray
    tolerance: float
    psi_threshold: float = PSI_DRIFT

    @classmethod
    def fit(cls, features: list[str], cond: np.ndarray, scaled: np.ndarray,
            centers: np.ndarray, tolerance: float) -> DriftReference:
        """From the training rows' conditions and z-scores."""
        k, f = len(centers), scaled.shape[1]
        edges = np.zeros((k, f, N_BINS - 1))
        expected = np.full((k, f, N_BINS), 1.0 / N_BINS)
        qs = np.linspace(0, 1, N_BINS + 1)[1:-1]
        for c in range(k):
            x = scaled[cond == c].astype(np.float64)
            if len(x) == 0:
                continue
            edges[c] = np.quantile(x, qs, axis=0).T
            for j in range(f):
                counts = np.bincount(np.searchsorted(edges[c, j], x[:, j], side="right"),
                                     minlength=N_BINS)
                expected[c, j] = counts / counts.sum()
        return cls(list(features), edges, expected, np.asarray(centers, float), float(tolerance))

    def set_threshold(self, fleets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
        """Put the drift line above what in-distribution fleets show: ``fleets`` are
        (settings, conditions, z-scores) of simulated in-service fleets, in stream order."""
        worst = 0.0
        for settings, cond, z in fleets:
            monitor = DriftMonitor(self)
            monitor.observe(settings, cond, z)
            psi = monitor.psi()
            if not np.isnan(psi).all():
                worst = max(worst, float(np.nanmax(psi)))
        self.psi_threshold = max(PSI_DRIFT, THRESHOLD_MARGIN * worst)
        return self.psi_threshold

    def save(self, directory: str | os.PathLike) -> Path:
        return write_atomic(Path(directory) / DRIFT_FILE, json.dumps(
            {"format": FORMAT_VERSION, "features": self.features, "edges": self.edges.tolist(),
             "expected": self.expected.tolist(), "centers": self.centers.tolist(),
             "tolerance": self.tolerance, "psi_threshold": self.psi_threshold}) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> DriftReference | None:
        path = Path(directory) / DRIFT_FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
            if d["format"] != FORMAT_VERSION:
                raise ValueError("unknown format")
            return cls(d["features"], np.array(d["edges"], float), np.array(d["expected"], float),
                       np.array(d["centers"], float), float(d["tolerance"]),
                       float(d.get("psi_threshold", PSI_DRIFT)))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{path}: not a drift reference ({exc}); run `amnl calibrate` "
                             "again") from None


class DriftMonitor:
    """Recent readings' bins per condition, and their PSI against a :class:`DriftReference`.

    Not thread-safe: one writer feeds it (:meth:`observe`); readers call :meth:`report`, which
    copies what it reads.
    """

    def __init__(self, reference: DriftReference, window: int = WINDOW) -> None:
        self.ref, self.window = reference, window
        k, f = len(reference.centers), len(reference.features)
        self._bins = np.zeros((k, window, f), np.int8)
        self._n = np.zeros(k, np.int64)  # readings seen per condition
        self._recent_unknown = np.zeros(window, bool)
        self._seen = 0
        self.unknown_total = 0

    def observe(self, settings: np.ndarray, cond: np.ndarray, scaled: np.ndarray) -> int:
        """Add readings: (n, 3) settings, (n,) their conditions, (n, F) z-scores. Returns how
        many were unknown conditions."""
        settings = np.asarray(settings, float)
        unknown = (np.abs(settings - self.ref.centers[cond]) > self.ref.tolerance).any(1)
        pos = (self._seen + np.arange(len(unknown))) % self.window
        self._recent_unknown[pos] = unknown  # (a batch longer than the window keeps its tail)
        self._seen += len(unknown)
        self.unknown_total += int(unknown.sum())
        for c in np.unique(cond[~unknown]):
            rows = scaled[(cond == c) & ~unknown]
            bins = np.empty(rows.shape, np.int8)
            for j in range(rows.shape[1]):
                bins[:, j] = np.searchsorted(self.ref.edges[c, j], rows[:, j], side="right")
            self._bins[c, (self._n[c] + np.arange(len(bins))) % self.window] = bins
            self._n[c] += len(bins)
        return int(unknown.sum())

    def psi(self) -> np.ndarray:
        """float (conditions, features) PSI of the recent readings; NaN where a condition has
        fewer than :data:`MIN_READINGS`."""
        k, f = len(self.ref.centers), len(self.ref.features)
        out = np.full((k, f), np.nan)
        for c in range(k):
            n = int(min(self._n[c], self.window))
            if n < MIN_READINGS:
                continue
            bins = self._bins[c, :n]
            for j in range(f):
                counts = np.bincount(bins[:, j], minlength=N_BINS)
                a = (counts + 0.5) / (n + 0.5 * N_BINS)
                e = np.maximum(self.ref.expected[c, j], 1e-6)
                out[c, j] = float(np.sum((a - e) * np.log(a / e)))
        return out

    def report(self) -> dict:
        """What ``GET /v1/drift`` answers."""
        psi = self.psi()
        recent = int(min(self._seen, self.window))
        unknown_share = float(self._recent_unknown[:recent].mean()) if recent else 0.0
        conditions = []
        for c in range(len(self.ref.centers)):
            row = psi[c]
            conditions.append({
                "condition": c, "center": self.ref.centers[c].round(4).tolist(),
                "recent_readings": int(min(self._n[c], self.window)),
                "psi": {n: (None if np.isnan(v) else round(float(v), 4))
                        for n, v in zip(self.ref.features, row)},
                "max_psi": None if np.isnan(row).all() else round(float(np.nanmax(row)), 4)})
        worst = [c["max_psi"] for c in conditions if c["max_psi"] is not None]
        line = self.ref.psi_threshold
        drifting = bool((worst and max(worst) > line) or unknown_share > UNKNOWN_DRIFT)
        return {"measure": "psi", "psi_drift_threshold": round(line, 4), "window": self.window,
                "status": "drift" if drifting else ("stable" if worst else "not enough readings"),
                "unknown_condition_share": round(unknown_share, 4),
                "unknown_condition_total": self.unknown_total,
                "unknown_condition_threshold": UNKNOWN_DRIFT,
                "conditions": conditions}
