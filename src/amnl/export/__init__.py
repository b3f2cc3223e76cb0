"""Stage 7: the model leaves amnl: ONNX export (:mod:`amnl.export.onnx`) and INT8
quantisation (:mod:`amnl.export.quantize`)."""
