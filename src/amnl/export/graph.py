"""Generic passes over an exported ONNX graph that make it lean for ONNX Runtime.

:func:`lean_graph` applies them all. Each one is a local rewrite that computes the same
function; none knows the AMNL network:

* :func:`gemm_to_matmul`: ``Gemm(A, B, C)`` -> ``MatMul(A, B) + C``, so that ONNX Runtime's
  dynamic quantiser (which rewrites ``MatMul`` but not ``Gemm``) reaches every dense layer;
* :func:`fold_batch_first_lstm_output`: the exporter writes a batch-first LSTM's output as
  ``Transpose(0, 2, 1, 3)`` to (T, B, dirs, H), ``Reshape`` to (T, B, dirs * H) and
  ``Transpose(1, 0, 2)`` to (B, T, E): two copies of the largest activation. One
  ``Transpose(2, 0, 1, 3)`` to (B, T, dirs, H) and the same ``Reshape`` give it directly;
* :func:`drop_zero_lstm_states`: the exporter builds each LSTM's zero initial state at run
  time (``Shape``, ``ConstantOfShape``, ``Slice`` ... a dozen nodes); an omitted initial state
  is zero by the ONNX specification;
* :func:`prune_dead_nodes` and :func:`prune_initializers` remove what no output needs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

#: (T, 2, B, H) -> (T, B, 2, H): the exporter's reordering of an LSTM's ``Y`` output.
_TIME_FIRST_Y = [0, 2, 1, 3]
#: (T, 2, B, H) -> (B, T, 2, H).
_BATCH_FIRST_Y = [2, 0, 1, 3]
_SWAP_01 = [1, 0, 2]


def _onnx():
    from amnl.extras import require

    return require("onnx", "ONNX export")


def _attr(node: Any, name: str, default: Any = None) -> Any:
    onnx = _onnx()
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _set_ints(node: Any, name: str, values: list[int]) -> None:
    onnx = _onnx()
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, list(values)))


def _constant(graph: Any, name: str) -> np.ndarray | None:
    """The value of ``name`` when it is an initializer or a ``Constant`` node's output."""
    onnx = _onnx()
    for init in graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            value = _attr(node, "value")
            return None if value is None else onnx.numpy_helper.to_array(value)
    return None


def gemm_to_matmul(model: Any) -> int:
    """Rewrite every plain ``Gemm`` (alpha = beta = 1, no ``transA``, constant ``B``) as
    ``MatMul`` + ``Add``, transposing ``B`` once where ``transB`` is set. Returns the count."""
    onnx = _onnx()
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, done = [], 0
    for node in graph.node:
        plain = (node.op_type == "Gemm" and _attr(node, "transA", 0) == 0
                 and _attr(node, "alpha", 1.0) == 1.0 and _attr(node, "beta", 1.0) == 1.0
                 and node.input[1] in inits)
        if not plain:
            nodes.append(node)
            continue
        b = node.input[1]
        if _attr(node, "transB", 0):
            weight = onnx.numpy_helper.to_array(inits[b]).T.copy()
            b = f"{b}_transposed"
            graph.initializer.append(onnx.numpy_helper.from_array(weight, b))
        product, stem = f"{node.output[0]}_matmul", node.name or node.output[0]
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], b], [product],
                                           name=f"{stem}_matmul"))
        if len(node.input) > 2 and node.input[2]:
            nodes.append(onnx.helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                               name=f"{stem}_add"))
        else:
            nodes[-1].output[0] = node.output[0]
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def fold_batch_first_lstm_output(model: Any) -> int:
    """Replace ``LSTM -> Transpose(0,2,1,3) -> Reshape(0,0,-1) -> Transpose(1,0,2)`` by
    ``LSTM -> Transpose(2,0,1,3) -> Reshape(0,0,-1)``. Other readers of the time-first tensor
    get a ``Transpose`` of the batch-first one (merged into theirs when they are one).
    Returns the count."""
    onnx = _onnx()
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            readers[i].append(n)
    done, removed, added = 0, set(), []
    for swap in graph.node:
        if swap.op_type != "Transpose" or _attr(swap, "perm") != _SWAP_01:
            continue
        reshape = producer.get(swap.input[0])
        if reshape is None or reshape.op_type != "Reshape":
            continue
        first = producer.get(reshape.input[0])
        shape = _constant(graph, reshape.input[1])
        if (first is None or first.op_type != "Transpose" or _attr(first, "perm") != _TIME_FIRST_Y
                or producer.get(first.input[0]) is None
                or producer[first.input[0]].op_type != "LSTM"
                or shape is None or list(shape) != [0, 0, -1] or len(readers[first.output[0]]) != 1):
            continue
        time_first, batch_first = reshape.output[0], swap.output[0]
        _set_ints(first, "perm", _BATCH_FIRST_Y)
        reshape.output[0] = batch_first
        removed.add(id(swap))
        others = False
        for reader in readers[time_first]:
            if reader is swap:
                continue
            if reader.op_type == "Transpose":  # Transpose(swap(x), p) = Transpose(x, swap[p])
                _set_ints(reader, "perm", [_SWAP_01[i] for i in _attr(reader, "perm")])
                reader.input[0] = batch_first
            else:
                others = True
        if others:  # one node gives the time-first tensor to every other reader
            added.append(onnx.helper.make_node("Transpose", [batch_first], [time_first],
                                               name=f"{swap.name}_time_first", perm=_SWAP_01))
        done += 1
    if done:
        nodes = [n for n in graph.node if id(n) not in removed]
        for extra in added:  # right after the Reshape whose output it reads
            at = next(i for i, n in enumerate(nodes) if extra.input[0] in n.output)
            nodes.insert(at + 1, extra)
        del graph.node[:]
        graph.node.extend(nodes)
    return done


def _is_zero_fill(name: str, producer: dict) -> bool:
    """Whether ``name`` is zeros made at run time: ``ConstantOfShape`` of value 0 (the default),
    through shape-only ops (``Slice``, ``Unsqueeze``, ``Reshape``, ``Expand``, ``Squeeze``)."""
    onnx = _onnx()
    node = producer.get(name)
    while node is not None and node.op_type in ("Slice", "Unsqueeze", "Reshape", "Expand", "Squeeze"):
        node = producer.get(node.input[0])
    if node is None or node.op_type != "ConstantOfShape":
        return False
    value = _attr(node, "value")
    return value is None or not np.any(onnx.numpy_helper.to_array(value))


def drop_zero_lstm_states(model: Any) -> int:
    """Omit every LSTM ``initial_h`` / ``initial_c`` input that is zeros made at run time
    (ONNX: an omitted initial state is zero). Returns the count of inputs dropped."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    done = 0
    for node in graph.node:
        if node.op_type != "LSTM":
            continue
        for i in (5, 6):  # initial_h, initial_c
            if i < len(node.input) and node.input[i] and _is_zero_fill(node.input[i], producer):
                node.input[i] = ""
                done += 1
        while node.input and node.input[-1] == "":  # trailing optional inputs can go
            del node.input[-1]
    return done


def prune_dead_nodes(model: Any) -> int:
    """Drop nodes none of whose outputs reach a graph output. Returns the count."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    dropped = len(graph.node) - len(keep)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    return dropped


def prune_initializers(model: Any) -> int:
    """Drop initializers no node reads. Returns the count."""
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    dropped = len(graph.initializer) - len(keep)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return dropped


def lean_graph(model: Any) -> Any:
    """Every pass of this module on ``model`` (an ``onnx.ModelProto``, changed in place),
    then a check of the result. Returns ``model``."""
    onnx = _onnx()
    gemm_to_matmul(model)
    fold_batch_first_lstm_output(model)
    drop_zero_lstm_states(model)
    prune_dead_nodes(model)
    prune_initializers(model)
    onnx.checker.check_model(model)
    return model
