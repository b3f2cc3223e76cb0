"""Inference engines: callables mapping scaled windows (N, W, F) to (RUL (N,), probs (N, 3)).

``TorchEngine`` runs the PyTorch model (fp32, bf16 autocast, fp16 on CUDA, int8 dynamic
quantisation on CPU), in chunks of a fixed batch size or of one the planner chooses from the free
memory (``batch_size="auto"``). ``amnl.deploy.onnx`` adds the ONNX Runtime engine.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from amnl.deploy.planner import (
    DEFAULT_MAX_BATCH,
    FALLBACK_BATCH,
    MB,
    MemoryFit,
    batch_size_for_free_memory,
)
from amnl.model.inference import predict_windows
from amnl.model.network import AMNL

logger = logging.getLogger(__name__)

TORCH_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
#: ``batch_size`` values that let the planner choose the chunk size at run time.
AUTO_BATCH = ("auto", 0)


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is available; use --device cpu")
    return device


class TorchEngine:
    """PyTorch inference at a given precision.

    Args:
        model: the FP32 network.
        device: ``cpu``, ``cuda`` or ``auto``.
        precision: ``fp32``, ``bf16``, ``fp16`` (CUDA only) or ``int8`` (CPU only).
        batch_size: windows per forward pass, or ``"auto"`` (or 0): at the first call a memory
            line is measured on this model (:func:`amnl.deploy.profiling.calibrate_memory`), and
            every call runs in chunks of the largest size that fits in half the free memory and
            in ``memory_budget_mb`` (:func:`amnl.deploy.planner.batch_size_for_free_memory`).
        memory_budget_mb: with ``"auto"``, the most peak tensor memory (weights included) a
            chunk may need, MB.
        max_batch: with ``"auto"``, the largest chunk.

    Example:
        >>> from amnl.model.factory import create_model
        >>> engine = TorchEngine(create_model("base"), batch_size="auto", memory_budget_mb=40)
        >>> rul, probs = engine(np.zeros((256, 30, 14), np.float32))
        >>> engine.last_batch_size  # machine-dependent: 59 on a 2-core EPYC  # doctest: +SKIP
        59
    """

    def __init__(self, model: AMNL, *, device: str = "cpu", precision: str = "fp32",
                 batch_size: int | str = 1024, memory_budget_mb: float | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        auto = batch_size in AUTO_BATCH
        if not auto and (isinstance(batch_size, str) or int(batch_size) < 1):
            raise ValueError(f"batch_size must be >= 1 or 'auto', got {batch_size!r}")
        if precision not in TORCH_PRECISIONS:
            raise ValueError(f"precision must be one of {TORCH_PRECISIONS}, got {precision!r}")
        device = pick_device(device)
        if precision == "fp16" and device == "cpu":
            raise ValueError("fp16 inference needs CUDA; use bf16 or int8 on CPU")
        if precision == "int8" and device != "cpu":
            raise ValueError("int8 dynamic quantisation runs on CPU only")
        model = model.to(device).eval()
        if precision == "int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear, torch.nn.LSTM},
                                                           dtype=torch.qint8)
        self.model, self.device, self.precision, self.batch_size = model, device, precision, batch_size
        self.auto, self.memory_budget_mb, self.max_batch = auto, memory_budget_mb, max_batch
        self.memory_fit: MemoryFit | None = None
        """With ``"auto"``: the memory line measured at the first call."""
        self.last_batch_size: int | None = None
        """Windows per forward pass of the latest call."""
        self._fit_shape: tuple[int, ...] | None = None
        self._points: dict[int, int] = {}

    @property
    def _autocast(self) -> str:
        return self.precision if self.precision in ("bf16", "fp16") else "fp32"

    def chunk_size(self, x: np.ndarray) -> int:
        """Windows per forward pass for ``x`` (N, W, F): the fixed size, or the planner's.

        With ``"auto"``: the memory line is measured at small batch sizes the first time a
        window shape is seen; when the plan goes beyond the batches measured, the planned batch
        is measured too and the plan redone, so the chunk always rests on a measured point.
        """
        if not self.auto:
            return int(self.batch_size)
        if len(x) == 0:
            return 1
        from amnl.deploy.profiling import calibrate_memory

        shape = tuple(x.shape[1:])
        budget = None if self.memory_budget_mb is None else self.memory_budget_mb * MB
        try:
            if self.memory_fit is None or self._fit_shape != shape:
                self._points = {}
                self.memory_fit = calibrate_memory(self.model, window=shape[0], features=shape[1],
                                                   device=self.device, autocast=self._autocast,
                                                   points=self._points)
                self._fit_shape = shape
            chunk = batch_size_for_free_memory(self.memory_fit, device=self.device,
                                               budget_bytes=budget, max_batch=self.max_batch,
                                               power_of_two=False)
            if chunk > self.memory_fit.max_measured_batch:
                self.memory_fit = calibrate_memory(self.model, window=shape[0], features=shape[1],
                                                   device=self.device, autocast=self._autocast,
                                                   batches=[chunk], points=self._points)
                chunk = batch_size_for_free_memory(self.memory_fit, device=self.device,
                                                   budget_bytes=budget, max_batch=self.max_batch,
                                                   power_of_two=False)
        except RuntimeError as exc:  # e.g. the caller is running torch.profiler
            logger.warning("cannot calibrate the batch size (%s); using %d this call", exc,
                           min(FALLBACK_BATCH, self.max_batch))
            self.memory_fit = None
            return min(FALLBACK_BATCH, self.max_batch)
        logger.debug("auto batch size %d for %d windows", chunk, len(x))
        return chunk

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.last_batch_size = self.chunk_size(x)
        return predict_windows(self.model, x, batch_size=self.last_batch_size,
                               precision=self._autocast, device=self.device)
