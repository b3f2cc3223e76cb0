"""INT8: the one place where amnl quantises a model, for each runtime.

* torch: dynamic quantisation of every ``Linear`` and ``LSTM`` (weights INT8 per tensor,
  activations quantised per batch at run time; CPU only). The CNN and the attention's packed
  projection stay FP32. Used by the torch runtime and by the profiler.
* ONNX Runtime: dynamic quantisation of every ``MatMul`` and ``LSTM`` of an exported graph
  (:func:`quantize_onnx`); the export writes every Linear as a MatMul so that the funnel and
  both heads are reached too (see :mod:`amnl.export.onnx`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

logger = logging.getLogger(__name__)

#: Op types ONNX Runtime's dynamic quantiser rewrites. Gemm is not among them (see
#: :mod:`amnl.export.onnx`), and Conv would become the slow ``ConvInteger``; the export has
#: neither.
QUANTIZE_OP_TYPES = ("MatMul", "LSTM")
#: Op types of a dynamically quantised graph that carry INT8 weights.
QUANTIZED_OP_TYPES = ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                      "ConvInteger")


def quantize_torch(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """``model`` (eval mode, CPU) with INT8 dynamic quantisation of its Linear and LSTM layers.

    Args:
        model: the FP32 network.
        inplace: convert ``model`` itself (no second copy of the weights).
    """
    import torch
    from torch import nn

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear, nn.LSTM},
                                                      dtype=torch.qint8, inplace=inplace)


def quantize_onnx(src: str | Path, dst: str | Path) -> None:
    """Dynamic INT8 quantisation of an ONNX file (signed per-tensor weights, activations
    quantised per run), ``src`` -> ``dst``."""
    from amnl.extras import require

    oq = require("onnxruntime.quantization", "INT8 quantisation of an ONNX file")

    root = logging.getLogger()
    was_disabled, root.disabled = root.disabled, True  # it logs a pre-processing hint on root
    try:
        oq.quantize_dynamic(str(src), str(dst), weight_type=oq.QuantType.QInt8,
                            op_types_to_quantize=list(QUANTIZE_OP_TYPES))
    finally:
        root.disabled = was_disabled
