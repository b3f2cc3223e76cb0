"""``amnl export`` (ONNX, FP32 or INT8) and ``amnl bench`` (every engine side by side).

Registered on the main app by :func:`register`. The work is in :mod:`amnl.deploy.onnx` and
:mod:`amnl.deploy.bench`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from amnl._cli_common import RunDir
from amnl._cli_common import csv_list as _csv
from amnl._cli_common import fail as _fail
from amnl._cli_common import run as _run

EXPORT_FORMATS = ("onnx",)
#: Random windows the export's parity check runs (scaled inputs are z-scores, so N(0, 1)).
PARITY_WINDOWS = 256
PARITY_SEED = 0
DEFAULT_BENCH_OUT = Path("benchmarks/results")
DEFAULT_ENGINES = "torch:fp32,torch:bf16,torch:int8,onnx:fp32,onnx:int8"

Weights = Annotated[str | None, typer.Option("--weights", help="Bundled model name (FD001..FD004).")]


def export(
    out: Annotated[Path, typer.Option("--out", help="The .onnx file to write; config.json and "
                                      "preprocess.* are copied beside it.")],
    fmt: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Quantise every MatMul and LSTM weight to "
                                       "INT8 (ONNX Runtime dynamic quantisation).")] = False,
    run: RunDir = None,
    weights: Weights = None,
    check: Annotated[bool, typer.Option(help="Compare ONNX Runtime with PyTorch on random "
                                        "windows after exporting.")] = True,
) -> None:
    """Export a model to ONNX with a dynamic batch axis (default: the bundled FD001 model)."""
    from amnl.deploy.predictor import resolve_model_dir

    if fmt not in EXPORT_FORMATS:
        raise _fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if run is not None and weights is not None:
        raise _fail("give either --run or --weights, not both")
    if out.suffix != ".onnx":
        raise _fail(f"--out must name a .onnx file, got {out}")
    try:
        from amnl.deploy import onnx as ox

        ox.check_available()
    except ImportError as exc:
        raise _fail(str(exc)) from None
    directory = _run(resolve_model_dir, run, weights)
    _run(_export, ox, directory, out, int8)
    counts = ox.quantized_node_counts(out)
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, "
               f"{'int8' if int8 else 'fp32'}) and its preprocessing beside it")
    if int8:
        typer.echo(f"quantised nodes: {json.dumps(counts)}")
    if check:
        diff = _run(_parity, ox, directory, out)
        typer.echo(f"parity vs PyTorch FP32 on {PARITY_WINDOWS} random windows: max |dRUL| "
                   f"{diff['rul']:.2g} cycles, max |dP| {diff['probabilities']:.2e}")


def _export(ox, directory: Path, out: Path, int8: bool) -> None:
    try:
        ox.export_run(directory, out, int8=int8)
    except FileExistsError as exc:
        raise ValueError(str(exc)) from None


def _parity(ox, directory: Path, out: Path) -> dict[str, float]:
    import numpy as np

    from amnl.deploy.engines import TorchEngine
    from amnl.train.checkpoint import load_run

    cfg, _pre, model = load_run(directory)
    x = np.random.default_rng(PARITY_SEED).standard_normal(
        (PARITY_WINDOWS, cfg.data.window, cfg.data.n_features), dtype=np.float32)
    return ox.parity(TorchEngine(model), ox.OnnxEngine(out), x)


def bench(
    run: RunDir = None,
    weights: Weights = None,
    random_init: Annotated[bool, typer.Option(
        "--random-init", help="Benchmark a randomly initialised base model (speed does not "
                              "depend on the weights). Default when no model is bundled.")] = False,
    windows: Annotated[str, typer.Option(help="Comma-separated window lengths.")] = "30,50",
    engines: Annotated[str, typer.Option(help="Comma-separated engine:precision pairs.")] = DEFAULT_ENGINES,
    threads: Annotated[int, typer.Option(help="CPU threads for torch and ONNX Runtime (0 = all cores).")] = 0,
    rss: Annotated[bool, typer.Option(help="Measure peak RSS per engine in a fresh process.")] = True,
    seconds: Annotated[float, typer.Option(
        help="Seconds per latency measurement (throughput: twice).")] = 2.0,
    out: Annotated[Path | None, typer.Option(help="JSON file for the results (default: "
                                             "benchmarks/results/bench-<time>.json).")] = None,
) -> None:
    """Batch-1 latency, batch-256 throughput, FLOP rate and peak RSS of every engine, on CPU.

    Run it on an idle machine (here: through benchmarks/quiet.sh).
    """
    import logging
    import time

    from amnl.deploy.bench import ENGINE_SPECS, run_bench

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    specs = tuple(tuple(s.split(":", 1)) for s in _csv(engines, "--engines"))
    bad = [":".join(s) for s in specs if s not in ENGINE_SPECS]
    if bad:
        raise _fail(f"unknown --engines {bad}; choose from "
                    f"{', '.join(':'.join(s) for s in ENGINE_SPECS)}")
    window_list = tuple(_csv(windows, "--windows", int))
    if min(window_list) < 1:
        raise _fail(f"--windows must be positive, got {windows!r}")
    model, source = _model(run, weights, random_init)
    out = out or DEFAULT_BENCH_OUT / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    result = _run(run_bench, model, source=source, windows=window_list, specs=specs,
                  threads=threads, rss=rss, out=out, latency_seconds=seconds,
                  throughput_seconds=2 * seconds)
    m = result["machine"]
    typer.echo(f"{m['cpu']}, {m['cpus']} CPUs, {m['threads']} threads; model: {source}")
    typer.echo("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in result["peaks"].items()))
    typer.echo(result["table"])
    typer.echo(f"wrote {out}")


def _model(run: Path | None, weights: str | None, random_init: bool) -> tuple[Any, str]:
    """(FP32 model, description) from the model options."""
    from amnl.deploy.predictor import resolve_model_dir
    from amnl.errors import ModelError
    from amnl.model.factory import create_model
    from amnl.train.checkpoint import load_run

    if sum([run is not None, weights is not None, random_init]) > 1:
        raise _fail("give at most one of --run, --weights and --random-init")
    if run is None and weights is None and not random_init:
        try:
            run = resolve_model_dir(None, "FD001")
        except ModelError:
            random_init = True
    if random_init:
        import torch

        torch.manual_seed(0)
        return create_model("base"), "random-init base"
    directory = _run(resolve_model_dir, run, weights)
    return _run(load_run, directory)[2], str(directory)


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``bench`` to ``app``."""
    app.command()(export)
    app.command()(bench)
