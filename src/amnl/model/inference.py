"""Batched no-grad inference of an AMNL network over numpy windows."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn


def autocast(precision: str, device: torch.device | str):
    """Autocast context for ``fp32`` (none), ``bf16`` or ``fp16``."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@torch.inference_mode()
def predict_windows(model: nn.Module, x: np.ndarray, *, batch_size: int = 1024,
                    precision: str = "fp32", device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """RUL and health probabilities for windows ``x`` (N, W, F).

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
