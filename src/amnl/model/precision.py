"""Running the network at a precision: the autocast context shared by training, inference
and profiling."""

from __future__ import annotations

from contextlib import nullcontext

import torch

#: Input/weight dtype of a model cast to a half precision (``bf16``/``fp16``); FP32 otherwise.
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device | str):
    """Autocast context for ``fp32`` (none), ``bf16`` or ``fp16``; ``int8`` models run their
    quantised layers as they are, so no autocast either."""
    if precision not in HALF_DTYPES:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=HALF_DTYPES[precision])


def input_dtype(precision: str) -> torch.dtype:
    """Dtype of the input windows for a model cast to ``precision``."""
    return HALF_DTYPES.get(precision, torch.float32)
