"""Named model sizes, one entry point for tests, configs and the CLI."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from amnl.config import ModelConfig
from amnl.model.network import AMNL

#: ``base`` is the published 3.5 M-parameter model; ``tiny`` is for tests and CI.
MODEL_SIZES: dict[str, ModelConfig] = {
    "base": ModelConfig(),
    "tiny": ModelConfig(cnn_channels=(8, 16, 8), lstm_hidden=16, attn_heads=2, funnel=(16, 8, 8),
                        rul_head=(8, 8, 8), health_head=(8, 8)),
}


def create_model(name: str = "base", **overrides: Any) -> AMNL:
    """Build a model by size name, overriding single fields.

    Example:
        >>> create_model("tiny", in_features=17).config.in_features
        17
    """
    if name not in MODEL_SIZES:
        raise ValueError(f"unknown model size {name!r}; choose one of {sorted(MODEL_SIZES)}")
    return AMNL(replace(MODEL_SIZES[name], **overrides))
