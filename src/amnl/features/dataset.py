"""Torch access to windows: a map-style Dataset, and a fast batch iterator that slices
in-memory tensors (no per-sample Python work)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from amnl.features.pipeline import Windows


class WindowDataset(Dataset):
    """Yields ``(x, rul, health)``: float32 (W, F), float32 (), int64 ()."""

    def __init__(self, windows: Windows) -> None:
        self.x = torch.from_numpy(windows.x)
        self.index = torch.from_numpy(windows.index)
        self.rul = torch.from_numpy(windows.rul)
        self.health = torch.from_numpy(windows.health)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.x[self.index[i]], self.rul[i], self.health[i]


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Sampling weight 1 / (count of its class) per item: every class is drawn equally often.

    Example:
        >>> class_balanced_weights(np.array([0, 0, 0, 1])).tolist()
        [0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 1.0]
    """
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


class WindowBatches:
    """Iterate over shuffled (or ordered) batches of windows gathered from one tensor.

    Args:
        windows: the split.
        batch_size: windows per batch.
        shuffle: new random order each epoch.
        seed: seed of the order.
        max_windows: if > 0, each epoch draws this many windows at random.
        weights: optional sampling weight per window (shuffle only): each epoch draws its
            windows with replacement, with these relative probabilities.

    Each batch is ``(x (B, W, F) float32, rul (B,) float32, health (B,) int64)``.
    """

    def __init__(self, windows: Windows, batch_size: int = 256, *, shuffle: bool = False,
                 seed: int = 0, max_windows: int = 0, weights: np.ndarray | None = None) -> None:
        self.ds = WindowDataset(windows)
        if weights is not None and len(weights) != len(windows):
            raise ValueError(f"weights: {len(weights)} values for {len(windows)} windows")
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.max_windows = max_windows
        self.generator = torch.Generator().manual_seed(seed)

    def _epoch_size(self) -> int:
        n = len(self.ds)
        return min(n, self.max_windows) if self.max_windows > 0 else n

    def __len__(self) -> int:
        return -(-self._epoch_size() // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.ds)
        if not self.shuffle:
            order = torch.arange(n)
        elif self.weights is not None:
            order = torch.multinomial(self.weights, self._epoch_size(), replacement=True,
                                      generator=self.generator)
        else:
            order = torch.randperm(n, generator=self.generator)
        order = order[: self._epoch_size()]
        for b in range(0, len(order), self.batch_size):
            i = order[b: b + self.batch_size]
            yield self.ds.x[self.ds.index[i]], self.ds.rul[i], self.ds.health[i]

