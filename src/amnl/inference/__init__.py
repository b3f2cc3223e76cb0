"""Stage 6: running a model. :class:`~amnl.inference.predictor.Predictor` (raw histories in,
predictions out) over a runtime: :class:`~amnl.inference.runtime.TorchRuntime` or
:class:`~amnl.inference.onnx_runtime.OnnxRuntime`; :mod:`amnl.inference.planner` sizes batches
from measured memory."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: What a runtime is: windows float32 (N, W, F) in, (RUL (N,) in cycles, health probabilities
#: (N, 3)) out. Every runtime and precision has this shape, and the evaluation
#: (:mod:`amnl.evaluate.evaluate`) scores any such callable.
PredictFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

__all__ = ["PredictFn"]
