"""Predictor: the one object every front door wraps (the CLI, evaluation, the service, batch
scoring).

Raw sensor histories in -> the saved preprocessing -> last window per engine -> a runtime ->
RUL + health. :meth:`Predictor.load` takes a model source and an
:class:`~amnl.config.InferenceConfig`; with the onnx runtime and an exported folder it never
imports torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amnl.config import InferenceConfig, RunConfig
from amnl.data.cmapss import EngineTable
from amnl.errors import DataError, ModelError
from amnl.features.labels import HEALTH_CLASSES
from amnl.features.pipeline import Preprocessor
from amnl.inference import PredictFn
from amnl.inference.drift import DriftReference
from amnl.inference.intervals import RulIntervals
from amnl.rundir import (
    INFERENCE_FILES,
    ONNX_FILES,
    PREPROCESS_FILES,
    check_files,
    content_id,
    has_weights,
    model_id,
    resolve_source,
)

logger = logging.getLogger(__name__)

@dataclass
class Predictions:
    """Per-engine predictions.

    Attributes:
        warnings: per unit, what in its input lies outside the model's training range
            (:mod:`amnl.inference.checks`); empty lists when nothing does.
    """

    unit: np.ndarray
    rul: np.ndarray
    probabilities: np.ndarray
    warnings: list[list[str]] = field(default_factory=list)
    rul_lower: np.ndarray | None = None
    """Calibrated lower bound of each RUL (None when the model has no calibration)."""
    rul_upper: np.ndarray | None = None
    coverage: float | None = None
    """The bounds' nominal coverage (e.g. 0.8: what the calibration aims at, not a measured
    coverage; ``amnl evaluate`` measures it on a test set)."""

    @property
    def health(self) -> list[str]:
        return [HEALTH_CLASSES[i] for i in self.probabilities.argmax(1)]

    @property
    def n_flagged(self) -> int:
        """Units with at least one warning."""
        return sum(bool(w) for w in self.warnings)

    def records(self) -> list[dict]:
        warnings = self.warnings or [[] for _ in self.unit]
        out = []
        for i, (u, r, h, probs, w) in enumerate(zip(self.unit, self.rul, self.health,
                                                    self.probabilities, warnings)):
            rec = {"unit": int(u), "rul": round(float(r), 3)}
            if self.rul_lower is not None:  # the calibrated interval, beside the RUL
                rec.update(rul_lower=round(float(self.rul_lower[i]), 3),
                           rul_upper=round(float(self.rul_upper[i]), 3),
                           nominal_coverage=self.coverage)
            rec.update(health=h, **{f"p_{c}": round(float(p), 5)
                                    for c, p in zip(HEALTH_CLASSES, probs)}, warnings=w)
            out.append(rec)
        return out


def _export_id(onnx_file: Path, metadata: dict[str, str]) -> str:
    """The model id of an export: the source run's (from the file's metadata), else a hash of
    the file and the preprocessing beside it."""
    from amnl.export.onnx import META_MODEL_ID  # a constant: no torch behind it

    if metadata.get(META_MODEL_ID):
        return metadata[META_MODEL_ID]
    return content_id([onnx_file, *(onnx_file.parent / f for f in PREPROCESS_FILES)])


@dataclass(eq=False)
class Predictor:
    """A model with its preprocessing: raw histories in, per-engine predictions out.

    Safe to call from many threads at once: the preprocessing is read-only once fitted, and
    both runtimes are (an automatic batch size is measured at load, not during calls).

    Attributes:
        config: the run configuration.
        preprocessor: the fitted preprocessing of the run.
        runtime: a callable scaled windows (N, W, F) -> (RUL (N,), probabilities (N, 3)), e.g.
            :class:`amnl.inference.runtime.TorchRuntime`.
        model_id: content hash of the model (:func:`amnl.rundir.model_id`).
        inference: how it runs.
        source: where it was loaded from.

    Example:
        >>> p = Predictor.load("FD001", InferenceConfig(precision="int8"))  # doctest: +SKIP
        >>> p.predict_table(read_histories("engines.csv")).records()[0]["rul"]
    """

    config: RunConfig
    preprocessor: Preprocessor
    runtime: PredictFn
    model_id: str
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    source: Path | None = None
    intervals: RulIntervals | None = None
    """The RUL interval calibration found with the model (``calibration.json``), if any."""
    drift: DriftReference | None = None
    """The training input distribution found with the model (``drift.json``), if any."""

    @property
    def folder(self) -> Path | None:
        """The model's folder (a run directory, bundled model or exported folder)."""
        if self.source is None:
            return None
        return self.source.parent if self.source.suffix == ".onnx" else self.source

    def __post_init__(self) -> None:
        folder = self.folder
        if folder is not None:
            if self.intervals is None:
                self.intervals = RulIntervals.load(folder)
            if self.drift is None:
                self.drift = DriftReference.load(folder)

    @classmethod
    def load(cls, source: str | os.PathLike | None = None,
             inference: InferenceConfig | None = None) -> Predictor:
        """From a bundled model name, a run directory or an exported folder / ``.onnx`` file.

        Args:
            source: see :func:`amnl.rundir.resolve_source` (default: the bundled FD001 model).
            inference: runtime, precision, device, threads, batching (default: torch FP32 on
                the CPU, batches sized by the planner within 32 MB).

        Raises:
            ModelError: no such model, or a torch runtime asked of an export without weights.
            ConfigError: an invalid inference setting.
        """
        inference = inference or InferenceConfig()
        path = resolve_source(source)
        if path.suffix == ".onnx":
            return cls._load_export(path, inference)
        if has_weights(path):
            return cls._load_run(path, inference)
        if inference.runtime == "onnx":  # an exported folder
            return cls._load_export(path / ONNX_FILES[inference.precision], inference)
        if not any((path / f).is_file() for f in ONNX_FILES.values()):
            check_files(path, INFERENCE_FILES, "a complete run directory")  # names what is missing
        raise ModelError(f"{path}: no torch weights (model.safetensors); an exported folder "
                         "runs with --runtime onnx")

    @classmethod
    def _load_export(cls, onnx_file: Path, inference: InferenceConfig) -> Predictor:
        from amnl.inference.onnx_runtime import load_exported

        if inference.runtime != "onnx":
            raise ModelError(f"{onnx_file}: an ONNX export runs with the onnx runtime "
                             "(--runtime onnx), not torch")
        chunk = None if inference.auto_batch else int(inference.batch_size)  # None: by memory
        cfg, pre, runtime = load_exported(onnx_file, precision=inference.precision,
                                          threads=inference.threads, chunk=chunk)
        if runtime.precision != inference.precision:
            raise ModelError(f"{onnx_file} is an {runtime.precision} export, not "
                             f"{inference.precision}; pass --precision {runtime.precision}")
        return cls(cfg, pre, runtime, _export_id(onnx_file, runtime.metadata), inference,
                   onnx_file)

    @classmethod
    def _load_run(cls, directory: Path, inference: InferenceConfig) -> Predictor:
        from amnl.rundir import load_run

        cfg, pre, model = load_run(directory)
        if inference.runtime == "onnx":
            from amnl.inference.onnx_runtime import OnnxRuntime

            runtime = OnnxRuntime.from_model(model, directory, window=cfg.data.window,
                                             precision=inference.precision,
                                             threads=inference.threads,
                                             cache_dir=inference.cache_dir)
            if not inference.auto_batch:
                runtime.chunk = int(inference.batch_size)
        else:
            from amnl.inference.runtime import TorchRuntime

            runtime = TorchRuntime(model, device=inference.device, precision=inference.precision,
                                   batch_size=inference.batch_size,
                                   memory_budget_mb=inference.memory_budget_mb,
                                   max_batch=inference.max_batch, window=cfg.data.window)
        return cls(cfg, pre, runtime, model_id(directory), inference, directory)

    @property
    def window(self) -> int:
        return self.config.data.window

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RUL (N,) and health probabilities (N, 3) for scaled windows ``x`` (N, W, F)."""
        return self.runtime(x)

    def predict_tables(self, tables: Iterable[EngineTable]) -> Predictions:
        """:meth:`predict_table` over pieces of a fleet (e.g.
        :func:`amnl.data.cmapss.iter_histories`), joined: memory is bounded by a piece."""
        parts = [self.predict_table(t) for t in tables]
        if not parts:
            return Predictions(np.zeros(0, np.int64), np.zeros(0, np.float32),
                               np.zeros((0, len(HEALTH_CLASSES)), np.float32))
        bounded = parts[0].rul_lower is not None
        return Predictions(np.concatenate([p.unit for p in parts]),
                           np.concatenate([p.rul for p in parts]),
                           np.concatenate([p.probabilities for p in parts]),
                           [w for p in parts for w in p.warnings],
                           np.concatenate([p.rul_lower for p in parts]) if bounded else None,
                           np.concatenate([p.rul_upper for p in parts]) if bounded else None,
                           parts[0].coverage)

    def predict_table(self, table: EngineTable) -> Predictions:
        """One prediction per engine, from the window ending at its last cycle, with the
        warnings of each unit whose input lies outside the model's training range.

        Raises:
            DataError: an input that cannot be right (non-finite once scaled) or a prediction
                that is not a number.
        """
        from amnl.inference.checks import unit_warnings

        cond, scaled = self.preprocessor.scale(table)  # once, for the windows and the checks
        w = self.preprocessor.windows(table, last_only=True, scaled=scaled)
        rul, prob = self(w.arrays())
        bad = np.flatnonzero(~(np.isfinite(rul) & np.isfinite(prob).all(1)))
        if bad.size:
            raise DataError(f"unit {int(w.unit[bad[0]])}: the model's output is not a number; "
                            "its readings are far outside anything it was trained on",
                            path=table.path)
        out = Predictions(w.unit, rul, prob,
                          unit_warnings(self.preprocessor, self.config, table, cond, scaled))
        if self.intervals is not None:
            out.rul_lower, out.rul_upper = self.intervals.bounds(rul)
            out.coverage = self.intervals.coverage
        return out
