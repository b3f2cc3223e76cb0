"""Where ONNX Runtime spends its time: the per-operator split of a session, from its profiler.

ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) writes one event per node
run, named by the op type ONNX Runtime executes, i.e. after its graph optimisations (a fusion
such as ``DynamicQuantizeMatMul`` is one op). :func:`op_time_split` runs a file on a fixed
input, sums the kernel time of each op type over the timed runs and returns the shares, so two
graphs can be compared side by side (``benchmarks/bench_inference.py ops``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

#: Session runs before the timed ones (ONNX Runtime's first runs allocate and plan); they are
#: profiled too (a profile cannot start late) and dropped.
WARMUP_RUNS = 3


def _session(path: str | os.PathLike, threads: int, *, spin: bool = True, **options: Any):
    from amnl.extras import require
    from amnl.inference.onnx_runtime import session_options

    ort = require("onnxruntime")
    so = session_options(threads)
    for key, value in options.items():
        setattr(so, key, value)
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def optimized_graph_ops(path: str | os.PathLike, threads: int = 0) -> Counter:
    """Op types of the graph ONNX Runtime actually runs (after all its optimisations)."""
    from amnl.extras import require

    onnx = require("onnx")
    with tempfile.TemporaryDirectory(prefix="amnl-ortopt-") as tmp:
        out = str(Path(tmp) / "optimized.onnx")
        _session(path, threads, optimized_model_filepath=out)
        proto = onnx.load(out, load_external_data=False)
    return Counter(n.op_type for n in proto.graph.node)


def op_time_split(path: str | os.PathLike, x: np.ndarray, *, threads: int = 0,
                  runs: int = 20) -> dict[str, Any]:
    """Kernel time of each op type of ``path`` over ``runs`` calls of ``session.run`` on ``x``.

    Args:
        path: an ONNX file with one input.
        x: one batch, float32 ``(batch, window, features)``, run whole (one ``session.run``).
        threads: intra-op threads (0 = all cores), as :class:`amnl.inference.onnx_runtime.OnnxRuntime`.
        runs: timed calls, after :data:`WARMUP_RUNS` dropped ones.

    Returns:
        ``{"ops": {op: {"ms": per run, "share": of the kernel time, "nodes": nodes run per
        session.run}}, "kernel_ms": sum of the ops per run, "run_ms": median session.run time
        by the profiler, "batch", "runs", "graph_nodes"}``; ops sorted by time, largest first.
    """
    return op_time_splits({"graph": path}, x, threads=threads, runs=runs)["graph"]


def op_time_splits(paths: dict[str, str | os.PathLike], x: np.ndarray, *, threads: int = 0,
                   runs: int = 20) -> dict[str, dict[str, Any]]:
    """:func:`op_time_split` of several files, their runs interleaved (one run of each in
    turn), so that a host whose speed drifts during the measurement affects them alike.

    With more than one file the sessions' threads do not spin between runs (ONNX Runtime's
    ``session.intra_op.allow_spinning`` = 0): a pool left spinning by one session takes the
    cores from the next one's run."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="amnl-ortprof-") as tmp:
        sessions = {name: _session(path, threads, spin=len(paths) == 1, enable_profiling=True,
                                   profile_file_prefix=str(Path(tmp) / f"prof{i}"))
                    for i, (name, path) in enumerate(paths.items())}
        feeds = {name: {sess.get_inputs()[0].name: x} for name, sess in sessions.items()}
        for _ in range(WARMUP_RUNS + runs):
            for name, sess in sessions.items():
                sess.run(None, feeds[name])
        events = {name: json.loads(Path(sess.end_profiling()).read_text())
                  for name, sess in sessions.items()}
    return {name: _split(ev, runs, len(x)) for name, ev in events.items()}


def _split(events: list[dict], runs: int, batch: int) -> dict[str, Any]:
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    if len(model_runs) < WARMUP_RUNS + runs:
        raise RuntimeError(f"ONNX Runtime's profile has {len(model_runs)} runs, expected "
                           f"{WARMUP_RUNS + runs}")
    timed = model_runs[WARMUP_RUNS:]
    start = timed[0]["ts"]
    time_us: dict[str, float] = defaultdict(float)
    nodes: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            op = e.get("args", {}).get("op_name", "?")
            time_us[op] += e["dur"]
            nodes[op] += 1
    total = sum(time_us.values())
    ops = {op: {"ms": us / 1e3 / runs, "share": us / total if total else 0.0,
                "nodes": nodes[op] // runs}
           for op, us in sorted(time_us.items(), key=lambda kv: -kv[1])}
    return {"ops": ops, "kernel_ms": total / 1e3 / runs,
            "run_ms": float(np.median([e["dur"] for e in timed])) / 1e3,
            "batch": batch, "runs": runs, "graph_nodes": sum(n["nodes"] for n in ops.values())}


def format_split(splits: dict[str, dict[str, Any]]) -> str:
    """A table of several :func:`op_time_split` results side by side (columns: their names)."""
    from amnl.profiling.text import align_columns

    names = list(splits)
    ops = list(dict.fromkeys(op for s in splits.values() for op in s["ops"]))
    head = ["op", *[f"{n} ms (share, nodes)" for n in names]]
    lines = [head]
    for op in ops:
        row = [op]
        for n in names:
            o = splits[n]["ops"].get(op)
            row.append("-" if o is None else f"{o['ms']:.3f} ({100 * o['share']:.1f} %, {o['nodes']})")
        lines.append(row)
    lines.append(["kernels total", *[f"{splits[n]['kernel_ms']:.3f} ({splits[n]['graph_nodes']} nodes)"
                                     for n in names]])
    lines.append(["session.run median", *[f"{splits[n]['run_ms']:.3f}" for n in names]])
    return align_columns(lines)
