"""The PyTorch runtime: scaled windows (N, W, F) -> (RUL (N,), probabilities (N, 3)).

:class:`TorchRuntime` runs the network at fp32, bf16 autocast, fp16 (CUDA) or INT8 dynamic
quantisation (CPU; :mod:`amnl.export.quantize`), in chunks of a fixed batch size or of one the
planner chooses from measured memory (``batch_size="auto"``). :func:`predict_windows` is the
chunked no-grad forward that training's validation uses too. The ONNX Runtime runtime is
:mod:`amnl.inference.onnx_runtime`; both have the same call contract.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import torch
from torch import nn

from amnl.config import MB, RUNTIME_PRECISIONS, InferenceConfig
from amnl.errors import ConfigError
from amnl.inference.planner import (
    DEFAULT_MAX_BATCH,
    FALLBACK_BATCH,
    MemoryFit,
    batch_size_for_free_memory,
)
from amnl.model.network import AMNL
from amnl.model.precision import autocast

logger = logging.getLogger(__name__)

TORCH_PRECISIONS = RUNTIME_PRECISIONS["torch"]
#: ``batch_size`` values that let the planner choose the chunk size.
AUTO_BATCH = ("auto", 0)


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA request without CUDA is a
    :class:`ConfigError`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA was requested but no CUDA device is available; use --device cpu")
    return device


def set_threads(threads: int) -> None:
    """Set torch's process-wide intra-op thread count (``0`` leaves it). For front doors only
    (the CLI, the service's start-up): library constructors never call it."""
    if threads > 0:
        torch.set_num_threads(threads)


@torch.inference_mode()
def predict_windows(model: nn.Module, x: np.ndarray, *, batch_size: int = 1024,
                    precision: str = "fp32", device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """RUL and health probabilities for windows ``x`` (N, W, F), ``batch_size`` at a time.

    Args:
        precision: autocast precision (``fp32`` = none, ``bf16``, ``fp16``).

    Returns:
        (rul float32 (N,), probabilities float32 (N, 3)).
    """
    model.eval()
    ruls, probs = [], []
    for b in range(0, len(x), batch_size):
        xb = torch.as_tensor(np.ascontiguousarray(x[b: b + batch_size]), dtype=torch.float32,
                             device=device)
        with autocast(precision, device):
            out = model(xb)
        ruls.append(out.rul.float().cpu().numpy())
        probs.append(torch.softmax(out.health.float(), -1).cpu().numpy())
    if not ruls:
        return np.zeros(0, np.float32), np.zeros((0, 3), np.float32)
    return np.concatenate(ruls), np.concatenate(probs)


class TorchRuntime:
    """PyTorch inference at a given precision; safe to call from many threads at once.

    Args:
        model: the FP32 network (moved to ``device``; quantised as a copy for int8).
        device: ``cpu``, ``cuda`` or ``auto``.
        precision: ``fp32``, ``bf16``, ``fp16`` (CUDA only) or ``int8`` (CPU only).
        batch_size: windows per forward pass, or ``"auto"`` (or 0): a memory line is measured
            on this model (:func:`amnl.inference.memory.calibrate_memory`) once per window
            shape, and every call runs in chunks of the largest measured size that fits in half
            the free memory and in ``memory_budget_mb``
            (:func:`amnl.inference.planner.batch_size_for_free_memory`).
        memory_budget_mb: with ``"auto"``, the most peak tensor memory (weights included) a
            chunk may need, MB.
        max_batch: with ``"auto"``, the largest chunk.
        window: with ``"auto"``, the window length to calibrate for now, at construction, so
            that calls never measure (another shape is measured at its first call, under a
            lock).

    Example:
        >>> from amnl.model.factory import create_model
        >>> rt = TorchRuntime(create_model("base"), batch_size="auto", memory_budget_mb=40, window=30)
        >>> rul, probs = rt(np.zeros((256, 30, 14), np.float32))
        >>> rt.last_batch_size  # machine-dependent: 59 on a 2-core EPYC  # doctest: +SKIP
        59
    """

    def __init__(self, model: AMNL, *, device: str = "cpu", precision: str = "fp32",
                 batch_size: int | str = 1024, memory_budget_mb: float | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, window: int | None = None) -> None:
        auto = batch_size in AUTO_BATCH
        device = pick_device(device)
        # the rules of precision, device and batch size live in one place
        InferenceConfig(runtime="torch", precision=precision, device=device, batch_size=batch_size)
        model = model.to(device).eval()
        if precision == "int8":
            from amnl.export.quantize import quantize_torch

            model = quantize_torch(model)
        self.model, self.device, self.precision, self.batch_size = model, device, precision, batch_size
        self.auto, self.memory_budget_mb, self.max_batch = auto, memory_budget_mb, max_batch
        self.last_batch_size: int | None = None
        """Windows per forward pass of the latest call (of any thread)."""
        self._fits: dict[tuple[int, ...], MemoryFit] = {}
        self._lock = threading.Lock()
        if auto and window is not None:
            self._fit_for((window, model.config.in_features))

    @property
    def autocast(self) -> str:
        """The autocast precision of a forward pass (int8 runs its quantised layers as they are)."""
        return self.precision if self.precision in ("bf16", "fp16") else "fp32"

    @property
    def memory_fit(self) -> MemoryFit | None:
        """With ``"auto"``: the memory line of the most recently calibrated window shape."""
        return next(reversed(self._fits.values()), None) if self._fits else None

    def _plan(self, fit: MemoryFit, max_batch: int) -> int:
        budget = None if self.memory_budget_mb is None else self.memory_budget_mb * MB
        return batch_size_for_free_memory(fit, device=self.device, budget_bytes=budget,
                                          max_batch=max_batch, power_of_two=False)

    def _fit_for(self, shape: tuple[int, ...]) -> MemoryFit | None:
        """The memory line for windows of ``shape`` (W, F), measured once (under the lock)."""
        with self._lock:
            if shape in self._fits:
                return self._fits[shape]
            from amnl.inference.memory import calibrate_memory

            points: dict[int, int] = {}
            try:
                fit = calibrate_memory(self.model, window=shape[0], features=shape[1],
                                       device=self.device, autocast=self.autocast, points=points)
                chunk = self._plan(fit, self.max_batch)
                if chunk > fit.max_measured_batch:  # the plan must rest on a measured point
                    fit = calibrate_memory(self.model, window=shape[0], features=shape[1],
                                           device=self.device, autocast=self.autocast,
                                           batches=[chunk], points=points)
            except RuntimeError as exc:  # e.g. the caller is running torch.profiler
                logger.warning("cannot calibrate the batch size (%s); using %d this call", exc,
                               min(FALLBACK_BATCH, self.max_batch))
                return None  # not kept: the next call measures again
            self._fits[shape] = fit
            return fit

    def chunk_size(self, x: np.ndarray) -> int:
        """Windows per forward pass for ``x`` (N, W, F): the fixed size, or the planner's
        (never beyond the largest batch measured for that shape)."""
        if not self.auto:
            return int(self.batch_size)
        if len(x) == 0:
            return 1
        fit = self._fit_for(tuple(x.shape[1:]))
        if fit is None:
            return min(FALLBACK_BATCH, self.max_batch)
        chunk = self._plan(fit, min(self.max_batch, fit.max_measured_batch))
        logger.debug("auto batch size %d for %d windows", chunk, len(x))
        return chunk

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chunk = self.chunk_size(x)
        self.last_batch_size = chunk
        return predict_windows(self.model, x, batch_size=chunk, precision=self.autocast,
                               device=self.device)
