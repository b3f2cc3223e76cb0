"""ONNX export and the ONNX Runtime engine (needs ``pip install 'amnl[export]'``).

The exported graph is a trace of :class:`amnl.model.network.AMNL` itself in eval mode: its
inference form (time-last convolutions as one MatMul over three time taps with BatchNorm
folded in, last-step attention with the key and value projections moved to the query side;
see :mod:`amnl.model.network`) is what the torch runtime runs too, so there is one
implementation of the network. Generic passes then make the traced graph lean for ONNX
Runtime (:mod:`amnl.export.graph`):

* every ``Gemm`` (what the exporter writes for ``nn.Linear`` on 2-D input) becomes ``MatMul``
  + ``Add``, so that the INT8 quantiser reaches the attention's projections, the funnel and
  both heads whatever its version (ONNX Runtime 1.32's also rewrites the traced Gemms itself);
* the exporter's batch-first LSTM output (``Transpose`` to time-first, ``Reshape``, then
  ``Transpose`` back to batch-first) becomes one ``Transpose`` + ``Reshape``;
* the LSTMs' zero initial states, built at run time by the exporter, are omitted.

ONNX Runtime's ``LSTM`` kernel is time-first only (it rejects ``layout=1``), so one transpose
before each LSTM layer remains. Per-operator time before and after:
``benchmarks/bench_inference.py ops`` (docs/deployment-inference.md).

Outputs: ``rul`` (N,) in cycles, clamped to [0, RUL cap] as in eval mode, and ``health`` (N, 3)
softmax probabilities, the same contract as :class:`amnl.inference.runtime.TorchRuntime`.

``onnx``, ``onnxruntime`` and ``torch`` are imported inside the functions that need them. The
inference side, :class:`amnl.inference.onnx_runtime.OnnxRuntime`, runs an exported file without
torch. INT8 quantisation is :mod:`amnl.export.quantize`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from amnl.errors import ConfigError, ModelError
from amnl.export.graph import lean_graph
from amnl.export.quantize import QUANTIZED_OP_TYPES, quantize_onnx
from amnl.extras import require as _require_extra
from amnl.rundir import ONNX_FILES, PREPROCESS_FILES, model_id

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from amnl.model.network import AMNL

logger = logging.getLogger(__name__)

#: ONNX file of each precision inside a model folder (run directory or export).
FILE_FOR_PRECISION = ONNX_FILES
INPUT_NAME = "x"
OUTPUT_NAMES = ("rul", "health")
#: ONNX opset of the export (ONNX Runtime >= 1.17 runs it).
OPSET = 18
#: Batch of the example input used for tracing; the batch axis is dynamic.
TRACE_BATCH = 4
#: Keys of ``metadata_props``: ``amnl.fingerprint`` ties a file to the weights it came from,
#: ``amnl.model_id`` names the run directory it was exported from (:func:`amnl.rundir.model_id`).
META_FINGERPRINT = "amnl.fingerprint"
META_MODEL_ID = "amnl.model_id"
META_WINDOW = "amnl.window"
META_PRECISION = "amnl.precision"
META_FORMAT = "amnl.format"
#: Bumped whenever the exported graph changes, so cached files of an older layout are rebuilt
#: (2: INT8 that cannot saturate on x86 without VNNI, see :mod:`amnl.export.quantize`; RUL
#: clamped to [0, cap]; 3: a trace of the network's own inference form, lean passes).
FORMAT_VERSION = "3"
#: How far an export may be from PyTorch FP32 on real windows, cycles of RUL: the largest
#: difference for FP32, and for INT8 the 99th percentile and the largest. The shipped INT8
#: measured p99 0.89-1.07 and max 2.4-6.3 on the four test files (Intel Xeon, family 6, model
#: 207; ``experiments/int8_schemes.py``); a saturating kernel gave 3.6-14 (issue #17's report).
PARITY_LIMITS: dict[str, dict[str, float]] = {"fp32": {"rul_max": 0.01},
                                              "int8": {"rul_p99": 2.5, "rul_max": 10.0}}


# -- optional dependencies --------------------------------------------------------------------

def require(module: str):
    """Import an optional dependency of the ``export`` extra, with an error that says how."""
    return _require_extra(module, "ONNX export and inference")


def check_available() -> None:
    """Raise ImportError, naming the extra to install, unless onnx and onnxruntime import."""
    require("onnx")
    require("onnxruntime")


# -- the export graph -------------------------------------------------------------------------

def _export_net(model: AMNL) -> torch.nn.Module:
    """An eval-mode copy of ``model`` on the CPU in FP32 whose forward returns ``(rul,
    softmax(health))``; ``model`` itself is not changed."""
    import copy

    import torch

    class _Inference(torch.nn.Module):
        def __init__(self, net: AMNL) -> None:
            super().__init__()
            self.net = copy.deepcopy(net).float().cpu().eval()
            self.net.inference_form = True

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.net(x)
            return out.rul, torch.softmax(out.health, dim=-1)

    return _Inference(model).eval()


def model_fingerprint(model: AMNL, window: int) -> str:
    """SHA-256 of the FP32 weights, the model config and the window: names an exported file."""
    from dataclasses import asdict

    h = hashlib.sha256()
    h.update(json.dumps({"config": asdict(model.config), "window": window,
                         "format": FORMAT_VERSION}, sort_keys=True).encode())
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = value.detach().cpu()
        h.update((t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes())
    return h.hexdigest()


def export_onnx(model: AMNL, path: str | os.PathLike, window: int, *, int8: bool = False,
                metadata: dict[str, Any] | None = None, lean: bool = True) -> Path:
    """Write ``model`` as an ONNX file with a dynamic batch axis.

    Args:
        model: the FP32 network (not modified; the export is its eval-mode function).
        path: the ``.onnx`` file to write (its folder is created).
        window: window length the model was trained on (the time axis is fixed to it).
        int8: quantise the weights of every MatMul and LSTM to INT8 with ONNX Runtime's dynamic
            quantisation (activations are quantised per batch at run time).
        metadata: extra ``metadata_props`` (strings; other values are JSON-encoded), e.g. the
            run config and feature names. The weights' fingerprint, window, precision and
            format version are always added.
        lean: apply :func:`amnl.export.graph.lean_graph` (``False`` only to measure what
            it buys: ``benchmarks/bench_inference.py ops``).

    Returns:
        ``path``.

    Example:
        >>> export_onnx(create_model("tiny"), "m.onnx", 30, metadata={"features": names})  # doctest: +SKIP
        PosixPath('m.onnx')
    """
    onnx = require("onnx")
    require("onnxruntime")
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    props.update({META_FINGERPRINT: model_fingerprint(model, window), META_WINDOW: str(window),
                  META_PRECISION: "int8" if int8 else "fp32", META_FORMAT: FORMAT_VERSION})
    net = _export_net(model)
    example = torch.zeros(TRACE_BATCH, window, model.config.in_features)
    with tempfile.TemporaryDirectory(prefix="amnl-onnx-") as tmp:
        fp32 = Path(tmp) / ONNX_FILES["fp32"]
        _torch_export(net, example, fp32)
        proto = onnx.load(str(fp32))
        if lean:
            lean_graph(proto)
        _set_metadata(proto, props)
        if not int8:
            onnx.save(proto, str(path))
            return path
        onnx.save(proto, str(fp32))
        quantize_onnx(fp32, path)
    proto = onnx.load(str(path))
    _set_metadata(proto, props)
    onnx.save(proto, str(path))
    counts = quantized_node_counts(path)
    logger.info("%s: quantised nodes %s", path, counts)
    return path


def _torch_export(net: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export with the TorchScript-based exporter (``dynamo=False``).

    Both exporters of torch 2.13 give the same FP32 parity, but only this one writes the
    ``LSTM`` weights as initializers: ``dynamo=True`` computes them with Slice/Concat nodes,
    which ONNX Runtime's dynamic quantiser does not fold, so both LSTMs (96 % of the FLOPs)
    stayed FP32 in its INT8 file. It is also faster (about 4 s against 9 s for the base model).
    See docs/deployment-inference.md.
    """
    import warnings

    import torch

    with warnings.catch_warnings(), torch.no_grad():
        # the deprecation notice of the TorchScript exporter, and its note that an LSTM's
        # batch size is taken from the input: both expected here
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in OUTPUT_NAMES}},
                          do_constant_folding=True)


def _set_metadata(proto: Any, props: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value


def quantized_node_counts(path: str | os.PathLike) -> dict[str, int]:
    """Count the nodes of an ONNX file by op type, for the quantised ops and the float ones.

    Returns:
        ``{"quantized": n, "float_matmul": n, "float_lstm": n, "float_gemm": n, **by_op}``
        where ``by_op`` counts each op of :data:`QUANTIZED_OP_TYPES` present.
    """
    onnx = require("onnx")
    ops = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    by_op = {op: ops[op] for op in QUANTIZED_OP_TYPES if ops[op]}
    return {"quantized": sum(by_op.values()), "float_matmul": ops["MatMul"],
            "float_lstm": ops["LSTM"], "float_gemm": ops["Gemm"], **by_op}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading its weights into a session)."""
    onnx = require("onnx")
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def export_target(out: str | os.PathLike, *, int8: bool = False) -> Path:
    """The ONNX file an export to ``out`` writes: ``out`` itself when it names a ``.onnx``
    file, else the precision's file (:data:`FILE_FOR_PRECISION`) inside the folder ``out``.

    A folder finds its files by these names (``Predictor.load(folder)`` with the onnx runtime
    opens ``model.onnx`` for fp32 and ``model_int8.onnx`` for int8), so a ``.onnx`` file named
    after the other precision is refused: it would be opened as the wrong one.

    Raises:
        ConfigError: ``out`` has another suffix, or is ``model.onnx`` for INT8 (or
            ``model_int8.onnx`` for FP32).

    Example:
        >>> export_target("exp", int8=True).as_posix()
        'exp/model_int8.onnx'
    """
    out = Path(out)
    precision = "int8" if int8 else "fp32"
    if out.is_dir() or not out.suffix:
        return out / FILE_FOR_PRECISION[precision]
    if out.suffix != ".onnx":
        raise ConfigError(f"--out must be a folder or a .onnx file, got {out}")
    for other, name in FILE_FOR_PRECISION.items():
        if other != precision and out.name == name:
            raise ConfigError(
                f"--out {out}: {name} is the {other} file of an export folder, and this export "
                f"is {precision}; pass --out {out.with_name(FILE_FOR_PRECISION[precision])} or "
                f"the folder --out {out.parent}")
    return out


def export_run(model_dir: str | os.PathLike, out: str | os.PathLike, *, int8: bool = False) -> Path:
    """Export a run directory or bundled model folder to ``out`` and copy its preprocessing.

    ``out`` is a ``.onnx`` file or a folder (:func:`export_target` says which file is written).
    ``config.json``, ``preprocess.npz`` and ``preprocess.json`` are copied beside ``out``
    (and the config, the feature names and the source's :func:`amnl.rundir.model_id` are
    embedded in the file's metadata), so the folder of ``out`` is enough for
    :func:`amnl.inference.onnx_runtime.load_exported` and ``Predictor.load``.

    Returns:
        The ONNX file written.

    Raises:
        ModelError: the folder of ``out`` already holds different preprocessing files, or
            ``model_dir`` is not a complete run directory.
        ConfigError: ``out`` names the file of the other precision (see :func:`export_target`).
    """
    from amnl.rundir import load_run

    src, out = Path(model_dir), export_target(out, int8=int8)
    cfg, pre, model = load_run(src)
    dst = out.parent
    dst.mkdir(parents=True, exist_ok=True)
    for name in PREPROCESS_FILES:
        target = dst / name
        if target.exists() and not target.samefile(src / name) \
                and target.read_bytes() != (src / name).read_bytes():
            raise ModelError(f"{target} exists and belongs to another model; export into an "
                             f"empty folder or into the run directory {src}")
    export_onnx(model, out, cfg.data.window, int8=int8,
                metadata={"amnl.config": cfg.to_dict(), "amnl.features": pre.feature_names,
                          META_MODEL_ID: model_id(src)})
    for name in PREPROCESS_FILES:
        if not (dst / name).exists():
            shutil.copyfile(src / name, dst / name)
    copy_calibration(src, dst)
    return out


def copy_calibration(src: Path, dst: Path) -> None:
    """The source's RUL interval calibration and drift reference, where it has them, beside
    an export."""
    from amnl.rundir import CALIBRATION_FILE, DRIFT_FILE

    for name in (CALIBRATION_FILE, DRIFT_FILE):
        source, target = src / name, dst / name
        if source.is_file() and not (target.exists() and target.samefile(source)):
            shutil.copyfile(source, target)




def parity(reference: Any, candidate: Any, x: np.ndarray) -> dict[str, float]:
    """Absolute differences between two runtimes on windows ``x`` (N, W, F).

    Returns:
        ``{"rul": max cycles, "rul_p99": 99th percentile, "probabilities": max |dP|,
        "windows": N}``.
    """
    r0, p0 = reference(x)
    r1, p1 = candidate(x)
    d = np.abs(np.asarray(r0, np.float64) - r1)
    return {"rul": float(d.max()), "rul_p99": float(np.percentile(d, 99)),
            "probabilities": float(np.abs(p0 - p1).max()), "windows": int(len(x))}


def parity_failures(diff: dict[str, float], precision: str) -> list[str]:
    """What in a :func:`parity` result breaks :data:`PARITY_LIMITS` (empty when it is fine)."""
    got = {"rul_max": diff["rul"], "rul_p99": diff["rul_p99"]}
    return [f"{name.replace('rul_', '')} |dRUL| {got[name]:.3g} cycles > {limit:g}"
            for name, limit in PARITY_LIMITS[precision].items() if got[name] > limit]
