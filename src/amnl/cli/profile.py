"""``amnl profile`` and ``amnl plan``: measured memory and speed, and the batch size that fits.

Registered on the main app by :func:`register`. The measuring is in :mod:`amnl.profiling`
(:mod:`~amnl.profiling.report`, :mod:`~amnl.profiling.memory`, :mod:`~amnl.profiling.rss`), the
planning in :mod:`amnl.inference.planner`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from amnl.cli.options import (
    Device,
    RandomInit,
    RunDir,
    Size,
    Threads,
    Weights,
    check_out_file,
    csv_list,
    fail,
    model_source,
    run,
)
from amnl.config import MB
from amnl.errors import ConfigError

#: Batch sizes ``amnl plan`` measures when it is given no ``--profile`` file.
PLAN_BATCHES = "1,8,32,64,128,256"
PLAN_REPEATS = 3
#: (autocast precision, gradient checkpointing) of the training-step table (``--train``).
TRAIN_VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))
#: Table width when the output is a file or a pipe.
OUTPUT_WIDTH = 160
#: The quick default of ``amnl profile`` (one precision, one window, three batch sizes: the
#: least that fits a memory line with a check) and the full table of ``--full``.
QUICK = {"precision": "fp32", "batch_sizes": "1,8,32", "window": "30"}
FULL = {"batch_sizes": "1,8,32,64,128,256,512", "window": "30,50"}


def _load_model(run_dir: Path | None, weights: str | None, random_init: bool, size: str
                ) -> tuple[Any, dict, dict, list[str]]:
    """(FP32 model, description, RSS child source, notes) from the model options."""
    source = model_source(run_dir, weights, random_init, size=size)
    notes = []
    if source.random and not random_init:
        notes.append(f"no bundled model in this installation: profiling a randomly initialised "
                     f"{size} model (memory and speed do not depend on the weights' values)")
    info = ({"source": "random-init", "size": source.size} if source.random else
            {"source": source.label, "path": str(source.directory)})
    return source.load_model(), info, source.rss_source(), notes


def _device(device: str, threads: int) -> str:
    from amnl.inference.runtime import pick_device, set_threads

    set_threads(threads)
    return run(pick_device, device)


def _mb(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v / MB:,.{digits}f}"


def _print_report(report, console) -> None:
    from rich.table import Table

    cuda = any(r.memory.reserved is not None for r in report.rows)
    t = Table(title=f"AMNL inference memory and speed ({report.machine['device']}, "
                    f"{report.machine['cpu']}, {report.machine['threads']} threads)")
    cols = ["precision", "window", "batch", "peak MB", "weights", "activations", "workspace"]
    cols += ["reserved", "context"] if cuda else []
    cols += ["RSS MB", "p50 ms", "p95 ms", "windows/s"]
    for c in cols:
        t.add_column(c, justify="left" if c == "precision" else "right")
    for r in report.rows:
        m = r.memory
        cells = [r.precision, str(r.window), str(r.batch), _mb(m.peak), _mb(m.weights),
                 _mb(m.activations), _mb(m.workspace)]
        cells += [_mb(m.reserved), _mb(m.cuda_context)] if cuda else []
        lat = r.latency
        cells += [_mb(r.rss), f"{lat.p50_ms:.2f}" if lat else "-", f"{lat.p95_ms:.2f}" if lat else "-",
                  f"{lat.throughput:,.0f}" if lat else "-"]
        t.add_row(*cells)
    console.print(t)

    f = Table(title="memory = base + per_sample x batch (least squares)")
    for c in ("precision", "window", "base MB", "per sample MB", "R^2", "latency ms",
              "ms / sample"):
        f.add_column(c, justify="left" if c == "precision" else "right")
    for fr in report.fits:
        lat = fr.latency
        f.add_row(fr.precision, str(fr.window), _mb(fr.memory.base, 2),
                  _mb(fr.memory.per_sample, 4), f"{fr.memory.r2:.4f}",
                  f"{lat.base_ms:.2f}" if lat else "-", f"{lat.per_sample_ms:.4f}" if lat else "-")
    console.print(f)

    if report.rows:
        from amnl.profiling.report import layer_type_totals

        first = report.rows[0]
        same = [r for r in report.rows if (r.precision, r.window) == (first.precision, first.window)]
        row = min(same, key=lambda r: (abs(r.batch - 256), -r.batch))
        lt = Table(title=f"by layer type ({row.precision}, window {row.window}, batch {row.batch})")
        for c in ("layer type", "weights MB", "activations MB", "output MB", "allocator peak MB"):
            lt.add_column(c, justify="left" if c == "layer type" else "right")
        from amnl.profiling.report import LAYER_TYPES

        for kind, tot in layer_type_totals(row.memory.layers).items():
            peaks = [row.memory.layers[n].allocator_peak for n in LAYER_TYPES[kind]
                     if n in row.memory.layers]
            peak = None if any(p is None for p in peaks) or not peaks else max(peaks)
            lt.add_row(kind, _mb(tot["weights"], 2), _mb(tot["activations"]), _mb(tot["output"]),
                       _mb(peak))
        console.print(lt)


def profile(
    run_dir: RunDir = None,
    weights: Weights = None,
    random_init: RandomInit = False,
    size: Size = "base",
    device: Device = "cpu",
    full: Annotated[bool, typer.Option(
        "--full", help="The full table: every precision (fp32,bf16,int8 on CPU; fp32,fp16,bf16 "
                       f"on CUDA), windows {FULL['window']}, batches {FULL['batch_sizes']} "
                       "(many minutes on 2 cores).")] = False,
    precision: Annotated[str | None, typer.Option(
        help="Comma-separated precisions: fp32, bf16, fp16, int8 (default: fp32; all with "
             "--full).")] = None,
    batch_sizes: Annotated[str | None, typer.Option(
        help=f"Comma-separated batch sizes (default: {QUICK['batch_sizes']}; "
             f"{FULL['batch_sizes']} with --full).")] = None,
    window: Annotated[str | None, typer.Option(
        help=f"Comma-separated window lengths (default: {QUICK['window']}; {FULL['window']} "
             "with --full).")] = None,
    repeats: Annotated[int, typer.Option(help="Timed passes per row (0 = memory only).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed passes before timing.")] = 2,
    rss: Annotated[bool, typer.Option(help="Peak RSS of a fresh process per row (a few seconds each).")] = True,
    train: Annotated[bool, typer.Option(help="Also measure one training step with/without gradient "
                                             "checkpointing and bf16.")] = False,
    train_batch: Annotated[int, typer.Option(help="Batch size of the training step.")] = 256,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write everything measured as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG: memory and throughput vs batch.")] = None,
    threads: Threads = 0,
) -> None:
    """Measure memory, latency, throughput and RSS per precision x window x batch size.

    Peak tensor memory with its composition (weights / activations / workspace) and by layer,
    latency p50/p95 and throughput after warm-up, peak RSS of a fresh process, and the fit
    memory = base + per_sample x batch per precision and window (MB = 10^6 bytes). The default
    is a quick profile (fp32, window 30, batches 1,8,32; well under a minute on 2 cores), one
    progress line per measurement on stderr; --full gives the whole table.
    """

    from amnl.profiling.report import DEFAULT_PRECISIONS, profile_inference
    from amnl.profiling.train_step import measure_training_step

    for path, option in ((json_out, "--json"), (plot, "--plot")):
        if path is not None:
            check_out_file(path, option)
    if plot is not None:
        from amnl.extras import require

        run(require, "matplotlib", "--plot")  # up front, not after minutes of measuring
    dev = _device(device, threads)
    kind = "cuda" if dev.startswith("cuda") else "cpu"
    if precision:
        precisions = csv_list(precision, "--precision")
    else:
        precisions = list(DEFAULT_PRECISIONS[kind]) if full else [QUICK["precision"]]
    preset = FULL if full else QUICK
    batches = csv_list(batch_sizes or preset["batch_sizes"], "--batch-sizes", int)
    windows = csv_list(window or preset["window"], "--window", int)
    if repeats < 0 or warmup < 0:
        raise fail("--repeats and --warmup must be >= 0")
    model, info, source, notes = _load_model(run_dir, weights, random_init, size)
    console = _out_console()
    for n in notes:
        typer.echo(f"note: {n}", err=True)
    total = len(precisions) * len(windows) * len(batches)
    count = iter(range(1, total + 1))

    def progress(line: str) -> None:
        typer.echo(f"[{next(count)}/{total}] measuring {line}{' (+ RSS)' if rss else ''}", err=True)

    report = run(profile_inference, model, precisions=precisions, windows=windows,
                 batch_sizes=batches, device=dev, warmup=warmup, repeats=repeats,
                 rss_source=source if rss else None, model_info=info, progress=progress)
    report.notes.extend(notes)
    train_rows = []
    if train:
        for prec, ckpt in TRAIN_VARIANTS:
            typer.echo(f"measuring one training step, {prec}, checkpointing {ckpt}", err=True)
            train_rows.append(run(measure_training_step, model, batch=train_batch,
                                  window=windows[0], precision=prec, grad_checkpoint=ckpt,
                                  device=dev))
    console.print(f"model: {info['source']}")
    _print_report(report, console)
    if train_rows:
        _print_training(train_rows, console)
    for n in report.notes:
        console.print(f"note: {n}")
    if json_out is not None:
        data = report.to_dict()
        if train_rows:
            from dataclasses import asdict

            data["training"] = [asdict(r) for r in train_rows]
        json_out.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if plot is not None:
        from amnl.profiling.report import plot_profile

        run(plot_profile, report, plot)
        console.print(f"wrote {plot}")


def _print_training(rows, console) -> None:
    from rich.table import Table

    t = Table(title=f"one training step (AdamW, batch {rows[0].batch}, window {rows[0].window})")
    for c in ("precision", "checkpointing", "peak MB", "weights", "optimizer", "saved for backward",
              "transient", "step ms"):
        t.add_column(c, justify="left" if c == "precision" else "right")
    for r in rows:
        t.add_row(r.precision, "yes" if r.grad_checkpoint else "no", _mb(r.peak), _mb(r.weights),
                  _mb(r.optimizer_state), _mb(r.saved_activations), _mb(r.transient),
                  f"{r.step_ms:.0f}")
    console.print(t)


def plan(
    memory_mb: Annotated[float | None, typer.Option(
        help="Memory the tensors' peak (weights included) must fit in, MB. On CPU the whole "
             "process needs more (Python, torch, the model: see --process), and the plan says "
             "how much.")] = None,
    targets: Annotated[bool, typer.Option(
        "--targets", help="Print the study's deployment-target table (16 GB, 4 GB, 2 GB, "
                          "500 MB) with our measured figures.")] = False,
    device: Device = "cpu",
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16 or int8.")] = "fp32",
    window: Annotated[int, typer.Option(help="Window length.")] = 30,
    latency_budget_ms: Annotated[float | None, typer.Option(
        help="Largest acceptable latency of one batch, ms.")] = None,
    max_batch: Annotated[int, typer.Option(help="Never plan more than this batch size.")] = 256,
    power_of_two: Annotated[bool, typer.Option(help="Only powers of two (the study's rule).")] = True,
    profile_json: Annotated[Path | None, typer.Option(
        "--profile", help="Use the fits of an `amnl profile --json` file instead of measuring now.")] = None,
    run_dir: RunDir = None,
    weights: Weights = None,
    random_init: RandomInit = False,
    size: Size = "base",
    threads: Threads = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    process: Annotated[bool, typer.Option(
        help="On CPU, also measure a fresh process at batch 1 (a few seconds) and say what the "
             "whole process needs at the planned batch, and whether that fits --memory-mb.")
    ] = True,
) -> None:
    """The largest batch size that fits a memory size, and the throughput to expect.

    The memory line is measured (now, or read from `amnl profile --json`), not the study's
    constants.
    """
    from amnl.inference.planner import (
        STUDY_BASE_MB,
        STUDY_PER_SAMPLE_MB,
        STUDY_TARGETS_MB,
        UNCAPPED_MAX_BATCH,
        MemoryFit,
        plan_batch,
    )
    from amnl.profiling.report import load_fits, profile_inference

    if (memory_mb is None) == (not targets):
        raise fail("give either --memory-mb N or --targets")
    if memory_mb is not None and memory_mb <= 0:
        raise fail(f"--memory-mb must be > 0, got {memory_mb}")
    dev = _device(device, threads)
    if profile_json is not None:
        if not profile_json.is_file():
            raise fail(f"{profile_json}: no such file")
        fits = run(load_fits, profile_json)
        fit = next((f for f in fits if (f.precision, f.window) == (precision, window)), None)
        if fit is None:
            raise fail(f"{profile_json} has no fit for {precision} window {window}; have "
                        f"{sorted({(f.precision, f.window) for f in fits})}")
        origin = f"fit from {profile_json}"
    else:
        model, _info, _source, notes = _load_model(run_dir, weights, random_init, size)
        err = _err_console()
        for n in notes:
            err.print(f"note: {n}")
        with err.status(f"measuring {precision} window {window}"):
            report = run(profile_inference, model, precisions=[precision], windows=[window],
                          batch_sizes=csv_list(PLAN_BATCHES, "batches", int), device=dev,
                          repeats=PLAN_REPEATS)
        fit = report.fits[0]
        origin = f"measured now on {dev} (batches {PLAN_BATCHES})"
    mem, lat = fit.memory, fit.latency

    def one(memory_bytes: float, cap: int, budget: bool = True) -> Any:
        try:
            return plan_batch(mem, memory_bytes, max_batch=cap, power_of_two=power_of_two,
                              latency=lat, latency_budget_ms=latency_budget_ms if budget else None)
        except ConfigError as exc:
            return str(exc)

    header = (f"{precision}, window {window}, {fit.device}: memory = {mem.base / MB:.2f} MB + "
              f"{mem.per_sample / MB:.4f} MB x batch (R^2 {mem.r2:.4f}; {origin})")
    if memory_mb is not None:
        p = one(memory_mb * MB, max_batch)
        if isinstance(p, str):
            raise fail(p)
        largest = one(memory_mb * MB, UNCAPPED_MAX_BATCH, budget=False)  # the memory alone
        within = one(memory_mb * MB, UNCAPPED_MAX_BATCH)
        floor = (_process_floor(run_dir, weights, random_init, size, precision, window,
                                fit.device) if process else None)
        # the fresh process at batch 1 plus the tensor line's growth beyond batch 1
        whole = floor + (p.predicted_bytes - mem.upper(1)) if floor else None
        if as_json:
            typer.echo(json.dumps({"fit": mem.to_dict(), "plan": p.to_dict(),
                                   "largest_fitting_batch": largest.batch_size,
                                   "largest_within_latency_budget": within.batch_size,
                                   "process_floor_bytes": floor, "process_bytes": whole,
                                   "process_fits": whole <= memory_mb * MB if whole else None},
                                  indent=2))
            return
        typer.echo(header)
        thr = f"; expect {p.throughput:,.0f} windows/s ({p.latency_ms:.1f} ms per batch)" if p.throughput else ""
        typer.echo(f"batch size {p.batch_size} (limited by {p.limited_by}): predicted peak "
                   f"{p.predicted_bytes / MB:.1f} MB of {memory_mb:g} MB{thr}")
        limit = (f"; the latency budget of {latency_budget_ms:g} ms limits it to "
                 f"{within.batch_size}" if within.batch_size < largest.batch_size else "")
        typer.echo(f"largest batch the memory allows without the {max_batch} cap: "
                   f"{largest.batch_size}"
                   f"{' (extrapolated beyond the measured batches)' if largest.extrapolated else ''}"
                   f"{limit}")
        if whole:
            typer.echo(f"the process itself needs about {floor / MB:.0f} MB (a fresh process at "
                       f"batch 1: Python, torch, the model), so about {whole / MB:.0f} MB at batch "
                       f"{p.batch_size}")
            if whole > memory_mb * MB:
                typer.echo(f"warning: that is more than {memory_mb:g} MB: the batch above fits "
                           f"the tensors only, and the process does not fit in {memory_mb:g} MB "
                           "(the onnx runtime's process is smaller: `amnl export`, "
                           "docs/deployment.md)", err=True)
        return

    from rich.table import Table

    study = MemoryFit(STUDY_BASE_MB * MB, STUDY_PER_SAMPLE_MB * MB, 1.0)
    t = Table(title="deployment targets: the study's planner vs ours", caption=header)
    floor = _process_floor(run_dir, weights, random_init, size, precision, window, fit.device)
    for c in ("memory", "study: batch", "study: MB", "ours: batch", "ours: MB",
              "ours: process MB (est.)", "ours: windows/s", "ours: largest batch that fits"):
        t.add_column(c, justify="right")
    rows = []
    for target in STUDY_TARGETS_MB:
        s = plan_batch(study, target * MB, max_batch=256, power_of_two=True)
        o, big = one(target * MB, max_batch), one(target * MB, UNCAPPED_MAX_BATCH)
        ok = not isinstance(o, str)
        rows.append({"memory_mb": target, "study_batch": s.batch_size,
                     "study_mb": s.predicted_bytes / MB,
                     "batch": o.batch_size if ok else None,
                     "predicted_mb": o.predicted_bytes / MB if ok else None,
                     "throughput": o.throughput if ok else None,
                     "largest_batch": big.batch_size if ok else None,
                     "extrapolated": big.extrapolated if ok else None,
                     "process_mb": (floor + (o.predicted_bytes - mem.upper(1))) / MB
                     if ok and floor else None})
        label = f"{target / 1000:g} GB" if target >= 1000 else f"{target} MB"
        t.add_row(label, str(s.batch_size), f"{s.predicted_bytes / MB:.0f}",
                  str(o.batch_size) if ok else "none fits", f"{o.predicted_bytes / MB:.1f}" if ok else "-",
                  f"{rows[-1]['process_mb']:.0f}" if rows[-1]["process_mb"] else "-",
                  f"{o.throughput:,.0f}" if ok and o.throughput else "-",
                  (f"{big.batch_size:,}{' *' if big.extrapolated else ''}") if ok else "-")
    if as_json:
        typer.echo(json.dumps({"fit": mem.to_dict(), "targets": rows}, indent=2))
        return
    console = _out_console()
    console.print(t)
    console.print("* extrapolated beyond the largest measured batch "
                  f"({mem.max_measured_batch}); study: 14 MB + 1.8 MB x batch, power of two <= 256")
    if floor:
        console.print(f"ours: MB is tensor memory (weights included); the process needs more: "
                      f"{floor / MB:.0f} MB measured for a fresh process at batch 1 (Python, "
                      "torch, the model), plus the tensor line beyond batch 1")


def _process_floor(run_dir, weights, random_init, size, precision, window, device) -> float | None:
    """Peak RSS of a fresh process that runs this model at batch 1 (CPU only), bytes."""
    if device.startswith("cuda"):
        return None
    from amnl.profiling.rss import measure_rss

    source = model_source(run_dir, weights, random_init, size=size)
    with _err_console().status("measuring the RSS of a fresh process at batch 1"):
        return float(run(measure_rss, source.rss_source(), precision=precision, window=window,
                         batches=(1,)).peak)


def _err_console():
    from rich.console import Console

    return Console(stderr=True)


def _out_console():
    """Standard output; wide when it is not a terminal, so tables are not truncated."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=OUTPUT_WIDTH)


def register(app: typer.Typer) -> None:
    """Add ``profile`` and ``plan`` to ``app``."""
    app.command()(profile)
    app.command()(plan)
