"""``amnl bench``: every runtime and precision side by side on this CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from amnl.cli.options import (
    RandomInit,
    RunDir,
    Size,
    Weights,
    check_out_file,
    csv_list,
    fail,
    model_source,
    run,
)

#: The results file without --out: in the current folder, named so that it is found (the
#: repository's benchmark scripts pass --out benchmarks/results/...).
DEFAULT_BENCH_NAME = "amnl-bench-{time}.json"
DEFAULT_RUNTIMES = "torch-full:fp32,torch:fp32,torch:bf16,torch:int8,onnx:fp32,onnx:int8"


def bench(
    run_dir: RunDir = None,
    weights: Weights = None,
    random_init: RandomInit = False,
    size: Size = "base",
    windows: Annotated[str, typer.Option(help="Comma-separated window lengths.")] = "30,50",
    runtimes: Annotated[str, typer.Option(help="Comma-separated runtime:precision pairs.")] = DEFAULT_RUNTIMES,
    threads: Annotated[int, typer.Option(help="CPU threads for torch and ONNX Runtime (0 = all cores).")] = 0,
    rss: Annotated[bool, typer.Option(help="Measure peak RSS per runtime in a fresh process.")] = True,
    seconds: Annotated[float, typer.Option(
        help="Seconds per latency measurement (throughput: twice).")] = 2.0,
    out: Annotated[Path | None, typer.Option(
        help="JSON file for the results (default: amnl-bench-<time>.json in the current "
             "folder; the path is printed).", show_default=False)] = None,
) -> None:
    """Batch-1 latency, batch-256 throughput, FLOP rate and peak RSS (MB) of every runtime, on CPU.

    Run it on an idle machine (here: through benchmarks/quiet.sh).
    """
    import time

    from amnl.profiling.bench import RUNTIME_SPECS, run_bench

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    specs = tuple(tuple(s.split(":", 1)) for s in csv_list(runtimes, "--runtimes"))
    bad = [":".join(s) for s in specs if s not in RUNTIME_SPECS]
    if bad:
        raise fail(f"unknown --runtimes {bad}; choose from "
                   f"{', '.join(':'.join(s) for s in RUNTIME_SPECS)}")
    window_list = tuple(csv_list(windows, "--windows", int))
    if min(window_list) < 1:
        raise fail(f"--windows must be positive, got {windows!r}")
    out = out or Path(DEFAULT_BENCH_NAME.format(time=time.strftime("%Y%m%d-%H%M%S")))
    check_out_file(out, "--out")  # before minutes of measuring
    source = model_source(run_dir, weights, random_init, size=size)
    model = source.load_model()
    label = str(source.directory) if source.directory else source.label
    result = run(run_bench, model, source=label, windows=window_list, specs=specs,
                 threads=threads, rss_source=source.rss_source() if rss else None, out=out,
                 latency_seconds=seconds, throughput_seconds=2 * seconds)
    from amnl.machine import describe

    typer.echo(f"{describe(result['machine'])}; model: {label}")
    typer.echo("matmul peak, measured now: " + ", ".join(
        f"{k} {v:,.0f} {'GOP/s' if k == 'int8' else 'GFLOP/s'}" for k, v in result["peaks"].items()))
    typer.echo(result["table"])
    typer.echo(f"wrote {out.resolve()}")


def register(app: typer.Typer) -> None:
    app.command()(bench)
