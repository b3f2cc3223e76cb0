"""``amnl evaluate`` (the test protocol on a subset) and ``amnl predict`` (any histories)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from amnl.cli.options import (
    DataDir,
    Device,
    Precision,
    RunDir,
    Runtime,
    Threads,
    Weights,
    fail,
    inference_config,
    model_source,
    run,
)

FORMATS = ("json", "csv")


def _predictor(run_dir: Path | None, weights: str | None, default: str | None, runtime: str,
               precision: str, device: str, threads: int):
    """The Predictor of the shared model and inference options, torch threads applied."""
    from amnl.inference.predictor import Predictor

    source = model_source(run_dir, weights, default=default)
    cfg = inference_config(runtime, precision, device, threads)
    if cfg.runtime == "torch":
        from amnl.inference.runtime import set_threads

        set_threads(cfg.threads)
    return run(Predictor.load, source.directory, cfg)


def evaluate(
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Subset to score: FD001..FD004 (default: the model's own subset; "
                                "FD001 for the bundled default).")] = None,
    run_dir: RunDir = None,
    weights: Weights = None,
    data_dir: DataDir = None,
    out: Annotated[Path | None, typer.Option(help="Write predictions.csv, metrics.json and a plot here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    all_windows: Annotated[bool, typer.Option(
        "--all-windows", help="Also score every test window (a secondary figure; about 100x the "
                              "windows of the last-window protocol, so slower).")] = False,
    runtime: Runtime = "torch",
    precision: Precision = "fp32",
    device: Device = "cpu",
    threads: Threads = 0,
) -> None:
    """Score a model on the official test set (last-window protocol, truth capped at the RUL cap)."""
    from amnl.data.cmapss import check_subset_name, load_subset, subset_files
    from amnl.data.paths import SAMPLE_SUBSETS, resolve_data_dir, sample_dir
    from amnl.evaluate.evaluate import evaluate_test
    from amnl.evaluate.report import write_report

    asked = run(check_subset_name, dataset) if dataset is not None else None
    default = asked or (run(check_subset_name, weights) if weights else "FD001")
    predictor = _predictor(run_dir, weights, default, runtime, precision, device, threads)
    trained_on = predictor.config.data.subset
    name = asked or trained_on
    if out is not None and out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file; give a folder for predictions.csv and the plot")
    if name != trained_on:
        typer.echo(f"warning: the model was trained on {trained_on}; scoring it on {name} as "
                   "asked (--dataset)", err=True)
    folder = resolve_data_dir(data_dir)
    if data_dir is None and not subset_files(folder, name)["test"].exists() \
            and name in SAMPLE_SUBSETS:
        typer.echo(f"no C-MAPSS data in {folder}: using the {name} test set shipped with amnl "
                   "(`amnl data download` fetches all four subsets)", err=True)
        folder = sample_dir()
    subset = run(load_subset, folder, name, train=False)
    if all_windows:
        typer.echo(f"scoring every window of {name}'s {len(subset.test.units)} test engines "
                   f"({len(subset.test):,} cycles); this takes a while", err=True)
    report = run(evaluate_test, predictor, predictor.preprocessor, subset, all_windows=all_windows,
                 intervals=predictor.intervals)
    report.warnings = _test_warnings(predictor, subset.test)
    flagged = [w for w in report.warnings if w]
    if flagged:
        typer.echo(f"warning: {len(flagged)} of {len(report.unit)} test engines have input "
                   f"warnings (e.g. {flagged[0][0]}); predictions.csv (--out) lists them",
                   err=True)
    metrics = {"dataset": name, "runtime": runtime, "precision": precision,
               "model_id": predictor.model_id, **report.metrics}
    written = []
    if out is not None:
        written = run(write_report, report, out, name)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        written.append(out / "metrics.json")
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        extra = (f"  all-windows RMSE {metrics['all_windows_rmse']:.2f}" if all_windows else "")
        typer.echo(f"{name} ({len(report.unit)} engines, {runtime} {precision}): "
                   f"RMSE {metrics['rmse']:.2f}  MAE {metrics['mae']:.2f}  "
                   f"NASA {metrics['nasa']:.1f} (mean {metrics['nasa_mean']:.2f})  "
                   f"health acc {metrics['health_accuracy']:.3f}  F1 {metrics['health_macro_f1']:.3f}  "
                   f"| raw-truth RMSE {metrics['rmse_raw']:.2f}{extra}")
        if "interval_coverage" in metrics:
            typer.echo(f"  RUL interval, nominal {100 * metrics['interval_stated_coverage']:.0f} "
                       f"%: coverage {100 * metrics['interval_coverage']:.1f} % measured on these "
                       f"{len(report.unit)} engines' last windows, mean width "
                       f"{metrics['interval_width']:.1f} cycles")
        if written:
            typer.echo(f"wrote {', '.join(str(p) for p in written)}")
            if not any(p.suffix == ".png" for p in written):
                typer.echo("no plot: matplotlib is not installed (pip install 'amnl[plot]')",
                           err=True)


def _test_warnings(predictor, table) -> list[list[str]]:
    """Each test engine's input warnings, as amnl predict gives them."""
    from amnl.inference.checks import unit_warnings

    pre = predictor.preprocessor
    return unit_warnings(pre, predictor.config, table, *pre.scale(table))


def predict(
    input: Annotated[Path, typer.Option("--input", "-i", help="Sensor histories: C-MAPSS text or CSV with named columns.")],
    run_dir: RunDir = None,
    weights: Weights = None,
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    runtime: Runtime = "torch",
    precision: Precision = "fp32",
    device: Device = "cpu",
    threads: Threads = 0,
) -> None:
    """RUL, health state and class probabilities per unit, from each unit's latest window.

    Give each unit's whole history from its first cycle: the models smooth the sensors causally (data.smoothing and data.slow_smoothing in the run's config), so a history cut short changes its latest window and so the prediction; models with data.cycle_feature also read the unit's age from its cycle numbers. A unit shorter than the window is padded with its first cycle. A unit whose first cycle is not 1, or shorter than the window, gets a warning (a history cut short and renumbered from 1 cannot be detected).
    """
    from amnl.data.cmapss import iter_histories

    if fmt not in FORMATS:
        raise fail(f"--format must be json or csv, got {fmt!r}")
    predictor = _predictor(run_dir, weights, None, runtime, precision, device, threads)
    # streamed in pieces of whole units: memory follows a piece, not the file
    predictions = run(predictor.predict_tables,
                      iter_histories(input, predictor.preprocessor.feature_names))
    records = predictions.records()
    if fmt == "json":
        typer.echo(json.dumps(records, indent=2, allow_nan=False))
    else:
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=list(records[0]))
        w.writeheader()
        # the numbers as evaluate's predictions.csv writes them: RUL to 3 decimals, p to 5
        w.writerows({**r, "rul": f"{r['rul']:.3f}", **{k: f"{r[k]:.5f}" for k in r if k.startswith("p_")},
                     **{k: f"{r[k]:.3f}" for k in ("rul_lower", "rul_upper") if k in r},
                     "warnings": "; ".join(r["warnings"])} for r in records)
    if predictions.n_flagged:
        typer.echo(f"warning: {predictions.n_flagged} of {len(records)} units are outside the "
                   "model's training range or their history is not what it needs; their "
                   "`warnings` say how, and their predictions are guesses", err=True)


def calibrate(
    run_dir: RunDir = None,
    weights: Weights = None,
    data_dir: DataDir = None,
    coverage: Annotated[float, typer.Option(
        help="Nominal coverage of the interval (what the calibration aims at on held-out "
             "engines; amnl evaluate measures it on a test set).")] = 0.8,
    out: Annotated[Path | None, typer.Option(
        help="Folder for calibration.json and drift.json (default: the --run folder; "
             "required for a bundled model).", show_default=False)] = None,
    runtime: Runtime = "torch",
    precision: Precision = "fp32",
    threads: Threads = 0,
) -> None:
    """Calibrate RUL intervals on the model's held-out engines (split-conformal, by RUL band).

    Reads training files only (the seeded validation splits), never a test file;
    writes calibration.json (the intervals, which predict, evaluate, export and serve then
    use) and drift.json (the training engines' input distribution, for the service's drift).
    A bundled model lives inside the installed package, which is never written: give --out,
    or copy the model's folder and pass --run COPY.
    """
    from amnl.data.paths import resolve_data_dir
    from amnl.evaluate.calibrate import calibrate as fit
    from amnl.evaluate.calibrate import drift_reference

    predictor = _predictor(run_dir, weights, None, runtime, precision, "cpu", threads)
    folder = out or predictor.folder
    if out is None and _inside_package(folder):
        raise fail(f"{folder} is a bundled model inside the amnl package, which calibrate does "
                   "not write into; pass --out DIR for calibration.json and drift.json, or copy "
                   f"the folder (cp -r {folder} my-model) and pass --run my-model")
    if out is not None:
        run(out.mkdir, parents=True, exist_ok=True)
    data = resolve_data_dir(data_dir)
    intervals = run(fit, predictor, data, coverage=coverage)
    path = run(intervals.save, folder)
    drift_path = run(run(drift_reference, predictor, data).save, folder)
    edges = [0, *intervals.edges]
    bands = ", ".join(f"{e:g}+: [{lo:+.1f}, {hi:+.1f}]" for e, lo, hi in
                      zip(edges, intervals.lower, intervals.upper))
    typer.echo(f"{predictor.config.data.subset}: intervals at a nominal {100 * coverage:.0f} % "
               f"from "
               f"{intervals.source['windows']} windows of held-out engines "
               f"({', '.join(intervals.source['subsets'])}); offsets by predicted RUL: {bands}; "
               f"wrote {path} and the drift reference {drift_path}")


def _inside_package(path: Path) -> bool:
    """True when ``path`` lies inside the installed amnl package (site-packages for a pip
    install): the bundled models' folders."""
    import amnl

    return Path(path).resolve().is_relative_to(Path(amnl.__file__).resolve().parent)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
    app.command()(predict)
    app.command()(calibrate)
