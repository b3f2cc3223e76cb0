"""The machine's measured matrix-multiply peaks, the ceiling every throughput is a fraction of."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Side of the square GEMMs that measure the machine's peak (large enough to be compute-bound).
PEAK_GEMM_SIZE = 2048
PEAK_GEMM_REPEATS = 10
INPUT_SEED = 0
#: Which measured peak a runtime's precision is compared with.
PEAK_FOR_PRECISION = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "int8": "int8"}


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peaks(threads: int, n: int = PEAK_GEMM_SIZE, repeats: int = PEAK_GEMM_REPEATS
                 ) -> dict[str, float]:
    """Measured GEMM peak of this machine, FLOP/s (OP/s for int8), with ``threads`` threads.

    ``fp32``: the better of torch (MKL) and ONNX Runtime (MLAS) ``n x n`` matmul. ``bf16``:
    torch (oneDNN). ``int8``: ONNX Runtime ``MatMulInteger`` (uint8 x int8 -> int32, the
    kernel its dynamic quantisation uses). Best of ``repeats`` runs each; the ONNX Runtime
    entries are skipped when it is not installed.
    """
    import torch

    from amnl.profiling.threads import torch_threads

    flops = 2.0 * n ** 3
    peaks = {}
    with torch_threads(threads):
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            peaks[name] = flops / _best_seconds(lambda a=a, b=b: a @ b, repeats)
    try:
        peaks["fp32"] = max(peaks["fp32"], flops / _best_seconds(_ort_gemm(n, threads, False), repeats))
        peaks["int8"] = flops / _best_seconds(_ort_gemm(n, threads, True), repeats)
    except ImportError:
        logger.warning("onnxruntime not installed: no int8 peak")
    return peaks


def _ort_gemm(n: int, threads: int, int8: bool) -> Callable[[], Any]:
    """One ``n x n`` GEMM in ONNX Runtime: MatMulInteger (u8 x s8) or MatMul (fp32)."""
    from amnl.extras import require
    from amnl.inference.onnx_runtime import session_options

    ort, onnx = require("onnxruntime"), require("onnx")
    helper, numpy_helper, tp = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    rng = np.random.default_rng(INPUT_SEED)
    if int8:
        w = rng.integers(-127, 128, (n, n), dtype=np.int8)
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        op, a_type, y_type = "MatMulInteger", tp.UINT8, tp.INT32
    else:
        w = rng.standard_normal((n, n), dtype=np.float32)
        a = rng.standard_normal((n, n), dtype=np.float32)
        op, a_type, y_type = "MatMul", tp.FLOAT, tp.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", a_type, [n, n])],
        [helper.make_tensor_value_info("y", y_type, [n, n])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"a": a})
