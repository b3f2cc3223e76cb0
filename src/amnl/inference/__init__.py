"""Stage 6: running a model. :class:`~amnl.inference.predictor.Predictor` (raw histories in,
predictions out) over a runtime: :class:`~amnl.inference.runtime.TorchRuntime` or
:class:`~amnl.inference.onnx_runtime.OnnxRuntime`; :mod:`amnl.inference.planner` sizes batches
from measured memory."""
