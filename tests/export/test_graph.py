"""The lean passes over an exported graph: the same function, fewer nodes, no Gemm; and ONNX
Runtime's per-operator time split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx
import torch

from amnl.export import graph as lean
from amnl.export.onnx import export_onnx
from amnl.inference.onnx_runtime import OnnxRuntime
from amnl.model.factory import create_model
from amnl.profiling.ort_ops import format_split, op_time_splits, optimized_graph_ops

WINDOW = 12


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model exported with and without the lean passes: {"plain": path, "lean": path}."""
    torch.manual_seed(0)
    model = create_model("tiny")
    out = tmp_path_factory.mktemp("lean")
    return {name: export_onnx(model, out / f"{name}.onnx", WINDOW, lean=name == "lean")
            for name in ("plain", "lean")}


def test_lean_graph_is_the_same_function_with_fewer_nodes(files):
    x = np.random.default_rng(0).standard_normal((9, WINDOW, 14), dtype=np.float32)
    (r0, p0), (r1, p1) = (OnnxRuntime(files[n], chunk=4)(x) for n in ("plain", "lean"))
    np.testing.assert_allclose(r1, r0, atol=1e-4)
    np.testing.assert_allclose(p1, p0, atol=1e-6)
    ops = {n: Counter(node.op_type for node in onnx.load(str(f)).graph.node) for n, f in files.items()}
    assert ops["plain"]["Gemm"] > 0 and ops["lean"]["Gemm"] == 0
    assert ops["lean"]["Transpose"] == ops["plain"]["Transpose"] - 1  # the LSTM output's copy
    assert sum(ops["lean"].values()) < sum(ops["plain"].values())
    lstms = [n for n in onnx.load(str(files["lean"])).graph.node if n.op_type == "LSTM"]
    assert lstms and all(len(n.input) <= 5 for n in lstms)  # zero initial states omitted
    # and what ONNX Runtime runs after its own optimisations is smaller too
    assert sum(optimized_graph_ops(files["lean"], 1).values()) < \
        sum(optimized_graph_ops(files["plain"], 1).values())


def test_gemm_pass_keeps_transposed_weights_right():
    """A Gemm with transB and a bias, and one without a bias, computed by ONNX Runtime before
    and after the rewrite."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w1, b1, w2 = (rng.standard_normal(s, dtype=np.float32) for s in ((5, 4), (5,), (3, 5)))
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
         helper.make_node("Gemm", ["h", "w2"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((6, 4), dtype=np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert lean.gemm_to_matmul(model) == 2
    lean.prune_initializers(model)
    onnx.checker.check_model(model)
    assert {n.op_type for n in model.graph.node} == {"MatMul", "Add"}
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after, (x @ w1.T + b1) @ w2.T, rtol=1e-4, atol=1e-4)


def test_op_time_split_accounts_for_every_op(files):
    x = np.zeros((4, WINDOW, 14), np.float32)
    splits = op_time_splits(files, x, threads=1, runs=3)
    for s in splits.values():
        assert s["runs"] == 3 and s["batch"] == 4 and s["kernel_ms"] > 0
        assert abs(sum(o["share"] for o in s["ops"].values()) - 1) < 1e-9
        assert "LSTM" in s["ops"] and s["ops"]["LSTM"]["nodes"] == 2
    assert splits["lean"]["graph_nodes"] < splits["plain"]["graph_nodes"]
    table = format_split(splits)
    assert "plain ms" in table and "LSTM" in table
