"""``amnl export``: ONNX, FP32 or INT8, with a parity check against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from amnl.cli.options import RunDir, Weights, fail, model_source, run

EXPORT_FORMATS = ("onnx",)
#: Random windows the export's parity check runs (scaled inputs are z-scores, so N(0, 1)).
PARITY_WINDOWS = 256
PARITY_SEED = 0


def export(
    out: Annotated[Path, typer.Option("--out", help="The .onnx file to write; config.json and "
                                      "preprocess.* are copied beside it.")],
    fmt: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Quantise every MatMul and LSTM weight to "
                                       "INT8 (ONNX Runtime dynamic quantisation).")] = False,
    run_dir: RunDir = None,
    weights: Weights = None,
    check: Annotated[bool, typer.Option(help="Compare ONNX Runtime with PyTorch on random "
                                        "windows after exporting.")] = True,
) -> None:
    """Export a model to ONNX with a dynamic batch axis (default: the bundled FD001 model)."""
    from amnl.config import MB
    from amnl.export import onnx as ox

    if fmt not in EXPORT_FORMATS:
        raise fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if out.suffix != ".onnx":
        raise fail(f"--out must name a .onnx file, got {out}")
    run(ox.check_available)
    source = model_source(run_dir, weights, default=None)
    run(ox.export_run, source.directory, out, int8=int8)
    counts = ox.quantized_node_counts(out)
    typer.echo(f"wrote {out} ({out.stat().st_size / MB:.2f} MB, "
               f"{'int8' if int8 else 'fp32'}) and its preprocessing beside it")
    if int8:
        typer.echo(f"quantised nodes: {json.dumps(counts)}")
    if check:
        diff = run(_parity, ox, source.directory, out)
        typer.echo(f"parity vs PyTorch FP32 on {PARITY_WINDOWS} random windows: max |dRUL| "
                   f"{diff['rul']:.2g} cycles, max |dP| {diff['probabilities']:.2e}")


def _parity(ox, directory: Path, out: Path) -> dict[str, float]:
    import numpy as np

    from amnl.inference.onnx_runtime import OnnxRuntime
    from amnl.inference.runtime import TorchRuntime
    from amnl.rundir import load_run

    cfg, _pre, model = load_run(directory)
    x = np.random.default_rng(PARITY_SEED).standard_normal(
        (PARITY_WINDOWS, cfg.data.window, cfg.data.n_features), dtype=np.float32)
    return ox.parity(TorchRuntime(model), OnnxRuntime(out), x)


def register(app: typer.Typer) -> None:
    app.command()(export)
