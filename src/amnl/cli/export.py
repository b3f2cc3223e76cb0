"""``amnl export``: ONNX, FP32 or INT8, with a parity check against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from amnl.cli.options import DataDir, RunDir, Weights, fail, model_source, run

EXPORT_FORMATS = ("onnx",)
#: Windows of real histories the parity check runs at most (a seeded sample of them).
PARITY_WINDOWS = 2048
#: Random windows when no real histories are at hand (scaled inputs are z-scores, so N(0, 1));
#: out-of-distribution, so only printed, never held against the limits.
RANDOM_WINDOWS = 256
PARITY_SEED = 0


def export(
    out: Annotated[Path, typer.Option("--out", help="A folder (model.onnx is written there, "
                                      "model_int8.onnx with --int8) or a .onnx file; config.json "
                                      "and preprocess.* are copied beside it.")],
    fmt: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Quantise every MatMul and LSTM weight to "
                                       "INT8 (ONNX Runtime dynamic quantisation).")] = False,
    run_dir: RunDir = None,
    weights: Weights = None,
    check: Annotated[bool, typer.Option(help="Compare ONNX Runtime with PyTorch FP32 after "
                                        "exporting, and fail when they differ too much.")] = True,
    parity_data: Annotated[Path | None, typer.Option(
        help="Histories (C-MAPSS text or CSV) whose windows the parity check runs (default: the "
             "model's test_FD00x.txt in --data-dir, if there).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Export a model to ONNX with a dynamic batch axis (default: the bundled FD001 model).

    The export is then checked against PyTorch FP32 on real windows: FP32 within 0.01 cycles,
    INT8 within 2.5 cycles at the 99th percentile and 10 at most
    (amnl.export.onnx.PARITY_LIMITS). An export outside them is removed and the command fails.

    An export folder holds model.onnx (fp32) and/or model_int8.onnx (int8): --out DIR writes
    the right one, and a .onnx name of the other precision is refused. Use it with
    `amnl predict --run DIR --runtime onnx [--precision int8]`.
    """
    from amnl.config import MB
    from amnl.export import onnx as ox

    if fmt not in EXPORT_FORMATS:
        raise fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = run(ox.export_target, out, int8=int8)
    run(ox.check_available)
    source = model_source(run_dir, weights, default=None)
    run(ox.export_run, source.directory, out, int8=int8)
    counts = ox.quantized_node_counts(out)
    typer.echo(f"wrote {out} ({out.stat().st_size / MB:.2f} MB, "
               f"{'int8' if int8 else 'fp32'}) and its preprocessing beside it")
    if int8:
        typer.echo(f"quantised nodes: {json.dumps(counts)}")
    if not check:
        return
    diff, what = run(_parity, ox, source.directory, out, parity_data, data_dir)
    precision = "int8" if int8 else "fp32"
    typer.echo(f"parity vs PyTorch FP32 on {diff['windows']:,} {what}: max |dRUL| "
               f"{diff['rul']:.2g} cycles, p99 {diff['rul_p99']:.2g}, max |dP| "
               f"{diff['probabilities']:.2e}")
    if what.startswith("random"):
        typer.echo("note: random windows are not held against the limits (give --data-dir or "
                   "--parity-data for real ones)", err=True)
        return
    failures = ox.parity_failures(diff, precision)
    if failures:
        out.unlink()
        raise fail(f"the {precision} export is off from PyTorch FP32 on this host: "
                   f"{'; '.join(failures)}; removed {out}")


def _parity(ox, directory: Path, out: Path, parity_data: Path | None,
            data_dir: Path | None) -> tuple[dict[str, float], str]:
    """(parity result, what its windows were) on real windows when any are at hand."""
    import numpy as np

    from amnl.data.cmapss import read_histories, subset_files
    from amnl.data.paths import resolve_data_dir
    from amnl.inference.onnx_runtime import OnnxRuntime
    from amnl.inference.runtime import TorchRuntime
    from amnl.rundir import load_run

    cfg, pre, model = load_run(directory)
    rng = np.random.default_rng(PARITY_SEED)
    path = parity_data or subset_files(resolve_data_dir(data_dir), cfg.data.subset)["test"]
    if parity_data is not None or path.is_file():
        x = pre.windows(read_histories(path, pre.feature_names)).arrays()
        if len(x) > PARITY_WINDOWS:
            x = x[np.sort(rng.choice(len(x), PARITY_WINDOWS, replace=False))]
        what = f"windows of {path.name}"
    else:
        x = rng.standard_normal((RANDOM_WINDOWS, cfg.data.window, cfg.data.n_features),
                                dtype=np.float32)
        what = "random windows"
    return ox.parity(TorchRuntime(model), OnnxRuntime(out), x), what


def register(app: typer.Typer) -> None:
    app.command()(export)
