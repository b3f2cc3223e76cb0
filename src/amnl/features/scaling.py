"""Per-condition z-score (scikit-learn contract), statistics from training engines only."""

from __future__ import annotations

import numpy as np

from amnl.errors import DataError, NotFittedError

#: A sensor whose standard deviation in a regime is below this is constant there: scale 1.
MIN_STD = 1e-8


class ConditionScaler:
    """Z-score every feature with the mean and std of its operating condition.

    Attributes:
        mean_: float64 (n_conditions, n_features).
        scale_: float64 (n_conditions, n_features); 1 where a feature is constant.

    Example:
        >>> s = ConditionScaler().fit(x_train, cond_train)  # doctest: +SKIP
        >>> s.transform(x_test, cond_test).mean()  # about 0 on training data
    """

    def fit(self, x: np.ndarray, conditions: np.ndarray, n_conditions: int | None = None
            ) -> ConditionScaler:
        x = np.asarray(x, dtype=np.float64)
        k = int(conditions.max()) + 1 if n_conditions is None else n_conditions
        self.mean_ = np.zeros((k, x.shape[1]))
        self.scale_ = np.ones((k, x.shape[1]))
        for c in range(k):
            rows = x[conditions == c]
            if len(rows) == 0:
                continue  # regime unseen in training: leave identity
            self.mean_[c] = rows.mean(axis=0)
            std = rows.std(axis=0)
            self.scale_[c] = np.where(std < MIN_STD, 1.0, std)
        return self

    def transform(self, x: np.ndarray, conditions: np.ndarray) -> np.ndarray:
        """Scaled features as float32 (rows, n_features)."""
        if not hasattr(self, "mean_"):
            raise NotFittedError("ConditionScaler is not fitted: call fit() on training engines")
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1] != self.mean_.shape[1]:
            raise DataError(f"expected {self.mean_.shape[1]} features, got {x.shape[1]}")
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are rejected
            return ((x - self.mean_[conditions]) / self.scale_[conditions]).astype(np.float32)

    def get_state(self) -> dict[str, np.ndarray]:
        """Fitted state as plain arrays (saved in ``preprocess.npz``)."""
        return {"mean": self.mean_, "scale": self.scale_}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> ConditionScaler:
        """Rebuild a fitted scaler from :meth:`get_state`."""
        obj = cls()
        obj.mean_ = np.asarray(state["mean"], dtype=np.float64)
        obj.scale_ = np.asarray(state["scale"], dtype=np.float64)
        return obj
