"""INT8: the one place where amnl quantises a model, for each runtime.

* torch: dynamic quantisation of every ``Linear`` and ``LSTM`` (weights INT8 per tensor,
  activations quantised per batch at run time; CPU only). The CNN and the attention's packed
  projection stay FP32. Used by the torch runtime and by the profiler.
* ONNX Runtime: dynamic quantisation of every ``MatMul`` and ``LSTM`` of an exported graph
  (:func:`quantize_onnx`); the export writes every Linear as a MatMul so that the funnel and
  both heads are reached too (see :mod:`amnl.export.onnx`).

**Why U8U8 (unsigned 8-bit weights and activations).** ONNX Runtime's default for dynamic
quantisation, U8S8 (signed weights), runs on x86 CPUs without VNNI through ``vpmaddubsw``,
which adds two u8 x s8 products into a saturating int16: with activations near 255 and weights
near 127 the pair sums exceed 32,767 and are clipped (ONNX Runtime's quantisation docs warn of
it and suggest ``reduce_range`` or U8U8). On an AVX2-only Zen 3 host that gave max |dRUL| of
3.6-14 cycles and moved FD001's test RMSE by 0.34 (as reported in issue #17; no such host was
at hand to measure again). So every MatMul is U8U8, which multiplies
zero-extended values and cannot saturate; ONNX Runtime's LSTM kernel takes signed weights only,
so the two LSTMs get 7-bit signed weights (``reduce_range``), whose pair sums stay below 2^15
(255 * 2 * 63). Measured against PyTorch FP32 on every window of the four test files on an
Intel Xeon (family 6, model 207, AVX-512 VNNI; ``experiments/int8_schemes.py``,
``benchmarks/results/int8-schemes-xeon-vnni.json``):
p99 |dRUL| 0.89-1.07 cycles and max 2.4-6.3 (U8S8 there: 0.85-1.24 and 2.4-4.5), last-window
test RMSE within 0.1 of FP32 on all four subsets (the bar is 0.3).
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
    """Dynamic INT8 quantisation of an ONNX file, ``src`` -> ``dst``: unsigned per-tensor
    MatMul weights (U8U8), 7-bit signed LSTM weights (see the module docstring), activations
    quantised per run."""
    from amnl.extras import require

    oq = require("onnxruntime.quantization", "INT8 quantisation of an ONNX file")

    import tempfile

    root = logging.getLogger()
    was_disabled, root.disabled = root.disabled, True  # it logs a pre-processing hint on root
    try:
        with tempfile.TemporaryDirectory(prefix="amnl-int8-") as tmp:
            lstm = Path(tmp) / "lstm.onnx"
            # the LSTM kernel takes signed weights only: 7-bit ones keep its pair sums in int16
            oq.quantize_dynamic(str(src), str(lstm), weight_type=oq.QuantType.QInt8,
                                reduce_range=True, op_types_to_quantize=["LSTM"])
            oq.quantize_dynamic(str(lstm), str(dst), weight_type=oq.QuantType.QUInt8,
                                op_types_to_quantize=["MatMul"])
    finally:
        root.disabled = was_disabled
