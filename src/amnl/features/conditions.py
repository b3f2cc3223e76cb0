"""Operating conditions: k-means on the 3 settings, fitted on the training file only."""

from __future__ import annotations

import numpy as np

from amnl.errors import NotFittedError

#: k-means clusters tried (FD002/FD004 have six regimes).
DEFAULT_K = 6
#: Centres closer than this in every setting (physical units: kft, Mach, degrees) are one regime.
#: The closest real regimes differ by 0.08 Mach; noise within a regime is below 0.01.
MERGE_TOLERANCE = 0.05


class OperatingConditions:
    """Assign each cycle to an operating regime (scikit-learn contract).

    k-means with ``n_clusters`` on the settings, then centres that coincide within ``tol`` are
    merged, so FD001/FD003 (one regime plus noise) give one condition and FD002/FD004 six.

    Args:
        n_clusters: clusters for k-means (upper bound on the regimes found).
        tol: merge distance per setting.
        random_state: seed of k-means.

    Attributes:
        centers_: float64 (n_conditions_, 3) regime centres.
        n_conditions_: number of regimes found.

    Example:
        >>> oc = OperatingConditions().fit(settings)  # doctest: +SKIP
        >>> oc.n_conditions_, oc.predict(settings).shape
        (6, (53759,))
    """

    def __init__(self, n_clusters: int = DEFAULT_K, tol: float = MERGE_TOLERANCE,
                 random_state: int = 0) -> None:
        self.n_clusters = n_clusters
        self.tol = tol
        self.random_state = random_state

    def fit(self, settings: np.ndarray) -> OperatingConditions:
        settings = np.asarray(settings, dtype=np.float64)
        if np.all(np.ptp(settings, axis=0) < self.tol):  # one regime plus noise (FD001/FD003)
            self.centers_ = settings.mean(axis=0, keepdims=True)
            self.n_conditions_ = 1
            return self
        # only fitting needs scikit-learn; inference stays light
        from sklearn.cluster import KMeans

        k = min(self.n_clusters, len(np.unique(settings, axis=0)))
        km = KMeans(n_clusters=k, n_init=10, random_state=self.random_state).fit(settings)
        labels = km.labels_
        centers: list[np.ndarray] = []
        groups: list[list[int]] = []
        for j, c in enumerate(km.cluster_centers_):
            for g, other in enumerate(centers):
                if np.all(np.abs(c - other) < self.tol):
                    groups[g].append(j)
                    break
            else:
                centers.append(c)
                groups.append([j])
        # Merged centre = mean of the member points; order regimes by centre for stable output.
        merged = np.array([settings[np.isin(labels, g)].mean(axis=0) for g in groups])
        self.centers_ = merged[np.lexsort(merged.T[::-1])]
        self.n_conditions_ = len(self.centers_)
        return self

    def predict(self, settings: np.ndarray) -> np.ndarray:
        """Index of the nearest regime centre, int64 (rows,)."""
        if not hasattr(self, "centers_"):
            raise NotFittedError("OperatingConditions is not fitted: call fit() on training settings")
        settings = np.asarray(settings, dtype=np.float64)
        d = ((settings[:, None, :] - self.centers_[None, :, :]) ** 2).sum(-1)
        return d.argmin(axis=1)

    def get_state(self) -> dict[str, np.ndarray]:
        """Fitted state as plain arrays (saved in ``preprocess.npz``)."""
        return {"centers": self.centers_}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> OperatingConditions:
        """Rebuild a fitted object from :meth:`get_state`."""
        obj = cls()
        obj.centers_ = np.asarray(state["centers"], dtype=np.float64)
        obj.n_conditions_ = len(obj.centers_)
        return obj
