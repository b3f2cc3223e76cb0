"""amnl: remaining useful life and health state for machine fleets, with the AMNL model."""

__version__ = "0.1.0"

from amnl.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from amnl.errors import AmnlError, DataError, ModelError

__all__ = ["AmnlError", "DataConfig", "DataError", "ModelConfig", "ModelError", "RunConfig",
           "TrainConfig", "__version__"]
