"""``amnl score``: a whole fleet's history scored into a partitioned Parquet folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from amnl.cli.options import Precision, Threads, fail, inference_config, run


def score(
    input: Annotated[Path, typer.Option(
        "--input", "-i", help="Histories: a Parquet file or folder (columns asset or unit, "
                              "cycle, settings, sensors), a CSV, or C-MAPSS text.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Folder to write: part-*.parquet and _SUCCESS, published "
                               "atomically.")],
    model: Annotated[str | None, typer.Option(
        help="A bundled model (FD001..FD004), a run directory or an exported folder "
             "(default: FD001).")] = None,
    runtime: Annotated[str, typer.Option(help="onnx or torch.")] = "onnx",
    precision: Precision = "fp32",
    threads: Threads = 0,
    cycles: Annotated[str, typer.Option(
        help="all (every cycle, as the service predicts them) or last (each asset's last "
             "cycle, as amnl predict).")] = "all",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output.")] = False,
    on: Annotated[str, typer.Option(help="local (one process) or ray (Ray Data; extra ray).")
                  ] = "local",
    ray_address: Annotated[str | None, typer.Option(
        help="A running Ray cluster (default: start a local one).")] = None,
    actors: Annotated[int | None, typer.Option(
        help="Ray actors holding the model (default: one less than the CPUs).",
        show_default=False)] = None,
) -> None:
    """Score every cycle (or the last) of every asset, in one process or on Ray Data.

    Locally, memory follows a piece of 65,536 rows of whole assets and a batch of 4,096 windows, not the
    input. Each output row: asset, cycle, rul, rul_lower, rul_upper (where the model has a
    calibration), health, p_healthy, p_degrading, p_critical, model_id, warnings (a list of
    strings, empty when none: the input checks amnl predict runs; with --cycles all each row's
    are about the history up to it).
    """
    from amnl.data.cmapss import SETTING_COLUMNS
    from amnl.inference.predictor import Predictor
    from amnl.score.histories import iter_fleet
    from amnl.score.local import CYCLES, score_local
    from amnl.score.output import PartitionedWriter

    if cycles not in CYCLES:
        raise fail(f"--cycles must be all or last, got {cycles!r}")
    if on not in ("local", "ray"):
        raise fail(f"--on must be local or ray, got {on!r}")
    if actors is not None and actors < 1:
        raise fail(f"--actors must be >= 1, got {actors}")
    cfg = inference_config(runtime, precision, "cpu", threads)
    if cfg.runtime == "torch":
        from amnl.inference.runtime import set_threads

        set_threads(cfg.threads)
    predictor = run(Predictor.load, model, cfg)  # (on ray: checks the model before starting)
    writer = run(PartitionedWriter, output, overwrite=overwrite)
    required = [*SETTING_COLUMNS, *predictor.preprocessor.feature_names]

    def write_all() -> None:
        if on == "ray":
            from amnl.score.on_ray import score_ray

            score_ray(model, cfg, input, writer, cycles, address=ray_address, actors=actors,
                      required=required)
            return
        for columns in score_local(predictor, iter_fleet(input, required), cycles):
            writer.write(columns)

    t0 = time.perf_counter()
    try:
        run(write_all)
        # with --cycles all, every asset's first window-1 rows carry the short-history
        # warning: the summary counts an asset for its rows from a full window on
        out = run(writer.commit, {"model_id": predictor.model_id, "cycles": cycles,
                                  "input": str(input)},
                  warnings_from_row=predictor.window if cycles == "all" else 1)
    except BaseException:  # an error or ^C: nothing that looks complete is left
        writer.abort()
        raise
    seconds = time.perf_counter() - t0
    typer.echo(f"scored {writer.rows:,} cycles in {seconds:.1f} s "
               f"({writer.rows / max(seconds, 1e-9):,.0f} a second) into {out} "
               f"({writer.parts} parts)", err=True)
    if writer.assets_with_warnings:
        typer.echo(f"warning: {writer.assets_with_warnings} of {writer.assets} assets have "
                   "input warnings; see the warnings column (their predictions are guesses)",
                   err=True)


def register(app: typer.Typer) -> None:
    app.command()(score)
