"""Inference engines: callables mapping scaled windows (N, W, F) to (RUL (N,), probs (N, 3)).

``TorchEngine`` runs the PyTorch model (fp32, bf16 autocast, fp16 on CUDA, int8 dynamic
quantisation on CPU). ``amnl.deploy.onnx`` adds the ONNX Runtime engine.
"""

from __future__ import annotations

import numpy as np
import torch

from amnl.model.inference import predict_windows
from amnl.model.network import AMNL

TORCH_PRECISIONS = ("fp32", "bf16", "fp16", "int8")


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
        batch_size: windows per forward pass.
    """

    def __init__(self, model: AMNL, *, device: str = "cpu", precision: str = "fp32",
                 batch_size: int = 1024) -> None:
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

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        autocast_precision = self.precision if self.precision in ("bf16", "fp16") else "fp32"
        return predict_windows(self.model, x, batch_size=self.batch_size,
                               precision=autocast_precision, device=self.device)
