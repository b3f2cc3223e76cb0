"""Side-by-side CPU inference benchmark of every runtime and precision (``amnl bench``).

For each window length and each runtime of :data:`RUNTIME_SPECS` (torch fp32 / bf16 / int8,
ONNX Runtime fp32 / int8), called the way :class:`amnl.inference.predictor.Predictor` calls it
(numpy windows in, numpy out):

* batch-1 latency, p50 and p95 over :data:`LATENCY_SECONDS` of calls;
* batch-256 throughput, windows per second at the median batch time;
* the largest RUL difference to torch FP32 on the same batch;
* FLOPs per window of the graph the runtime runs (analytic, :mod:`amnl.profiling.flops`) and
  the fraction of this machine's measured matrix-multiply peak at that precision it reaches
  (:mod:`amnl.profiling.peaks`);
* peak RSS (MB = 10^6 bytes) of a fresh process that loads the runtime and runs both batch
  sizes (:mod:`amnl.profiling.rss`); ONNX Runtime processes never import torch.

The share of CPU time other processes took during each measurement is recorded (``foreign``),
since a shared 2-core machine is easily disturbed: run it through ``benchmarks/quiet.sh``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amnl.config import MB
from amnl.profiling.flops import GRAPH_OF_RUNTIME, GRAPHS, flops_per_window
from amnl.machine import machine_info
from amnl.profiling.peaks import PEAK_FOR_PRECISION, matmul_peaks
from amnl.profiling.text import align_columns
from amnl.profiling.threads import resolve_threads, torch_threads

logger = logging.getLogger(__name__)

#: (runtime, precision) pairs benchmarked on a CPU, in table order. ``torch-full`` is the
#: torch runtime on the network's layers as training runs them (self-attention over every step:
#: the torch model before issue #21), side by side with its inference form.
RUNTIME_SPECS = (("torch-full", "fp32"), ("torch", "fp32"), ("torch", "bf16"), ("torch", "int8"),
                 ("onnx", "fp32"), ("onnx", "int8"))
#: Runtimes whose peak RSS is measured (``torch-full`` has the torch row's process).
RSS_RUNTIMES = ("torch", "onnx")
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
#: Batches the RSS child process runs (after loading the runtime).
RSS_BATCHES = (1, THROUGHPUT_BATCH)
INPUT_SEED = 0
#: Windows per ``session.run`` compared by :func:`chunk_sweep`.
CHUNK_SWEEP = (8, 16, 32, 64, 96, 128, 256, 512)


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
    """One runtime at one window length."""

    runtime: str
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
    """Peak RSS of a fresh process running this runtime, MB (window 30 only)."""


def _make_runtime(runtime: str, precision: str, model: Any, window: int, threads: int,
                  onnx_dir: Path) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if runtime in ("torch", "torch-full"):
        import copy

        from amnl.inference.runtime import TorchRuntime

        if runtime == "torch-full":
            model = copy.deepcopy(model)
            model.inference_form = False
        return TorchRuntime(model, device="cpu", precision=precision, batch_size=THROUGHPUT_BATCH)
    from amnl.inference.onnx_runtime import OnnxRuntime

    return OnnxRuntime.from_model(model, None, window, precision=precision, threads=threads,
                                  cache_dir=onnx_dir)


def bench_runtimes(model: Any, *, windows: tuple[int, ...] = DEFAULT_WINDOWS,
                   specs: tuple[tuple[str, str], ...] = RUNTIME_SPECS, threads: int = 0,
                   peaks: dict[str, float] | None = None, rss_source: dict | None = None,
                   latency_seconds: float = LATENCY_SECONDS,
                   throughput_seconds: float = THROUGHPUT_SECONDS,
                   onnx_dir: str | os.PathLike | None = None) -> list[BenchRow]:
    """Latency, throughput, FLOP rate and RSS of every runtime in ``specs``.

    Args:
        model: the FP32 :class:`amnl.model.network.AMNL` (speed does not depend on its values).
        windows: window lengths to measure.
        specs: (runtime, precision) pairs; RUL differences are taken against torch fp32.
        threads: CPU threads for torch and ONNX Runtime (0 = all cores); torch's count is put
            back afterwards.
        peaks: :func:`amnl.profiling.peaks.matmul_peaks` output, for the fraction-of-peak column.
        rss_source: where a fresh process gets the same model (``{"run": DIR}`` or ``{"size":
            "base"}``, see :func:`amnl.profiling.rss.measure_rss`); None skips RSS. Measured at
            window 30 (or the first window).
        onnx_dir: where ONNX files are exported (default: a temporary folder).
    """
    threads = resolve_threads(threads)
    model = model.cpu().eval()
    rows: list[BenchRow] = []
    rng = np.random.default_rng(INPUT_SEED)
    with tempfile.TemporaryDirectory(prefix="amnl-bench-") as tmp, torch_threads(threads):
        onnx_dir = Path(onnx_dir or tmp)
        for window in windows:
            shape = (model.config.in_features,)
            x1 = rng.standard_normal((LATENCY_BATCH, window, *shape), dtype=np.float32)
            xb = rng.standard_normal((THROUGHPUT_BATCH, window, *shape), dtype=np.float32)
            reference = _make_runtime("torch", "fp32", model, window, threads, onnx_dir)(xb)[0]
            for runtime, precision in specs:
                fn = _make_runtime(runtime, precision, model, window, threads, onnx_dir)
                with _CpuShare() as share:
                    lat = time_calls(lambda fn=fn, x=x1: fn(x), seconds=latency_seconds,
                                     min_reps=LATENCY_MIN_REPS)
                    thr = time_calls(lambda fn=fn, x=xb: fn(x), seconds=throughput_seconds,
                                     min_reps=THROUGHPUT_MIN_REPS)
                rul = fn(xb)[0]
                fn = None  # free the runtime (and its thread pool) before the next one
                flops = flops_per_window(model.config, window, graph=GRAPH_OF_RUNTIME[runtime])["total"]
                throughput = THROUGHPUT_BATCH / float(np.median(thr))
                peak_key = PEAK_FOR_PRECISION[precision]
                peak = (peaks or {}).get(peak_key)
                row = BenchRow(runtime, precision, window, float(np.median(lat) * 1e3),
                               float(np.percentile(lat, 95) * 1e3), throughput, flops,
                               throughput * flops / 1e9, peak_key,
                               throughput * flops / peak if peak else None,
                               float(np.abs(rul - reference).max()), share.value)
                logger.info("%s %s w%d: p50 %.3f ms, %.0f windows/s", runtime, precision, window,
                            row.p50_ms, row.throughput)
                rows.append(row)
        if rss_source is not None:
            rss_window = 30 if 30 in windows else windows[0]
            for row in rows:
                if row.window == rss_window and row.runtime in RSS_RUNTIMES:
                    row.rss_mb = peak_rss_mb(row.runtime, row.precision, model, rss_source,
                                             rss_window, threads, onnx_dir)
    return rows


def peak_rss_mb(runtime: str, precision: str, model: Any, source: dict, window: int,
                threads: int, onnx_dir: str | os.PathLike) -> float:
    """Peak RSS (MB) of a fresh process that loads the runtime and runs batch 1 and 256.

    The torch child loads ``source`` (the same model); the ONNX Runtime child loads the
    exported file with :class:`amnl.inference.onnx_runtime.OnnxRuntime` and never imports torch.
    """
    from amnl.profiling.rss import measure_rss

    if runtime == "onnx":
        from amnl.inference.onnx_runtime import OnnxRuntime

        path = OnnxRuntime.from_model(model, None, window, precision=precision, threads=threads,
                                      cache_dir=onnx_dir).path
        source = {"onnx": str(path)}
    m = measure_rss(source, precision=precision, window=window, batches=RSS_BATCHES,
                    mode="runtime", chunk=THROUGHPUT_BATCH, threads=threads)
    return m.peak / MB


def chunk_sweep(model: Any, *, window: int = 30, precision: str = "int8",
                chunks: tuple[int, ...] = CHUNK_SWEEP, threads: int = 0, total: int = 1024,
                calls: int = 4) -> list[dict[str, float]]:
    """ONNX Runtime throughput against windows per ``session.run`` (the runtime's ``chunk``).

    Args:
        model: the FP32 network (exported to a temporary folder).
        total: windows per runtime call, split into runs of each chunk size.
        calls: timed calls per chunk size (after one warm-up call).

    Returns:
        One dict per chunk: ``chunk``, ``best`` and ``median`` windows/s, ``foreign_cpu``.
    """
    from amnl.inference.onnx_runtime import OnnxRuntime

    threads = resolve_threads(threads)
    x = np.random.default_rng(INPUT_SEED).standard_normal(
        (total, window, model.config.in_features), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="amnl-chunks-") as tmp:
        path = OnnxRuntime.from_model(model, None, window, precision=precision, threads=threads,
                                     cache_dir=tmp).path
        for chunk in chunks:
            runtime = OnnxRuntime(path, threads=threads, chunk=chunk)
            runtime(x[: min(total, 4 * chunk)])
            with _CpuShare() as share:
                t = time_calls(lambda r=runtime: r(x), seconds=0.0, min_reps=calls, warmup=0)
            rows.append({"chunk": chunk, "best": total / float(t.min()),
                         "median": total / float(np.median(t)), "foreign_cpu": share.value})
            logger.info("chunk %d: %.0f windows/s", chunk, rows[-1]["best"])
    return rows


def format_table(rows: list[BenchRow]) -> str:
    """A plain-text table of :func:`bench_runtimes` rows."""
    head = ("runtime", "prec", "win", "b1 p50 ms", "b1 p95 ms", "b256 win/s", "MFLOP/win",
            "GFLOP/s", "% peak", "RSS MB", "|dRUL|", "foreign")
    lines = [head]
    for r in rows:
        lines.append((r.runtime, r.precision, str(r.window), f"{r.p50_ms:.3f}", f"{r.p95_ms:.3f}",
                      f"{r.throughput:,.0f}", f"{r.flops_per_window / 1e6:.1f}", f"{r.gflops:.1f}",
                      "-" if r.fraction_of_peak is None else f"{100 * r.fraction_of_peak:.0f}% {r.peak}",
                      "-" if r.rss_mb is None else f"{r.rss_mb:.0f}", f"{r.rul_max_abs_diff:.3f}",
                      "-" if r.foreign_cpu is None else f"{100 * r.foreign_cpu:.0f}%"))
    return align_columns(lines, left=2)


def run_bench(model: Any, *, source: str, windows: tuple[int, ...] = DEFAULT_WINDOWS,
              specs: tuple[tuple[str, str], ...] = RUNTIME_SPECS, threads: int = 0,
              rss_source: dict | None = None, out: str | os.PathLike | None = None,
              latency_seconds: float = LATENCY_SECONDS,
              throughput_seconds: float = THROUGHPUT_SECONDS) -> dict[str, Any]:
    """Peaks, FLOPs and :func:`bench_runtimes` in one run; written as JSON to ``out``.

    Returns:
        ``{"machine", "model", "peaks", "flops", "rows", "seconds"}`` (rows as dicts).
    """
    threads = resolve_threads(threads)
    t0 = time.perf_counter()
    with _CpuShare() as share:  # only the precisions asked for, each within the latency seconds
        peaks = matmul_peaks(threads, tuple(dict.fromkeys(p for _, p in specs)),
                             seconds=max(latency_seconds, 0.2))
    rows = bench_runtimes(model, windows=windows, specs=specs, threads=threads, peaks=peaks,
                          rss_source=rss_source, latency_seconds=latency_seconds,
                          throughput_seconds=throughput_seconds)
    result = {
        "machine": machine_info("cpu", threads), "model": source, "units": {"rss_mb": "MB = 10^6 bytes"},
        "peaks": {k: v / 1e9 for k, v in peaks.items()}, "peaks_foreign_cpu": share.value,
        "flops": {f"{g}_w{w}": flops_per_window(model.config, w, graph=g)
                  for w in windows for g in GRAPHS},
        "rows": [asdict(r) for r in rows], "seconds": time.perf_counter() - t0,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    result["table"] = format_table(rows)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result
