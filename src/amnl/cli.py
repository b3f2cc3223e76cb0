"""The ``amnl`` command line: each command parses options, builds a config and calls one
library function. Errors print one line and exit with code 2; no traceback."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from amnl._cli_common import RunDir
from amnl._cli_common import fail as _fail
from amnl._cli_common import run as _run

app = typer.Typer(name="amnl", no_args_is_help=True, add_completion=False,
                  help="Remaining useful life and health state for machine fleets (AMNL, C-MAPSS).")

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Folder with the C-MAPSS files (default: $AMNL_DATA_DIR, else the user cache).")]
Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Subset: FD001, FD002, FD003 or FD004.")]
Weights = Annotated[str | None, typer.Option(
    "--weights", help="Bundled model name (FD001..FD004); default: the --dataset's, else FD001.")]


from amnl import _cli_export, _cli_profile
from amnl._cli_data import data_app

app.add_typer(data_app, name="data")


@app.command()
def info(
    size: Annotated[str, typer.Option(help="Model size: base (the published model) or tiny.")] = "base",
    use_settings: Annotated[bool, typer.Option(help="Count with the 3 settings as inputs (17).")] = False,
) -> None:
    """Parameter count per component and weight bytes in FP32 / FP16 / INT8."""
    from rich.console import Console
    from rich.table import Table

    from amnl.model.factory import create_model

    model = _run(create_model, size, in_features=17 if use_settings else 14)
    counts = model.parameter_counts()
    total = sum(counts.values())
    t = Table(title=f"AMNL ({size}, {model.config.in_features} inputs)")
    for col in ("component", "parameters", "FP32 MB", "FP16 MB", "INT8 MB"):
        t.add_column(col, justify="left" if col == "component" else "right")
    for name, n in [*counts.items(), ("total", total)]:
        t.add_row(name, f"{n:,}", f"{n * 4 / 1e6:.2f}", f"{n * 2 / 1e6:.2f}", f"{n / 1e6:.2f}")
    Console().print(t)
    typer.echo(f"{total / 1e6:.2f} M parameters")


@app.command()
def train(
    dataset: Dataset = "FD001",
    loss: Annotated[str | None, typer.Option(
        help="amnl, amnl-normalized, baseline, gaba or grace (default: the --config's, else amnl).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of weights and batch order (default: the --config's, else 0).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<dataset>-<loss>-s<seed>).")] = None,
    data_dir: DataDir = None,
    config: Annotated[Path | None, typer.Option(help="A config.json to start from (e.g. configs/fd001.json).")] = None,
    size: Annotated[str, typer.Option(help="Model size: base or tiny.")] = "base",
    precision: Annotated[str | None, typer.Option(help="Mixed precision: fp32, bf16 or fp16 (CUDA).")] = None,
    grad_checkpoint: Annotated[bool, typer.Option(help="Recompute BiLSTM/attention in backward (less memory).")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads, 0 = torch default (default: the --config's, else 0).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    teacher_targets: Annotated[Path | None, typer.Option(
        help="Distil from teachers: a file from `amnl distill-targets`.")] = None,
    distill: Annotated[float | None, typer.Option(
        help="Weight of the teachers' mean in the RUL target, 0-1 (default 0.5 with --teacher-targets).")] = None,
    extra_train: Annotated[list[str] | None, typer.Option(
        help="Also train on this subset's training engines (its validation engines left out; "
             "validation stays on --dataset's), e.g. FD003 for FD001. Repeat for more.")] = None,
) -> None:
    """Train AMNL on one subset (validation engines come from the training file)."""
    from dataclasses import replace

    import torch

    from amnl.config import RunConfig
    from amnl.data.cmapss import check_subset_name
    from amnl.data.paths import resolve_data_dir
    from amnl.model.factory import MODEL_SIZES
    from amnl.train.run import train_run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    name = _run(check_subset_name, dataset)
    cfg = _run(RunConfig.load, config) if config else RunConfig()
    if size not in MODEL_SIZES:
        raise _fail(f"unknown size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    if not config:
        cfg.model = replace(MODEL_SIZES[size])
    if teacher_targets is not None and distill is None and not cfg.train.distill:
        distill = 0.5
    overrides = {"loss": loss, "seed": seed, "grad_checkpoint": grad_checkpoint or cfg.train.grad_checkpoint,
                 "threads": threads, "epochs": epochs, "precision": precision, "batch_size": batch_size,
                 "distill": distill,
                 "teacher_targets": None if teacher_targets is None else str(teacher_targets)}
    train_cfg = _run(replace, cfg.train, **{k: v for k, v in overrides.items() if v is not None})
    data_cfg = replace(cfg.data, subset=name)
    if extra_train:
        data_cfg = _run(replace, data_cfg, extra_train=tuple(_run(check_subset_name, n) for n in extra_train))
    cfg = _run(RunConfig, data_cfg, cfg.model, train_cfg)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = out or Path("runs") / f"{name}-{cfg.train.loss}-s{cfg.train.seed}"
    summary = _run(train_run, cfg, resolve_data_dir(data_dir), out, resume=resume,
                   progress=progress, device=device)
    if summary["interrupted"]:
        typer.echo(f"interrupted after epoch {summary['epochs_run']}; resume with: "
                   f"amnl train --dataset {name} --out {out} --resume")
        raise typer.Exit(130)
    chosen = cfg.train.select_metric
    by = "" if chosen == "rmse" else f" ({chosen} {summary[f'val_{chosen}']:.2f}, the selection metric)"
    typer.echo(f"best epoch {summary['best_epoch']}: validation RMSE {summary['val_rmse']:.2f}{by}; "
               f"run directory {out}")


@app.command("distill-targets")
def distill_targets(
    run: Annotated[list[Path], typer.Option("--run", help="A teacher run directory (repeat for each).")],
    out: Annotated[Path, typer.Option(help="The targets file to write (.npz).")],
    data_dir: DataDir = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Average teacher runs' RUL predictions over their training file, for `amnl train --teacher-targets`."""
    import numpy as np
    import torch

    from amnl.data.paths import resolve_data_dir
    from amnl.train.distill import compute_teacher_targets

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    targets = _run(compute_teacher_targets, [str(r) for r in run], resolve_data_dir(data_dir),
                   device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(targets.save, out)
    typer.echo(f"{targets.subset}: {len(targets.rul)} windows, {len(targets.teachers)} teachers, "
               f"mean spread between teachers {float(np.mean(targets.spread)):.2f} cycles; "
               f"validation engines {targets.val_units.tolist()}; wrote {out}")


@app.command()
def evaluate(
    dataset: Dataset = "FD001",
    run: RunDir = None,
    weights: Weights = None,
    data_dir: DataDir = None,
    out: Annotated[Path | None, typer.Option(help="Write predictions.csv and a plot here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    engine: Annotated[str, typer.Option(help="torch or onnx.")] = "torch",
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16 (CUDA) or int8.")] = "fp32",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Score a model on the official test set (last-window protocol, truth capped at 125)."""
    from amnl.data.cmapss import check_subset_name, load_subset
    from amnl.data.paths import resolve_data_dir
    from amnl.deploy.predictor import Predictor
    from amnl.evaluate.evaluate import evaluate_test
    from amnl.evaluate.report import write_report

    name = _run(check_subset_name, dataset)
    predictor = _run(Predictor.load, run, weights=weights or name, engine=engine,
                     precision=precision, device=device)
    subset = _run(load_subset, resolve_data_dir(data_dir), name, train=False)
    report = evaluate_test(predictor, predictor.preprocessor, subset)
    metrics = {"dataset": name, "engine": engine, "precision": precision, **report.metrics}
    if out is not None:
        _run(write_report, report, out, name)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        typer.echo(f"{name} ({len(report.unit)} engines, {engine} {precision}): "
                   f"RMSE {metrics['rmse']:.2f}  MAE {metrics['mae']:.2f}  "
                   f"NASA {metrics['nasa']:.1f} (mean {metrics['nasa_mean']:.2f})  "
                   f"health acc {metrics['health_accuracy']:.3f}  F1 {metrics['health_macro_f1']:.3f}  "
                   f"| raw-truth RMSE {metrics['rmse_raw']:.2f}  all-windows RMSE "
                   f"{metrics['all_windows_rmse']:.2f}")
        if out is not None:
            typer.echo(f"wrote {out / 'predictions.csv'} and {out / 'predictions.png'}")


@app.command()
def predict(
    input: Annotated[Path, typer.Option("--input", "-i", help="Sensor histories: C-MAPSS text or CSV with named columns.")],
    run: RunDir = None,
    weights: Weights = None,
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    engine: Annotated[str, typer.Option(help="torch or onnx.")] = "torch",
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16 (CUDA) or int8.")] = "fp32",
) -> None:
    """RUL, health state and class probabilities per unit, from each unit's latest window.

    Give each unit's whole history from its first cycle: the models smooth the sensors causally (data.smoothing and data.slow_smoothing in the run's config), so a history cut short changes its latest window and so the prediction; models with data.cycle_feature also read the unit's age from its cycle numbers. A unit shorter than the window is padded with its first cycle.
    """
    from amnl.data.cmapss import read_histories
    from amnl.deploy.predictor import Predictor

    if fmt not in ("json", "csv"):
        raise _fail(f"--format must be json or csv, got {fmt!r}")
    predictor = _run(Predictor.load, run, weights=weights, engine=engine, precision=precision)
    table = _run(read_histories, input, predictor.preprocessor.feature_names)
    records = predictor.predict_table(table).records()
    if fmt == "json":
        typer.echo(json.dumps(records, indent=2))
    else:
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)


_cli_profile.register(app)
_cli_export.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
