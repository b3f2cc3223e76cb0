"""Side-by-side CPU inference benchmark of every engine and precision (``amnl bench``).

For each window length and each engine of :data:`ENGINE_SPECS` (torch fp32 / bf16 / int8,
ONNX Runtime fp32 / int8), called the way :class:`amnl.deploy.predictor.Predictor` calls it
(numpy windows in, numpy out):

* batch-1 latency, p50 and p95 over :data:`LATENCY_SECONDS` of calls;
* batch-256 throughput, windows per second at the median batch time;
* the largest RUL difference to torch FP32 on the same batch;
* FLOPs per window of the graph the engine runs (analytic, :func:`flops_per_window`) and the
  fraction of this machine's measured matrix-multiply peak at that precision it reaches
  (:func:`matmul_peaks`);
* peak RSS of a fresh process that loads the engine and runs both batch sizes
  (:func:`peak_rss`); ONNX Runtime processes never import torch.

The share of CPU time other processes took during each measurement is recorded (``foreign``),
since a shared 2-core machine is easily disturbed: run it through ``benchmarks/quiet.sh``.
:func:`accuracy_table` scores the same engines on the C-MAPSS test sets.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: (engine, precision) pairs benchmarked on a CPU, in table order.
ENGINE_SPECS = (("torch", "fp32"), ("torch", "bf16"), ("torch", "int8"),
                ("onnx", "fp32"), ("onnx", "int8"))
#: Window lengths of the spec (30) and of the memory study (50).
DEFAULT_WINDOWS = (30, 50)
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 256
#: Time spent per measurement (after warm-up); at least the MIN_REPS calls are made.
LATENCY_SECONDS = 2.0
LATENCY_MIN_REPS = 50
THROUGHPUT_SECONDS = 4.0
THROUGHPUT_MIN_REPS = 5
WARMUP_CALLS = 3
#: A measurement stops after this many times its planned seconds even short of MIN_REPS
#: (a disturbed machine can make single calls take seconds), keeping at least ABS_MIN_REPS.
MAX_TIME_FACTOR = 3.0
ABS_MIN_REPS = 3
#: Side of the square GEMMs that measure the machine's peak (large enough to be compute-bound).
PEAK_GEMM_SIZE = 2048
PEAK_GEMM_REPEATS = 10
#: Batches the RSS child process runs (after loading the engine).
RSS_BATCHES = (1, THROUGHPUT_BATCH)
INPUT_SEED = 0
#: Windows per ``session.run`` compared by :func:`chunk_sweep`.
CHUNK_SWEEP = (8, 16, 32, 64, 96, 128, 256, 512)
#: Which measured peak an engine's precision is compared with.
PEAK_FOR_PRECISION = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "int8": "int8"}
MB = 1 << 20


# -- FLOPs ------------------------------------------------------------------------------------

def flops_per_window(config: Any, window: int, *, graph: str = "torch") -> dict[str, int]:
    """Multiply-add FLOPs (2 per MAC) of one window, by component; element-wise ops excluded.

    Args:
        config: an :class:`amnl.config.ModelConfig`.
        window: window length T.
        graph: ``torch`` (the network as written: attention over all T queries) or ``onnx``
            (the exported graph: the last query only, with key/value projections moved to the
            query side; see :mod:`amnl.deploy.onnx`).

    Returns:
        FLOPs per component (``cnn``, ``lstm``, ``attention``, ``funnel``, ``heads``) and
        ``total``.

    Example:
        >>> flops_per_window(ModelConfig(), 30)["total"]  # doctest: +SKIP
        201849856
    """
    t, h = window, config.lstm_hidden
    chans = [config.in_features, *config.cnn_channels]
    cnn = sum(2 * t * 3 * a * b for a, b in itertools.pairwise(chans))
    lstm, inp = 0, chans[-1]
    for _ in range(config.lstm_layers):
        lstm += 2 * t * 2 * 4 * h * (inp + h)  # 2 directions, 4 gates, input + recurrent
        inp = 2 * h
    e, heads = 2 * h, config.attn_heads
    if graph == "torch":
        attention = 2 * t * e * 3 * e + 2 * 2 * t * t * e + 2 * t * e * e
    elif graph == "onnx":
        attention = 4 * (2 * e * e) + 2 * 2 * t * e * heads  # q, Wk^T q, Wv, out; scores, pool
    else:
        raise ValueError(f"graph must be torch or onnx, got {graph!r}")

    def mlp(widths: list[int]) -> int:
        return sum(2 * a * b for a, b in itertools.pairwise(widths))

    funnel = mlp([e, *config.funnel])
    heads_flops = (mlp([config.funnel[-1], *config.rul_head, 1])
                   + mlp([config.funnel[-1], *config.health_head, config.n_health]))
    out = {"cnn": cnn, "lstm": lstm, "attention": attention, "funnel": funnel, "heads": heads_flops}
    out["total"] = sum(out.values())
    return out


# -- machine peak -----------------------------------------------------------------------------

def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peaks(threads: int, n: int = PEAK_GEMM_SIZE, repeats: int = PEAK_GEMM_REPEATS
                 ) -> dict[str, float]:
    """Measured GEMM peak of this machine, FLOP/s (OP/s for int8), with ``threads`` threads.

    ``fp32``: the better of torch (MKL) and ONNX Runtime (MLAS) ``n x n`` matmul. ``bf16``:
    torch (oneDNN). ``int8``: ONNX Runtime ``MatMulInteger`` (uint8 x int8 -> int32, the
    kernel its dynamic quantisation uses). Best of ``repeats`` runs each; the ONNX Runtime
    entries are skipped when it is not installed.
    """
    import torch

    torch.set_num_threads(threads)
    flops = 2.0 * n ** 3
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        peaks[name] = flops / _best_seconds(lambda a=a, b=b: a @ b, repeats)
    try:
        peaks["fp32"] = max(peaks["fp32"], flops / _best_seconds(_ort_gemm(n, threads, False), repeats))
        peaks["int8"] = flops / _best_seconds(_ort_gemm(n, threads, True), repeats)
    except ImportError:
        logger.warning("onnxruntime not installed: no int8 peak")
    return peaks


def _ort_gemm(n: int, threads: int, int8: bool) -> Callable[[], Any]:
    """One ``n x n`` GEMM in ONNX Runtime: MatMulInteger (u8 x s8) or MatMul (fp32)."""
    from amnl.deploy.onnx import _require, session_options

    ort, onnx = _require("onnxruntime"), _require("onnx")
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


# -- timing -----------------------------------------------------------------------------------

class _CpuShare:
    """Share of the machine's CPU time other processes used while the block ran (Linux)."""

    def __enter__(self) -> _CpuShare:
        self.value = None
        self._start = self._read()
        return self

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields_ = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(map(int, fields_[:8])) - int(fields_[3]) - int(fields_[4])) / ticks
        own = sum(os.times()[:4])
        return busy, own, time.monotonic()

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        if self._start is None or end is None:
            return
        wall = end[2] - self._start[2]
        foreign = (end[0] - self._start[0]) - (end[1] - self._start[1])
        self.value = max(0.0, foreign / (wall * (os.cpu_count() or 1))) if wall > 0 else None


def time_calls(fn: Callable[[], Any], *, seconds: float, min_reps: int,
               warmup: int = WARMUP_CALLS) -> np.ndarray:
    """Seconds per call of ``fn``: ``seconds`` of calls and at least ``min_reps`` calls, but
    never more than ``MAX_TIME_FACTOR * seconds`` once ``ABS_MIN_REPS`` calls are done."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(times) >= min_reps and elapsed >= seconds:
            break
        if seconds > 0 and len(times) >= ABS_MIN_REPS and elapsed >= MAX_TIME_FACTOR * seconds:
            logger.warning("stopped after %d calls (%.1f s): the machine looks busy", len(times), elapsed)
            break
    return np.asarray(times)


@dataclass
class BenchRow:
    """One engine at one window length."""

    engine: str
    precision: str
    window: int
    p50_ms: float
    p95_ms: float
    throughput: float
    """Windows per second at batch 256 (median batch time)."""
    flops_per_window: int
    gflops: float
    """Achieved GFLOP/s (GOP/s for int8) at batch 256."""
    peak: str
    fraction_of_peak: float | None
    rul_max_abs_diff: float
    """Largest |RUL - torch FP32 RUL| on the batch-256 input, cycles."""
    foreign_cpu: float | None = None
    """Share of CPU time other processes used during the measurement (0-1)."""
    rss_mb: float | None = None
    """Peak RSS of a fresh process running this engine (window 30 only)."""


def _make_engine(engine: str, precision: str, model: Any, window: int, threads: int,
                 onnx_dir: Path) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if engine == "torch":
        from amnl.deploy.engines import TorchEngine

        return TorchEngine(model, device="cpu", precision=precision, batch_size=THROUGHPUT_BATCH)
    from amnl.deploy.onnx import OnnxEngine

    return OnnxEngine.from_model(model, None, window, precision=precision, threads=threads,
                                 cache_dir=onnx_dir)


def bench_engines(model: Any, *, windows: tuple[int, ...] = DEFAULT_WINDOWS,
                  specs: tuple[tuple[str, str], ...] = ENGINE_SPECS, threads: int = 0,
                  peaks: dict[str, float] | None = None, rss: bool = True,
                  latency_seconds: float = LATENCY_SECONDS,
                  throughput_seconds: float = THROUGHPUT_SECONDS,
                  onnx_dir: str | os.PathLike | None = None) -> list[BenchRow]:
    """Latency, throughput, FLOP rate and RSS of every engine in ``specs``.

    Args:
        model: the FP32 :class:`amnl.model.network.AMNL` (speed does not depend on its values).
        windows: window lengths to measure.
        specs: (engine, precision) pairs; RUL differences are taken against torch fp32.
        threads: CPU threads for torch and ONNX Runtime (0 = all cores).
        peaks: :func:`matmul_peaks` output, for the fraction-of-peak column.
        rss: also measure peak RSS in fresh processes (window 30, or the first window).
        onnx_dir: where ONNX files are exported (default: a temporary folder).
    """
    import torch

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = model.cpu().eval()
    rows: list[BenchRow] = []
    rng = np.random.default_rng(INPUT_SEED)
    with tempfile.TemporaryDirectory(prefix="amnl-bench-") as tmp:
        onnx_dir = Path(onnx_dir or tmp)
        for window in windows:
            shape = (model.config.in_features,)
            x1 = rng.standard_normal((LATENCY_BATCH, window, *shape), dtype=np.float32)
            xb = rng.standard_normal((THROUGHPUT_BATCH, window, *shape), dtype=np.float32)
            reference = _make_engine("torch", "fp32", model, window, threads, onnx_dir)(xb)[0]
            for engine, precision in specs:
                fn = _make_engine(engine, precision, model, window, threads, onnx_dir)
                with _CpuShare() as share:
                    lat = time_calls(lambda fn=fn, x=x1: fn(x), seconds=latency_seconds,
                                     min_reps=LATENCY_MIN_REPS)
                    thr = time_calls(lambda fn=fn, x=xb: fn(x), seconds=throughput_seconds,
                                     min_reps=THROUGHPUT_MIN_REPS)
                rul = fn(xb)[0]
                fn = None  # free the engine (and its thread pool) before the next one
                graph = "onnx" if engine == "onnx" else "torch"
                flops = flops_per_window(model.config, window, graph=graph)["total"]
                throughput = THROUGHPUT_BATCH / float(np.median(thr))
                peak_key = PEAK_FOR_PRECISION[precision]
                peak = (peaks or {}).get(peak_key)
                row = BenchRow(engine, precision, window, float(np.median(lat) * 1e3),
                               float(np.percentile(lat, 95) * 1e3), throughput, flops,
                               throughput * flops / 1e9, peak_key,
                               throughput * flops / peak if peak else None,
                               float(np.abs(rul - reference).max()), share.value)
                logger.info("%s %s w%d: p50 %.3f ms, %.0f windows/s", engine, precision, window,
                            row.p50_ms, row.throughput)
                rows.append(row)
        if rss:
            rss_window = 30 if 30 in windows else windows[0]
            for row in rows:
                if row.window == rss_window:
                    row.rss_mb = peak_rss(row.engine, row.precision, model, rss_window, threads,
                                          onnx_dir)
    return rows


def chunk_sweep(model: Any, *, window: int = 30, precision: str = "int8",
                chunks: tuple[int, ...] = CHUNK_SWEEP, threads: int = 0, total: int = 1024,
                calls: int = 4) -> list[dict[str, float]]:
    """ONNX Runtime throughput against windows per ``session.run`` (the engine's ``chunk``).

    Args:
        model: the FP32 network (exported to a temporary folder).
        total: windows per engine call, split into runs of each chunk size.
        calls: timed calls per chunk size (after one warm-up call).

    Returns:
        One dict per chunk: ``chunk``, ``best`` and ``median`` windows/s, ``foreign_cpu``.
    """
    from amnl.deploy.onnx import OnnxEngine

    threads = threads or os.cpu_count() or 1
    x = np.random.default_rng(INPUT_SEED).standard_normal(
        (total, window, model.config.in_features), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="amnl-chunks-") as tmp:
        path = OnnxEngine.from_model(model, None, window, precision=precision, threads=threads,
                                     cache_dir=tmp).path
        for chunk in chunks:
            engine = OnnxEngine(path, threads=threads, chunk=chunk)
            engine(x[: min(total, 4 * chunk)])
            with _CpuShare() as share:
                t = time_calls(lambda e=engine: e(x), seconds=0.0, min_reps=calls, warmup=0)
            rows.append({"chunk": chunk, "best": total / float(t.min()),
                         "median": total / float(np.median(t)), "foreign_cpu": share.value})
            logger.info("chunk %d: %.0f windows/s", chunk, rows[-1]["best"])
    return rows


# -- peak RSS in a fresh process --------------------------------------------------------------

def peak_rss(engine: str, precision: str, model: Any, window: int, threads: int,
             onnx_dir: str | os.PathLike) -> float:
    """Peak RSS (MB) of a fresh Python process that loads the engine and runs batch 1 and 256.

    The torch child rebuilds ``model`` from a saved state dict; the ONNX Runtime child loads
    the exported file with :class:`amnl.deploy.onnx.OnnxEngine` and never imports torch.
    """
    import torch

    with tempfile.TemporaryDirectory(prefix="amnl-rss-") as tmp:
        spec: dict[str, Any] = {"engine": engine, "precision": precision, "window": window,
                                "threads": threads, "features": model.config.in_features}
        if engine == "torch":
            weights = Path(tmp) / "model.pt"
            torch.save(model.state_dict(), weights)
            spec.update(weights=str(weights), config=asdict(model.config))
        else:
            from amnl.deploy.onnx import OnnxEngine

            spec["path"] = str(OnnxEngine.from_model(model, None, window, precision=precision,
                                                     threads=threads, cache_dir=onnx_dir).path)
        out = subprocess.run([sys.executable, "-m", "amnl.deploy.bench", "--rss-child", json.dumps(spec)],
                             capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"RSS child for {engine} {precision} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"]


def _rss_child(spec: dict[str, Any]) -> None:
    """Body of the RSS child process: load, run, print peak RSS as JSON."""
    x = np.random.default_rng(INPUT_SEED).standard_normal(
        (max(RSS_BATCHES), spec["window"], spec["features"]), dtype=np.float32)
    if spec["engine"] == "torch":
        import torch

        from amnl.config import ModelConfig
        from amnl.deploy.engines import TorchEngine
        from amnl.model.network import AMNL

        torch.set_num_threads(spec["threads"])
        model = AMNL(ModelConfig(**spec["config"]))
        model.load_state_dict(torch.load(spec["weights"]))
        fn = TorchEngine(model, precision=spec["precision"], batch_size=THROUGHPUT_BATCH)
    else:
        from amnl.deploy.onnx import OnnxEngine

        fn = OnnxEngine(spec["path"], threads=spec["threads"])
    for b in RSS_BATCHES:
        fn(x[:b])
    print(json.dumps({"rss_mb": peak_rss_bytes() / MB, "torch_imported": "torch" in sys.modules}))


def peak_rss_bytes() -> float:
    """This process's RSS high-water mark: ``VmHWM`` on Linux. ``ru_maxrss`` is only the
    fallback, because after fork + exec it still counts the parent's RSS."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


# -- accuracy ---------------------------------------------------------------------------------

def accuracy_table(models: dict[str, str | os.PathLike], data_dir: str | os.PathLike, *,
                   specs: tuple[tuple[str, str], ...] = ENGINE_SPECS, threads: int = 0
                   ) -> list[dict[str, Any]]:
    """Test-set metrics of every engine x precision, with the code ``amnl evaluate`` uses.

    Args:
        models: subset name (FD001..FD004) -> run directory or bundled folder.
        data_dir: folder of the C-MAPSS files.
        specs: (engine, precision) pairs.

    Returns:
        One dict per (subset, engine, precision): the :func:`amnl.evaluate.evaluate.evaluate_test`
        metrics of the last-window protocol, plus ``model`` and ``seconds``.
    """
    from amnl.data.cmapss import load_subset
    from amnl.deploy.predictor import Predictor
    from amnl.evaluate.evaluate import evaluate_test

    rows = []
    for name, directory in models.items():
        subset = load_subset(data_dir, name, train=False)
        for engine, precision in specs:
            t0 = time.perf_counter()
            predictor = Predictor.load(directory, engine=engine, precision=precision, threads=threads)
            report = evaluate_test(predictor, predictor.preprocessor, subset, all_windows=False)
            rows.append({"dataset": name, "engine": engine, "precision": precision,
                         "model": str(directory), "seconds": time.perf_counter() - t0,
                         **report.metrics})
            logger.info("%s %s %s: RMSE %.3f", name, engine, precision, report.metrics["rmse"])
    return rows


# -- report -----------------------------------------------------------------------------------

def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, core count, library versions."""
    from amnl.deploy.profiling import cpu_name

    info: dict[str, Any] = {"cpu": cpu_name(), "cpus": os.cpu_count(), "threads": threads,
                            "python": platform.python_version()}
    for mod in ("torch", "onnxruntime", "onnx", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def format_table(rows: list[BenchRow]) -> str:
    """A plain-text table of :func:`bench_engines` rows."""
    head = ("engine", "prec", "win", "b1 p50 ms", "b1 p95 ms", "b256 win/s", "MFLOP/win",
            "GFLOP/s", "% peak", "RSS MB", "|dRUL|", "foreign")
    lines = [head]
    for r in rows:
        lines.append((r.engine, r.precision, str(r.window), f"{r.p50_ms:.3f}", f"{r.p95_ms:.3f}",
                      f"{r.throughput:,.0f}", f"{r.flops_per_window / 1e6:.1f}", f"{r.gflops:.1f}",
                      "-" if r.fraction_of_peak is None else f"{100 * r.fraction_of_peak:.0f}% {r.peak}",
                      "-" if r.rss_mb is None else f"{r.rss_mb:.0f}", f"{r.rul_max_abs_diff:.3f}",
                      "-" if r.foreign_cpu is None else f"{100 * r.foreign_cpu:.0f}%"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in
                               enumerate(zip(line, widths))) for line in lines)


def run_bench(model: Any, *, source: str, windows: tuple[int, ...] = DEFAULT_WINDOWS,
              specs: tuple[tuple[str, str], ...] = ENGINE_SPECS, threads: int = 0,
              rss: bool = True, out: str | os.PathLike | None = None,
              latency_seconds: float = LATENCY_SECONDS,
              throughput_seconds: float = THROUGHPUT_SECONDS) -> dict[str, Any]:
    """Peaks, FLOPs and :func:`bench_engines` in one run; written as JSON to ``out``.

    Returns:
        ``{"machine", "model", "peaks", "flops", "rows", "seconds"}`` (rows as dicts).
    """
    threads = threads or os.cpu_count() or 1
    t0 = time.perf_counter()
    with _CpuShare() as share:
        peaks = matmul_peaks(threads)
    rows = bench_engines(model, windows=windows, specs=specs, threads=threads, peaks=peaks, rss=rss,
                         latency_seconds=latency_seconds, throughput_seconds=throughput_seconds)
    result = {
        "machine": machine_info(threads), "model": source,
        "peaks": {k: v / 1e9 for k, v in peaks.items()}, "peaks_foreign_cpu": share.value,
        "flops": {f"{g}_w{w}": flops_per_window(model.config, w, graph=g)
                  for w in windows for g in ("torch", "onnx")},
        "rows": [asdict(r) for r in rows], "seconds": time.perf_counter() - t0,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    result["table"] = format_table(rows)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":  # the RSS child: python -m amnl.deploy.bench --rss-child SPEC
    if len(sys.argv) == 3 and sys.argv[1] == "--rss-child":
        _rss_child(json.loads(sys.argv[2]))
    else:
        sys.exit("usage: python -m amnl.deploy.bench --rss-child SPEC (use `amnl bench`)")
