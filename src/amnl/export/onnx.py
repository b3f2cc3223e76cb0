"""ONNX export and the ONNX Runtime engine (needs ``pip install 'amnl[export]'``).

The exported graph is not a trace of :class:`amnl.model.network.AMNL` as written for training
but the same function in eval mode, re-expressed so that ONNX Runtime runs it fast on a CPU and
so that dynamic INT8 quantisation reaches every weight matrix (:class:`_ExportNet`):

* each Conv1d(kernel 3) + BatchNorm block is one MatMul over the three stacked time taps, with
  the BatchNorm folded into the weights;
* the network runs time-first, the only layout ONNX Runtime's ``LSTM`` kernel accepts, so
  the batch-first transposes around the convolutions and the LSTM disappear;
* only the last time step's query is attended (the pooling keeps nothing else), and the
  key/value projections are moved to the query side by associativity: per head,
  ``q . (Wk y_t + bk) = (Wk^T q) . y_t + const`` and ``sum_t a_t (Wv y_t + bv) =
  Wv (sum_t a_t y_t) + bv``. Attention drops from 65 M to 2.6 M FLOPs per window
  (window 30), and the whole graph from 202 M to 140 M, 96 % of it the BiLSTM;
* every Linear is a plain MatMul (+ Add), not a ``Gemm``: ONNX Runtime's dynamic quantiser
  only rewrites ``MatMul``, ``Conv``, ``LSTM`` and ``Attention``, so this is what makes the
  funnel and both heads INT8 too.

Outputs: ``rul`` (N,) in cycles, clamped to [0, RUL cap] as in eval mode, and ``health`` (N, 3) softmax
probabilities, the same contract as :class:`amnl.inference.runtime.TorchRuntime`.

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

from amnl.errors import ModelError
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
#: clamped to [0, cap]).
FORMAT_VERSION = "2"
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
    """Build :class:`_ExportNet` (defined lazily so that this module imports without torch)."""
    import math

    import torch
    from torch import nn

    def dense_params(seq: nn.Sequential, scale: float = 1.0) -> list:
        """``(W^T, b)`` per Linear of a Linear/ReLU/Dropout stack, ``None`` per ReLU; the last
        Linear is multiplied by ``scale``."""
        out: list = []
        linears = [m for m in seq if isinstance(m, nn.Linear)]
        for m in seq:
            if isinstance(m, nn.Linear):
                s = scale if m is linears[-1] else 1.0
                out.append(((m.weight.detach() * s).T.contiguous(), m.bias.detach() * s))
            elif isinstance(m, nn.ReLU):
                out.append(None)
            elif not isinstance(m, nn.Dropout):
                raise TypeError(f"cannot export {type(m).__name__} in an MLP stack")
        return out

    class _ExportNet(nn.Module):
        """AMNL in eval mode, time-first, for ONNX Runtime. Shapes: T time, B batch, E = 2H.

        Built from copies of ``net``'s weights, on the CPU; ``net`` itself is not changed.
        BatchNorm running statistics are folded in and every dropout is dropped, so the
        result is the eval-mode function whatever mode ``net`` is in.
        """

        def __init__(self, net: AMNL) -> None:
            super().__init__()
            cfg = net.config
            mha = net.attention.mha
            if mha.in_proj_weight is None or mha.in_proj_bias is None:
                raise TypeError("export needs attention with one packed, biased in-projection")
            self.convs = []  # (W (3 C_in, C_out), b (C_out,)) per block, BatchNorm folded
            for i, block in enumerate(net.cnn):
                conv, bn = block[0], block[1]
                scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                w = conv.weight.detach() * scale[:, None, None]  # (C_out, C_in, 3)
                b = (conv.bias.detach() - bn.running_mean) * scale + bn.bias.detach()
                # row k * C_in + c multiplies input channel c at time t + k - 1 (padding 1)
                self.convs.append((self._buffer(f"conv{i}_w", w.permute(2, 1, 0).reshape(-1, w.shape[0])),
                                   self._buffer(f"conv{i}_b", b)))
            self.lstm = nn.LSTM(net.lstm.input_size, net.lstm.hidden_size, net.lstm.num_layers,
                                bidirectional=net.lstm.bidirectional, batch_first=False)
            self.lstm.load_state_dict({k: v.detach().float().cpu() for k, v in net.lstm.state_dict().items()})
            e, self.heads = mha.embed_dim, mha.num_heads
            d = e // self.heads
            w_in, b_in = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
            wq, wk, wv = w_in[:e], w_in[e:2 * e], w_in[2 * e:]
            self.wq = self._buffer("wq", wq.T / math.sqrt(d))  # softmax scale folded in
            self.bq = self._buffer("bq", b_in[:e] / math.sqrt(d))
            self.wk = self._buffer("wk", wk.reshape(self.heads, d, e))  # (h, d, E)
            self.wv = self._buffer("wv", wv.reshape(self.heads, d, e).transpose(1, 2))  # (h, E, d)
            self.bv = self._buffer("bv", b_in[2 * e:])
            self.wo = self._buffer("wo", mha.out_proj.weight.detach().T)
            self.bo = self._buffer("bo", mha.out_proj.bias.detach())
            norm = net.attention.norm
            self.norm_shape, self.norm_eps = norm.normalized_shape, norm.eps
            self.norm_w = self._buffer("norm_w", norm.weight.detach())
            self.norm_b = self._buffer("norm_b", norm.bias.detach())
            self.funnel = self._stack("funnel", dense_params(net.funnel))
            # the head predicts RUL / rul_scale: the scale is folded into its last layer
            self.rul_head = self._stack("rul", dense_params(net.rul_head, cfg.rul_scale))
            self.cap = float(cfg.rul_scale)  # the RUL cap: eval-mode outputs lie in [0, cap]
            self.health_head = self._stack("health", dense_params(net.health_head))

        def _buffer(self, name: str, value: torch.Tensor) -> torch.Tensor:
            self.register_buffer(name, value.detach().float().cpu().contiguous().clone())
            return getattr(self, name)

        def _stack(self, prefix: str, params: list) -> list:
            return [None if p is None else (self._buffer(f"{prefix}{i}_w", p[0]),
                                            self._buffer(f"{prefix}{i}_b", p[1]))
                    for i, p in enumerate(params)]

        @staticmethod
        def _mlp(x: torch.Tensor, layers: list) -> torch.Tensor:
            for p in layers:
                x = torch.relu(x) if p is None else x @ p[0] + p[1]
            return x

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = x.transpose(0, 1)  # (B, T, F) -> (T, B, F)
            for w, b in self.convs:
                p = nn.functional.pad(h, (0, 0, 0, 0, 1, 1))  # zero row before and after: (T+2, B, C)
                taps = torch.cat([p[:-2], p[1:-1], p[2:]], dim=-1)  # (T, B, 3C)
                h = torch.relu(taps @ w + b)  # (T, B, C_out)
            y = self.lstm(h)[0]  # (T, B, E)
            last = y[-1]  # (B, E)
            n, e = last.shape
            q = (last @ self.wq + self.bq).reshape(n, self.heads, -1).transpose(0, 1)  # (h, B, d)
            qk = (q @ self.wk).permute(1, 2, 0)  # (h, B, E) -> (B, E, h)
            yb = y.transpose(0, 1)  # (B, T, E)
            att = torch.softmax(yb @ qk, dim=1)  # (B, T, h); the q . bk term is constant in t
            pooled = att.transpose(1, 2) @ yb  # (B, h, E)
            a = (pooled.transpose(0, 1) @ self.wv).transpose(0, 1).reshape(n, e) + self.bv  # (B, E)
            z = nn.functional.layer_norm(last + a @ self.wo + self.bo, self.norm_shape,
                                         self.norm_w, self.norm_b, self.norm_eps)
            z = self._mlp(z, self.funnel)  # (B, 32)
            rul = self._mlp(z, self.rul_head).clamp(0.0, self.cap).squeeze(-1)  # (B,) in [0, cap]
            return rul, torch.softmax(self._mlp(z, self.health_head), dim=-1)  # (B,), (B, 3)

    return _ExportNet(model).eval()


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
                metadata: dict[str, Any] | None = None) -> Path:
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


def export_run(model_dir: str | os.PathLike, out: str | os.PathLike, *, int8: bool = False) -> Path:
    """Export a run directory or bundled model folder to ``out`` and copy its preprocessing.

    ``config.json``, ``preprocess.npz`` and ``preprocess.json`` are copied beside ``out``
    (and the config, the feature names and the source's :func:`amnl.rundir.model_id` are
    embedded in the file's metadata), so the folder of ``out`` is enough for
    :func:`amnl.inference.onnx_runtime.load_exported` and ``Predictor.load``.

    Raises:
        ModelError: the folder of ``out`` already holds different preprocessing files, or
            ``model_dir`` is not a complete run directory.
    """
    from amnl.rundir import load_run

    src, out = Path(model_dir), Path(out)
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
