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


#: GEMM sides tried, smallest first: a size is only measured while the smaller one took less
#: than its share of the time budget, so an emulated precision (bf16 on a CPU without it:
#: seconds per 2048 GEMM) stays within ``seconds``.
PEAK_GEMM_SIZES = (256, 512, 1024, PEAK_GEMM_SIZE)
#: Seconds per precision when none are given.
PEAK_SECONDS = 2.0


def _best_rate(make: Callable[[int], Callable[[], Any]], seconds: float,
               repeats: int = PEAK_GEMM_REPEATS) -> float:
    """Best FLOP/s of ``make(n)()`` (an ``n x n`` GEMM) over growing ``n``, within ``seconds``."""
    deadline = time.perf_counter() + seconds
    best = 0.0
    for n in PEAK_GEMM_SIZES:
        fn = make(n)
        t0 = time.perf_counter()
        fn()  # warm-up, and how long one call takes at this size
        one = time.perf_counter() - t0
        for _ in range(repeats):
            if time.perf_counter() + one > deadline:
                break
            t0 = time.perf_counter()
            fn()
            best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0))
        # the next size costs about 8x: only if it fits in what is left
        if time.perf_counter() + 8 * one * (repeats + 1) > deadline:
            break
    return best if best > 0 else 2.0 * PEAK_GEMM_SIZES[0] ** 3 / max(one, 1e-9)


def matmul_peaks(threads: int, precisions: tuple[str, ...] = ("fp32", "bf16", "int8"), *,
                 seconds: float = PEAK_SECONDS) -> dict[str, float]:
    """Measured GEMM peak of this machine, FLOP/s (OP/s for int8), with ``threads`` threads.

    ``fp32``: the better of torch (MKL) and ONNX Runtime (MLAS) matmul. ``bf16``: torch
    (oneDNN). ``int8``: ONNX Runtime ``MatMulInteger`` (the kernel its dynamic quantisation
    uses). Only the ``precisions`` asked for are measured, each within about ``seconds``
    (square GEMMs of growing size, :data:`PEAK_GEMM_SIZES`, the best rate kept); the ONNX
    Runtime entries are skipped when it is not installed.
    """
    import torch

    from amnl.profiling.threads import torch_threads

    peaks: dict[str, float] = {}

    def torch_gemm(dtype):
        def make(n: int):
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            return lambda: a @ b
        return make

    with torch_threads(threads):
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            if name in precisions:
                peaks[name] = _best_rate(torch_gemm(dtype), seconds)
    try:
        if "fp32" in precisions:
            peaks["fp32"] = max(peaks["fp32"], _best_rate(
                lambda n: _ort_gemm(n, threads, False), seconds))
        if "int8" in precisions:
            peaks["int8"] = _best_rate(lambda n: _ort_gemm(n, threads, True), seconds)
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
