"""Build a network by size name: one entry point for tests, configs and the CLI."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from amnl.config import MODEL_SIZES, model_size
from amnl.model.network import AMNL

__all__ = ["MODEL_SIZES", "create_model"]


def create_model(name: str = "base", **overrides: Any) -> AMNL:
    """Build a model by size name (:data:`amnl.config.MODEL_SIZES`), overriding single fields.

    Example:
        >>> create_model("tiny", in_features=17).config.in_features
        17
    """
    return AMNL(replace(model_size(name), **overrides))
