"""amnl: remaining useful life and health state for machine fleets, with the AMNL model.

The public API:

* :class:`Predictor` (``amnl.inference.predictor``): load a model, predict from raw histories;
* :class:`RunConfig` and its parts, :class:`InferenceConfig` (``amnl.config``);
* the errors (``amnl.errors``), all under :class:`AmnlError`.

``import amnl`` loads only the standard library and the configs; :class:`Predictor` is
imported on first use, and with the onnx runtime on an exported folder it never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from amnl.config import DataConfig, InferenceConfig, ModelConfig, RunConfig, TrainConfig
from amnl.errors import AmnlError, ConfigError, DataError, ModelError, NotFittedError

if TYPE_CHECKING:  # pragma: no cover
    from amnl.inference.predictor import Predictions, Predictor

__all__ = ["AmnlError", "ConfigError", "DataConfig", "DataError", "InferenceConfig",
           "ModelConfig", "ModelError", "NotFittedError", "Predictions", "Predictor",
           "RunConfig", "TrainConfig", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Predictor", "Predictions"):
        from amnl.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'amnl' has no attribute {name!r}")
