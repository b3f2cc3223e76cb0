"""Calibrated RUL intervals: split-conformal bounds from the model's validation residuals.

For a stated coverage (default 80 %), the interval of a prediction ``p`` is
``[p + lo_b, p + hi_b]``, clipped to ``[0, rul_cap]``, where ``lo_b`` and ``hi_b`` are the
``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` empirical quantiles (with the split-conformal
finite-sample correction) of the signed residuals ``true - predicted`` on the model's
**validation engines only**, within the band ``b`` of predicted RUL the prediction falls in.

**Decision: bands of 20 cycles of predicted RUL, calibrated on every held-out engine.**
Errors are much smaller near failure than at mid-life, so one global interval is too wide for
a critical asset and too narrow for a healthy one; narrow bands condition the interval on the
prediction, which also makes it less sensitive to how the calibration windows mix early and
late life (a band with fewer than :data:`MIN_BAND_RESIDUALS` windows falls back to the global
quantiles). The calibration windows are every window (front-padded from the first cycle, as
test engines cut early are; truth capped as in evaluation) of the engines the model never
trained on: its validation engines, and, for a model that pooled another subset's training
engines (``data.extra_train``), that subset's validation engines too, which were not used to
select the model either. Validation engines alone made the intervals too narrow on the test
sets (54-75 % coverage): the bundled models were chosen on them, so their residuals are
optimistic (``experiments/interval_calibration.py``).

The calibration is a small JSON file (``calibration.json``) in the run directory, copied into
an exported folder; :class:`RulIntervals` reads and applies it without torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from amnl.config import RUL_CAP
from amnl.errors import ConfigError, ModelError
from amnl.rundir import CALIBRATION_FILE, write_atomic

#: Default coverage of an interval.
DEFAULT_COVERAGE = 0.8
#: Band edges in predicted RUL: every 20 cycles up to the cap.
DEFAULT_BAND_EDGES = (20.0, 40.0, 60.0, 80.0, 100.0, 120.0)
#: A band with fewer validation windows than this uses the global quantiles.
MIN_BAND_RESIDUALS = 50
FORMAT_VERSION = 1


def conformal_quantiles(residuals: np.ndarray, coverage: float) -> tuple[float, float]:
    """Lower and upper split-conformal quantiles of signed residuals: each tail gets
    ``(1 - coverage) / 2``, with the ``(n + 1)`` finite-sample correction."""
    r = np.sort(np.asarray(residuals, float))
    n = len(r)
    tail = (1.0 - coverage) / 2.0
    k_hi = min(math.ceil((n + 1) * (1.0 - tail)), n)  # 1-based order statistics
    k_lo = max(math.floor((n + 1) * tail), 1)
    return float(r[k_lo - 1]), float(r[k_hi - 1])


@dataclass
class RulIntervals:
    """Per-band offsets that turn a RUL prediction into a calibrated interval.

    Attributes:
        coverage: the stated coverage (0.8: 80 % of true RULs inside).
        edges: band edges in predicted RUL.
        lower, upper: per band (``len(edges) + 1``), the offsets added to the prediction.
        rul_cap: bounds are clipped to ``[0, rul_cap]``.
        n: validation windows per band.
        source: how it was calibrated (subset, validation units, windows).

    Example:
        >>> iv = RulIntervals.fit(np.array([10.0, 50, 100] * 40), np.array([12.0, 45, 110] * 40))
        >>> iv.bounds(np.array([50.0]))
        (array([45.]), array([60.]))
    """

    coverage: float
    edges: list[float]
    lower: list[float]
    upper: list[float]
    rul_cap: float
    n: list[int]
    source: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, pred: np.ndarray, true: np.ndarray, *, coverage: float = DEFAULT_COVERAGE,
            edges: tuple[float, ...] = DEFAULT_BAND_EDGES, rul_cap: float = RUL_CAP,
            source: dict | None = None) -> RulIntervals:
        """Calibrate on validation predictions ``pred`` and their (capped) truths ``true``."""
        if not 0 < coverage < 1:
            raise ConfigError(f"coverage must be in (0, 1), got {coverage}")
        pred, true = np.asarray(pred, float), np.asarray(true, float)
        if len(pred) < MIN_BAND_RESIDUALS:
            raise ConfigError(f"{len(pred)} validation windows are too few to calibrate "
                              f"intervals (at least {MIN_BAND_RESIDUALS})")
        resid = true - pred
        g_lo, g_hi = conformal_quantiles(resid, coverage)
        band = np.searchsorted(np.asarray(edges), pred, side="right")
        lower, upper, n = [], [], []
        for b in range(len(edges) + 1):
            r = resid[band == b]
            lo, hi = conformal_quantiles(r, coverage) if len(r) >= MIN_BAND_RESIDUALS else (g_lo, g_hi)
            lower.append(lo)
            upper.append(hi)
            n.append(len(r))
        return cls(coverage, [float(e) for e in edges], lower, upper, float(rul_cap), n,
                   dict(source or {}))

    def bounds(self, rul: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds (float, like ``rul``) for predictions ``rul``."""
        rul = np.asarray(rul, float)
        band = np.searchsorted(np.asarray(self.edges), rul, side="right")
        lo = np.clip(rul + np.asarray(self.lower)[band], 0.0, self.rul_cap)
        hi = np.clip(rul + np.asarray(self.upper)[band], 0.0, self.rul_cap)
        return np.minimum(lo, rul), np.maximum(hi, rul)

    # -- the file ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        return write_atomic(Path(directory) / CALIBRATION_FILE,
                            json.dumps({"format": FORMAT_VERSION, **asdict(self)}, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> RulIntervals | None:
        """The calibration of a run directory or exported folder; None when it has none.

        Raises:
            ModelError: a calibration file that cannot be read.
        """
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
            if d.pop("format") != FORMAT_VERSION:
                raise ValueError("unknown format")
            iv = cls(**d)
            if len(iv.lower) != len(iv.edges) + 1 or len(iv.upper) != len(iv.lower):
                raise ValueError("bands and offsets disagree")
            return iv
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path}: not an interval calibration ({exc}); run `amnl calibrate` "
                             "again") from None


def coverage_and_width(lower: np.ndarray, upper: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Share of truths inside ``[lower, upper]`` and the mean width (cycles)."""
    lower, upper, true = (np.asarray(a, float) for a in (lower, upper, true))
    inside = (true >= lower) & (true <= upper)
    return {"interval_coverage": float(inside.mean()) if len(true) else float("nan"),
            "interval_width": float((upper - lower).mean()) if len(true) else float("nan")}
