"""Stage 3: the network only; nothing about data or training."""

from amnl.model.factory import MODEL_SIZES, create_model
from amnl.model.network import AMNL, Output

__all__ = ["AMNL", "MODEL_SIZES", "Output", "create_model"]
