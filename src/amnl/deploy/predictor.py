"""Predictor: the one object the CLI, evaluation, exporters and the server use.

Raw sensor histories in -> the saved preprocessing -> last window per engine -> RUL + health.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from amnl.config import RunConfig
from amnl.data.cmapss import EngineTable, check_subset_name
from amnl.deploy.engines import TorchEngine
from amnl.errors import ModelError
from amnl.evaluate.evaluate import PredictFn
from amnl.features.labels import HEALTH_CLASSES
from amnl.features.pipeline import Preprocessor
from amnl.train.checkpoint import load_run

#: Where bundled models live inside the package (one run directory per subset, FP16 weights).
BUNDLED_PACKAGE = "amnl.weights"
ENGINES = ("torch", "onnx")


def bundled_dir(name: str) -> Path:
    """Folder of the bundled model for subset ``name`` (FD001..FD004)."""
    name = check_subset_name(name)
    path = Path(str(resources.files(BUNDLED_PACKAGE))) / name
    if not path.is_dir():
        raise ModelError(f"no bundled model {name!r} in this installation; train one with "
                         f"`amnl train --dataset {name}` and pass --run DIR")
    return path


def resolve_model_dir(run: str | os.PathLike | None = None, weights: str | None = None) -> Path:
    """``--run DIR`` wins; else the bundled model ``--weights NAME`` (default FD001)."""
    if run is not None:
        return Path(run)
    return bundled_dir(weights or "FD001")


@dataclass
class Predictions:
    """Per-engine predictions."""

    unit: np.ndarray
    rul: np.ndarray
    probabilities: np.ndarray

    @property
    def health(self) -> list[str]:
        return [HEALTH_CLASSES[i] for i in self.probabilities.argmax(1)]

    def records(self) -> list[dict]:
        return [{"unit": int(u), "rul": round(float(r), 3), "health": h,
                 **{f"p_{c}": round(float(p), 5) for c, p in zip(HEALTH_CLASSES, probs)}}
                for u, r, h, probs in zip(self.unit, self.rul, self.health, self.probabilities)]


class Predictor:
    """A model with its preprocessing: raw histories in, per-engine predictions out.

    Args:
        config: the run configuration.
        preprocessor: the fitted preprocessing of the run.
        engine: a callable scaled windows (N, W, F) -> (RUL (N,), probabilities (N, 3)),
            e.g. :class:`amnl.deploy.engines.TorchEngine`.

    Example:
        >>> p = Predictor.load(weights="FD001", precision="int8")  # doctest: +SKIP
        >>> p.predict_table(read_histories("engines.csv")).records()[0]["rul"]
    """

    def __init__(self, config: RunConfig, preprocessor: Preprocessor, engine: PredictFn) -> None:
        self.config, self.preprocessor, self.engine = config, preprocessor, engine

    @classmethod
    def load(cls, run: str | os.PathLike | None = None, *, weights: str | None = None,
             engine: str = "torch", precision: str = "fp32", device: str = "cpu",
             batch_size: int = 1024, threads: int = 0) -> Predictor:
        """From a run directory (``run``) or a bundled model name (``weights``, default FD001).

        Args:
            engine: ``torch`` or ``onnx`` (needs ``pip install amnl[export]``).
            precision: torch: fp32, bf16, fp16 (CUDA), int8; onnx: fp32 or int8.
            device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available, else CPU).
            threads: CPU threads for inference (0 = library default).
        """
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        directory = resolve_model_dir(run, weights)
        if threads > 0:
            torch.set_num_threads(threads)
        cfg, pre, model = load_run(directory)
        if engine == "onnx":
            from amnl.deploy.onnx import OnnxEngine

            fn = OnnxEngine.from_model(model, directory, window=cfg.data.window,
                                       precision=precision, threads=threads)
        else:
            fn = TorchEngine(model, device=device, precision=precision, batch_size=batch_size)
        return cls(cfg, pre, fn)

    @property
    def window(self) -> int:
        return self.config.data.window

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RUL (N,) and health probabilities (N, 3) for scaled windows ``x`` (N, W, F)."""
        return self.engine(x)

    def predict_table(self, table: EngineTable) -> Predictions:
        """One prediction per engine, from the window ending at its last cycle."""
        w = self.preprocessor.windows(table, last_only=True)
        rul, prob = self(w.arrays())
        return Predictions(w.unit, rul, prob)
