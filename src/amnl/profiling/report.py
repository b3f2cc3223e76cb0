"""``amnl profile``: every precision x window x batch size measured, the memory and latency
lines fitted, and a plot. The measurements themselves are :mod:`amnl.profiling.memory` and
:mod:`amnl.profiling.rss`."""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from amnl.config import INFERENCE_PRECISIONS, MB
from amnl.errors import ConfigError
from amnl.inference.planner import LatencyFit, MemoryFit, fit_latency, fit_memory
from amnl.model.precision import autocast as autocast_context
from amnl.machine import machine_info
from amnl.profiling.memory import (
    CPU_METHOD,
    CUDA_METHOD,
    TENSOR_METHOD,
    MemoryMeasurement,
    _is_cuda,
    _sync,
    make_input,
    measure_memory,
    prepare_model,
)
from amnl.profiling.rss import RSS_METHOD, measure_rss
from amnl.profiling.tracking import LayerMemory

logger = logging.getLogger(__name__)

DEFAULT_PRECISIONS = {"cpu": ("fp32", "bf16", "int8"), "cuda": ("fp32", "fp16", "bf16")}
DEFAULT_BATCH_SIZES = (1, 8, 32, 64, 128, 256, 512)
#: The training window and the longer window the memory study also quotes (spec section 1).
DEFAULT_WINDOWS = (30, 50)
DEFAULT_WARMUP = 2
DEFAULT_REPEATS = 5
#: The study's layer types (spec section 5) and the network components in each.
LAYER_TYPES: dict[str, tuple[str, ...]] = {
    "CNN": ("cnn",), "BiLSTM": ("lstm",), "attention": ("attention",),
    "FC and heads": ("funnel", "rul_head", "health_head"),
}


@dataclass
class Latency:
    """Forward-pass latency percentiles (ms) and throughput (windows/s, at the median)."""

    p50_ms: float
    p95_ms: float
    throughput: float


def measure_latency(model: nn.Module, x: torch.Tensor, *, device: str = "cpu",
                    autocast: str = "fp32", warmup: int = DEFAULT_WARMUP,
                    repeats: int = DEFAULT_REPEATS) -> Latency:
    """Latency of ``model(x)`` over ``repeats`` passes after ``warmup`` passes."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    with torch.inference_mode(), autocast_context(autocast, device):
        for _ in range(warmup):
            model(x)
        _sync(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1000.0)
    p50, p95 = np.percentile(times, [50, 95])
    return Latency(float(p50), float(p95), float(x.shape[0] / p50 * 1000.0))


@dataclass
class ProfileRow:
    """One precision x window x batch size: memory, speed and (optionally) RSS."""

    precision: str
    window: int
    batch: int
    device: str
    memory: MemoryMeasurement
    latency: Latency | None = None
    rss: int | None = None

    def to_dict(self) -> dict:
        m = self.memory
        d = {"precision": self.precision, "window": self.window, "batch": self.batch,
             "device": self.device, "peak": m.peak, "weights": m.weights, "inputs": m.inputs,
             "activations": m.activations, "workspace": m.workspace, "reserved": m.reserved,
             "cuda_context": m.cuda_context, "rss": self.rss,
             "layers": {k: asdict(v) for k, v in m.layers.items()},
             "layer_types": layer_type_totals(m.layers)}
        if self.latency is not None:
            d.update(latency_p50_ms=self.latency.p50_ms, latency_p95_ms=self.latency.p95_ms,
                     throughput=self.latency.throughput)
        return d


def layer_type_totals(layers: dict[str, LayerMemory]) -> dict[str, dict[str, int]]:
    """Sum components into the study's layer types (CNN, BiLSTM, attention, FC and heads)."""
    out = {}
    for kind, names in LAYER_TYPES.items():
        parts = [layers[n] for n in names if n in layers]
        out[kind] = {"weights": sum(p.weights for p in parts),
                     "activations": sum(p.activations for p in parts),
                     "output": sum(p.output for p in parts)}
    return out


@dataclass
class FitRow:
    """The memory and latency lines of one precision and window."""

    precision: str
    window: int
    device: str
    memory: MemoryFit
    latency: LatencyFit | None

    def to_dict(self) -> dict:
        d = {"precision": self.precision, "window": self.window, "device": self.device,
             "base": self.memory.base, "per_sample": self.memory.per_sample,
             "r2": self.memory.r2, "max_residual": self.memory.max_residual,
             "resident": self.memory.resident,
             "max_measured_batch": self.memory.max_measured_batch}
        if self.latency is not None:
            d.update(latency_base_ms=self.latency.base_ms,
                     latency_per_sample_ms=self.latency.per_sample_ms,
                     latency_r2=self.latency.r2)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FitRow:
        mem = MemoryFit(d["base"], d["per_sample"], d["r2"], d.get("max_residual", 0.0),
                        d.get("resident", 0.0), d.get("max_measured_batch", 0))
        lat = (LatencyFit(d["latency_base_ms"], d["latency_per_sample_ms"], d["latency_r2"])
               if "latency_base_ms" in d else None)
        return cls(d["precision"], int(d["window"]), d.get("device", "cpu"), mem, lat)


@dataclass
class ProfileReport:
    """Everything ``amnl profile`` measured, with how and where."""

    machine: dict
    model: dict
    rows: list[ProfileRow]
    fits: list[FitRow]
    method: dict = field(default_factory=lambda: {
        "cpu_peak": CPU_METHOD, "cuda_peak": CUDA_METHOD, "activations": TENSOR_METHOD,
        "rss": RSS_METHOD})
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"machine": self.machine, "model": self.model, "method": self.method,
                "notes": self.notes, "rows": [r.to_dict() for r in self.rows],
                "fits": [f.to_dict() for f in self.fits]}

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def fit_for(self, precision: str, window: int) -> FitRow:
        """The fit of one precision and window; ValueError naming what exists otherwise."""
        for f in self.fits:
            if f.precision == precision and f.window == window:
                return f
        have = sorted({(f.precision, f.window) for f in self.fits})
        raise ConfigError(f"no fit for precision {precision} window {window}; have {have}")


def load_fits(path: str | Path) -> list[FitRow]:
    """The fits of a JSON file written by ``amnl profile --json``."""
    try:
        data = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: not an `amnl profile --json` file ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}:col {exc.colno}: not valid JSON ({exc.msg})") from None
    if "fits" not in data:
        raise ConfigError(f"{path}: not an `amnl profile --json` file (no 'fits')")
    return [FitRow.from_dict(d) for d in data["fits"]]


def profile_inference(model: nn.Module, *, precisions: Sequence[str] = ("fp32",),
                      windows: Sequence[int] = (30,),
                      batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, device: str = "cpu",
                      warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                      rss_source: dict | None = None, model_info: dict | None = None,
                      progress: Callable[[str], None] | None = None) -> ProfileReport:
    """Measure every precision x window x batch size and fit the memory line per pair.

    Args:
        model: the FP32 network (copied per precision, left untouched).
        precisions: from :data:`PRECISIONS`.
        windows: window lengths.
        batch_sizes: batch sizes (at least two distinct for a fit).
        device: ``cpu`` or ``cuda[:i]``.
        warmup: untimed passes before timing; 0 with ``repeats=0`` skips timing.
        repeats: timed passes per row (0 = memory only).
        rss_source: model source for fresh-process RSS (see :func:`measure_rss`; the child uses
            this process's torch thread count); None skips.
        model_info: what to record about the model in the report.
        progress: called with a short line before each row.

    Returns:
        A :class:`ProfileReport`.
    """
    for p in precisions:
        if p not in INFERENCE_PRECISIONS:
            raise ConfigError(f"precision must be among {', '.join(INFERENCE_PRECISIONS)}, got {p!r}")
    if any(b < 1 for b in batch_sizes):
        raise ConfigError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    features = model.config.in_features
    rows: list[ProfileRow] = []
    fits: list[FitRow] = []
    for precision in precisions:
        prepared = prepare_model(model, precision, device)
        for window in windows:
            block = []
            for batch in batch_sizes:
                if progress:
                    progress(f"{precision} window {window} batch {batch}")
                x = make_input(batch, window, features, precision, device)
                mem = measure_memory(prepared, x, device=device)
                lat = (measure_latency(prepared, x, device=device, warmup=warmup,
                                       repeats=repeats) if repeats > 0 else None)
                rss = (measure_rss(rss_source, precision=precision, window=window, batches=(batch,),
                                   device=device, threads=torch.get_num_threads()).peak
                       if rss_source is not None else None)
                block.append(ProfileRow(precision, window, batch, device, mem, lat, rss))
                del x
            rows.extend(block)
            if len({r.batch for r in block}) >= 2:
                mfit = fit_memory([r.batch for r in block], [r.memory.peak for r in block],
                                  resident=block[0].memory.weights)
                lfit = (fit_latency([r.batch for r in block], [r.latency.p50_ms for r in block])
                        if all(r.latency for r in block) else None)
                fits.append(FitRow(precision, window, device, mfit, lfit))
        del prepared
        gc.collect()
        if _is_cuda(device):
            torch.cuda.empty_cache()
    return ProfileReport(machine_info(device), model_info or {}, rows, fits)

# --------------------------------------------------------------------------- plot

def plot_profile(report: ProfileReport, path: str | Path) -> Path:
    """PNG: peak memory vs batch per precision and window (with the fits), throughput vs batch.

    Raises:
        MissingExtraError: matplotlib is missing (``pip install 'amnl[plot]'``).
    """
    from amnl.extras import require

    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_mem, ax_thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups: dict[tuple[str, int], list[ProfileRow]] = {}
    for r in report.rows:
        groups.setdefault((r.precision, r.window), []).append(r)
    for (precision, window), rows in groups.items():
        b = np.array([r.batch for r in rows])
        label = f"{precision} w{window}"
        line = ax_mem.plot(b, [r.memory.peak / MB for r in rows], "o", label=label)[0]
        try:
            f = report.fit_for(precision, window).memory
            grid = np.linspace(b.min(), b.max(), 50)
            ax_mem.plot(grid, f.predict(grid) / MB, "-", color=line.get_color(), alpha=0.6)
        except ValueError:
            pass
        if all(r.latency for r in rows):
            ax_thr.plot(b, [r.latency.throughput for r in rows], "o-", label=label)
    ax_mem.set(xlabel="batch size", ylabel="peak tensor memory (MB)",
               title=f"memory vs batch ({report.machine.get('device', '')})")
    ax_thr.set(xlabel="batch size", ylabel="windows / s", title="throughput vs batch",
               xscale="log")
    for ax in (ax_mem, ax_thr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
