"""The ONNX Runtime runtime: scaled windows (N, W, F) -> (RUL (N,), probabilities (N, 3)).

Runs a file written by :mod:`amnl.export.onnx` on the CPU. Loading an exported folder
(:func:`load_exported`) imports numpy, onnxruntime and amnl's preprocessing only, never torch,
so it fits an edge box; only :meth:`OnnxRuntime.from_model`, which exports a run directory's
model on first use, needs torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from amnl.cache import cache_dir as user_cache_dir
from amnl.config import RUNTIME_PRECISIONS
from amnl.errors import ConfigError, ModelError
from amnl.extras import require
from amnl.rundir import ONNX_FILES, PREPROCESS_FILES, load_config, load_preprocessor

if TYPE_CHECKING:  # pragma: no cover
    from amnl.config import RunConfig
    from amnl.features.pipeline import Preprocessor
    from amnl.model.network import AMNL

logger = logging.getLogger(__name__)

ONNX_PRECISIONS = RUNTIME_PRECISIONS["onnx"]
#: Windows per ``session.run``; larger inputs are split. Measured on 2 cores (window 30):
#: throughput is flat from 8 to 96 windows a run and about 15 % lower at 256-512, because
#: ONNX Runtime's LSTM keeps the input projection of every time step (T x B x 4H floats per
#: direction) and large batches spill out of the caches; peak RSS of an INT8 process is about
#: 100 MB with runs of 64 against 230 MB with runs of 256. (On a Zen 5 host the sweep put 16-32
#: at most 10 % ahead of 64, within that machine's run-to-run noise.)
DEFAULT_CHUNK = 64
#: Activation memory one window needs in a ``session.run``, per time step of the window:
#: 0.65 MB a window at window 30 (INT8, one core: 84 MB of anonymous memory with runs of 64
#: against 53 MB with runs of 16, ``benchmarks/edge_box.py``'s runtime rows, Intel Xeon family 6
#: model 207), almost all of it the LSTM's input projections and outputs. The arena keeps its
#: peak for the session's life.
ACTIVATION_BYTES_PER_STEP = 22_000
#: The share of the memory limit (:func:`amnl.inference.planner.memory_limit_bytes`) the
#: activations of one run may take when the chunk is chosen automatically.
CHUNK_MEMORY_SHARE = 1 / 8
#: The chunks :func:`auto_chunk` chooses from, largest first.
CHUNK_CHOICES = (DEFAULT_CHUNK, 32, 16, 8)
#: Sub-folder of the user cache (:func:`amnl.cache.cache_dir`) for on-the-fly exports.
CACHE_SUBDIR = "onnx"
#: Names of the graph's input and outputs (the export's contract).
INPUT_NAME = "x"


def _ort():
    return require("onnxruntime", "ONNX Runtime inference")


def session_options(threads: int = 0):
    """ONNX Runtime session options for CPU inference.

    Args:
        threads: intra-op threads (0 = ONNX Runtime's default, one per physical core).
    """
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one chain of ops: no inter-op pool
    so.inter_op_num_threads = 1
    if threads > 0:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3  # errors only
    return so


def auto_chunk(window: int, limit_bytes: int | None = None) -> int:
    """Windows per ``session.run`` for a machine with ``limit_bytes`` of memory (default: this
    process's limit, a cgroup's included): the largest of :data:`CHUNK_CHOICES` whose
    activations take at most :data:`CHUNK_MEMORY_SHARE` of it. At window 30: 64 from 340 MB
    up, 32 from 170 MB, 16 on a 128 MB box (docs/deployment.md, "Edge box")."""
    from amnl.inference.planner import memory_limit_bytes

    limit = memory_limit_bytes() if limit_bytes is None else limit_bytes
    if limit is None:
        return DEFAULT_CHUNK
    for chunk in CHUNK_CHOICES:
        if chunk * window * ACTIVATION_BYTES_PER_STEP <= limit * CHUNK_MEMORY_SHARE:
            return chunk
    return CHUNK_CHOICES[-1]


class OnnxRuntime:
    """ONNX Runtime inference on CPU: scaled windows (N, W, F) -> (RUL (N,), probs (N, 3)).

    One session; ``session.run`` may be called from many threads at once.

    Args:
        path: an ``.onnx`` file written by :func:`amnl.export.onnx.export_onnx`.
        threads: intra-op threads (0 = ONNX Runtime's default).
        chunk: windows per ``session.run``; larger inputs are split. None: :func:`auto_chunk`
            for the file's window and this machine's (or cgroup's) memory.

    Example:
        >>> runtime = OnnxRuntime("export/model_int8.onnx", threads=2)  # doctest: +SKIP
        >>> rul, probs = runtime(np.zeros((256, 30, 14), np.float32))
        >>> rul.shape, probs.shape
        ((256,), (256, 3))
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 0, chunk: int | None = None) -> None:
        ort = _ort()
        if chunk is not None and chunk < 1:
            raise ConfigError(f"chunk must be >= 1, got {chunk}")
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such ONNX file")
        self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        if chunk is None:
            window = self.session.get_inputs()[0].shape[1]
            chunk = auto_chunk(window if isinstance(window, int) else 30)
        self.chunk = chunk
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        from amnl.export.onnx import META_PRECISION  # a constant: no torch behind it

        self.precision = self.metadata.get(META_PRECISION, "fp32")

    @classmethod
    def from_model(cls, model: AMNL, directory: str | os.PathLike | None, window: int, *,
                   precision: str = "fp32", threads: int = 0,
                   cache_dir: str | os.PathLike | None = None) -> OnnxRuntime:
        """The runtime for ``model``: reuse its exported file, else export it into a cache.

        ``directory/model.onnx`` (``model_int8.onnx`` for INT8) is used when its fingerprint
        matches ``model`` and ``window``; otherwise the model is exported into ``cache_dir``
        (default ``$XDG_CACHE_HOME/amnl/onnx``), named by the fingerprint, reused from there
        next time, and the path is logged (warning level: a file written outside the project).
        Nothing is written into ``directory``.

        Args:
            model: the FP32 network.
            directory: the model's run directory or bundled folder (or None).
            window: window length.
            precision: ``fp32`` or ``int8``.
            threads: intra-op threads (0 = ONNX Runtime's default).
            cache_dir: where on-the-fly exports go.
        """
        from amnl.export.onnx import export_onnx, model_fingerprint

        if precision not in ONNX_PRECISIONS:
            raise ConfigError(f"the onnx runtime runs {' or '.join(ONNX_PRECISIONS)}, got "
                              f"{precision!r} (bf16/fp16 are torch-runtime precisions)")
        fingerprint = model_fingerprint(model, window)
        name = ONNX_FILES[precision]
        if directory is not None and _matches(Path(directory) / name, fingerprint):
            return cls(Path(directory) / name, threads=threads)
        folder = Path(cache_dir) if cache_dir else user_cache_dir(CACHE_SUBDIR)
        cached = folder / f"{fingerprint[:16]}-w{window}-{name}"
        if not _matches(cached, fingerprint):
            folder.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
            export_onnx(model, tmp, window, int8=precision == "int8")
            os.replace(tmp, cached)  # atomic: a concurrent reader never sees half a file
            logger.warning("exported the %s ONNX model to %s (reused from there next time; "
                           "`amnl export` writes one where you choose)", precision, cached)
        return cls(cached, threads=threads)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RUL (N,) and health probabilities (N, 3), float32, for windows ``x`` (N, W, F)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3:
            raise ValueError(f"expected windows of shape (N, window, features), got {x.shape}")
        if len(x) == 0:
            return np.zeros(0, np.float32), np.zeros((0, 3), np.float32)
        ruls, probs = [], []
        for b in range(0, len(x), self.chunk):
            rul, prob = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(x[b: b + self.chunk])})
            ruls.append(rul)
            probs.append(prob)
        return np.concatenate(ruls), np.concatenate(probs)


def _matches(path: Path, fingerprint: str) -> bool:
    """True when ``path`` is an ONNX file exported from the weights named by ``fingerprint``."""
    if not path.is_file():
        return False
    from google.protobuf.message import DecodeError  # onnx's file format

    from amnl.export.onnx import META_FINGERPRINT, read_metadata

    try:
        return read_metadata(path).get(META_FINGERPRINT) == fingerprint
    except (OSError, DecodeError) as exc:  # a truncated or foreign file: export again
        logger.warning("ignoring %s: %s", path, exc)
        return False


def export_file(path: str | os.PathLike, precision: str = "fp32") -> Path:
    """The ONNX file of an export: ``path`` itself, or the precision's file in a folder."""
    path = Path(path)
    if path.is_dir():
        if precision not in ONNX_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(ONNX_PRECISIONS)} for an "
                              f"ONNX export, got {precision!r}")
        path = path / ONNX_FILES[precision]
    return path


def load_exported(path: str | os.PathLike, *, precision: str = "fp32", threads: int = 0,
                  chunk: int | None = None) -> tuple[RunConfig, Preprocessor, OnnxRuntime]:
    """Config, preprocessing and ONNX runtime of an export, without importing torch.

    Args:
        path: an ``.onnx`` file written by ``amnl export`` (``config.json`` and
            ``preprocess.*`` beside it), or its folder, where ``model.onnx`` (``precision``
            fp32) or ``model_int8.onnx`` (int8) is used.
        precision: which file of a folder to use.
        threads: intra-op threads (0 = ONNX Runtime's default).
        chunk: windows per ``session.run`` (None: :func:`auto_chunk`).

    Returns:
        ``(RunConfig, Preprocessor, OnnxRuntime)``: ``pre.windows(table, last_only=True)``
        feeds the runtime.

    Example:
        >>> cfg, pre, rt = load_exported("export/model_int8.onnx")  # doctest: +SKIP
        >>> rul, probs = rt(pre.windows(read_histories("engines.csv"), last_only=True).arrays())
    """
    path = export_file(path, precision)
    have = [p for p, name in ONNX_FILES.items() if (path.parent / name).is_file()]
    if not path.is_file() and path.name in ONNX_FILES.values() and have:  # the other only
        flag = " --int8" if precision == "int8" else ""
        raise ModelError(f"{path.parent} holds the {' and '.join(have)} export "
                         f"({', '.join(ONNX_FILES[p] for p in have)}) but no {path.name}: pass "
                         f"--precision {have[0]}, or export the {precision} model into it "
                         f"(amnl export{flag} --out {path.parent})")
    missing = [p.name for p in (path, *(path.parent / f for f in PREPROCESS_FILES)) if not p.is_file()]
    if missing:
        raise ModelError(f"{path.parent}: not an ONNX export, missing {', '.join(missing)}")
    cfg = load_config(path.parent)
    runtime = OnnxRuntime(path, threads=threads, chunk=chunk)
    return cfg, load_preprocessor(path.parent, cfg), runtime
