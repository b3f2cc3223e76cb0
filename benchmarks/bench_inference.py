"""Inference benchmarks of docs/deployment-inference.md: speed (= ``amnl bench``) and accuracy.

Speed, every runtime side by side (run on an idle machine; here through quiet.sh)::

    benchmarks/quiet.sh .venv/bin/python benchmarks/bench_inference.py speed --run DIR

Accuracy, runtime x precision on the test sets, with the code ``amnl evaluate`` uses::

    .venv/bin/python benchmarks/bench_inference.py accuracy \\
        --model FD001=runs/campaign/FD001-amnl-s0 --model FD002=... --data-dir ../shared/data/CMAPSS

ONNX Runtime throughput against windows per ``session.run`` (the runtime's chunk size)::

    benchmarks/quiet.sh .venv/bin/python benchmarks/bench_inference.py chunks --run DIR

Peak RSS of a whole ONNX Runtime inference process on an exported folder (``amnl export``):
read a C-MAPSS file, apply the saved preprocessing, predict every engine's last window; this
process imports neither torch nor scikit-learn::

    .venv/bin/python benchmarks/bench_inference.py rss --export export/fd001 --precision int8 \\
        --input ../shared/data/CMAPSS/test_FD001.txt

Where ONNX Runtime spends its time, per operator (its own profiler), for the bundled model's
export with and without the lean passes of ``amnl.export.graph`` and for any other ONNX files
given (e.g. an export made by an older amnl), side by side in one run::

    .venv/bin/python benchmarks/bench_inference.py ops --threads 2 --batch 64 \
        --onnx before-int8=/path/to/old/model_int8.onnx

Median over repeated ``speed`` runs (the host's speed drifts from run to run)::

    .venv/bin/python benchmarks/bench_inference.py summary benchmarks/results/bench-*.json

Without ``--model``, the bundled models (src/amnl/weights/FD00x) are used where present.
Results go to benchmarks/results/ as JSON; ``accuracy`` also prints a Markdown table. MB is
:data:`amnl.config.MB` (10^6 bytes); result files written before that (``bench-*.json`` and
``rss-exported-*.json`` without a ``units`` entry) hold MiB under ``rss_mb``, which ``summary``
converts. Rows written before the runtime rename name their runtime ``engine``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SUBSETS = ("FD001", "FD002", "FD003", "FD004")
#: The unit of ``rss_mb`` in result files without a ``units`` entry (the old bench's MiB).
OLD_MB = 1 << 20
UNITS = {"rss_mb": "MB = 10^6 bytes"}

logger = logging.getLogger(__name__)


def _speed(args: argparse.Namespace) -> None:
    from amnl.cli.app import app

    cmd = ["bench", "--windows", args.windows, "--threads", str(args.threads),
           "--out", str(args.out or RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")]
    cmd += ["--run", str(args.run)] if args.run else ["--random-init"] if args.random_init else []
    app(cmd, standalone_mode=True)


def accuracy_table(models: dict[str, str | os.PathLike], data_dir: str | os.PathLike, *,
                   specs: tuple[tuple[str, str], ...] | None = None, threads: int = 0
                   ) -> list[dict[str, Any]]:
    """Test-set metrics of every runtime x precision, with the code ``amnl evaluate`` uses.

    Args:
        models: subset name (FD001..FD004) -> run directory or bundled folder.
        data_dir: folder of the C-MAPSS files.
        specs: (runtime, precision) pairs (default :data:`amnl.profiling.bench.RUNTIME_SPECS`).
        threads: CPU threads (0 = the library's default); torch's count is set once here, as
            the CLI's front door does.

    Returns:
        One dict per (subset, runtime, precision): the :func:`amnl.evaluate.evaluate.evaluate_test`
        metrics of the last-window protocol, plus ``model``, ``seconds`` and ``cpu``.
    """
    from amnl.config import InferenceConfig
    from amnl.data.cmapss import load_subset
    from amnl.evaluate.evaluate import evaluate_test
    from amnl.inference.predictor import Predictor
    from amnl.inference.runtime import set_threads
    from amnl.profiling.bench import RUNTIME_SPECS
    from amnl.profiling.machine import cpu_name

    set_threads(threads)
    rows = []
    for name, directory in models.items():
        subset = load_subset(data_dir, name, train=False)
        for runtime, precision in specs or RUNTIME_SPECS:
            t0 = time.perf_counter()
            predictor = Predictor.load(directory, InferenceConfig(runtime=runtime,
                                                                  precision=precision,
                                                                  threads=threads))
            report = evaluate_test(predictor, predictor.preprocessor, subset, all_windows=False)
            rows.append({"dataset": name, "runtime": runtime, "precision": precision,
                         "model": str(directory), "seconds": time.perf_counter() - t0,
                         "cpu": cpu_name(), **report.metrics})
            logger.info("%s %s %s: RMSE %.3f", name, runtime, precision, report.metrics["rmse"])
    return rows


def _accuracy(args: argparse.Namespace) -> None:
    from amnl.errors import ModelError
    from amnl.rundir import bundled_dir

    models = dict(m.split("=", 1) for m in args.model)
    if not models:
        for name in SUBSETS:
            try:
                models[name] = str(bundled_dir(name))
            except ModelError:
                pass
    if not models:
        sys.exit("no --model given and no bundled models installed")
    rows = accuracy_table(models, args.data_dir, threads=args.threads)
    out = args.out or RESULTS / f"accuracy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    print(f"\nwrote {out}")


def _chunks(args: argparse.Namespace) -> None:
    import torch

    from amnl.model.factory import create_model
    from amnl.profiling.bench import chunk_sweep
    from amnl.profiling.machine import machine_info
    from amnl.rundir import load_run

    if args.run:
        model = load_run(args.run)[2]
    else:
        torch.manual_seed(0)
        model = create_model("base")
    result = {"machine": machine_info("cpu", args.threads),
              "model": str(args.run or "random-init base")}
    for precision in ("int8", "fp32"):
        result[precision] = chunk_sweep(model, precision=precision, threads=args.threads)
        print(precision, " ".join(f"{r['chunk']}:{r['best']:.0f}" for r in result[precision]))
    out = args.out or RESULTS / f"chunks-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def _ops(args: argparse.Namespace) -> None:
    import tempfile

    import numpy as np
    from results_file import write_results

    from amnl.export.onnx import export_onnx
    from amnl.profiling.machine import describe, machine_info
    from amnl.profiling.ort_ops import format_split, op_time_splits, optimized_graph_ops
    from amnl.rundir import bundled_dir, load_run

    source = args.run or bundled_dir("FD001")
    cfg, pre, model = load_run(source)
    x = _real_windows(pre, cfg.data.subset, args.data_dir, args.batch)
    if x is None:
        x = np.random.default_rng(0).standard_normal(
            (args.batch, cfg.data.window, cfg.data.n_features), dtype=np.float32)
    files = dict(f.split("=", 1) for f in args.onnx)
    with tempfile.TemporaryDirectory(prefix="amnl-ops-") as tmp:
        for precision in args.precisions.split(","):
            for lean in (False, True):
                name = f"{'lean' if lean else 'plain'}-{precision}"
                files[name] = export_onnx(model, Path(tmp) / f"{name}.onnx", cfg.data.window,
                                          int8=precision == "int8", lean=lean)
        splits = op_time_splits(files, x, threads=args.threads, runs=args.runs)  # interleaved
        graphs = {name: dict(optimized_graph_ops(path, args.threads)) for name, path in files.items()}
    machine = machine_info("cpu", args.threads)
    print(f"{describe(machine)}; model {source}; batch {args.batch}; {args.runs} runs each")
    print(format_split(splits))
    write_results({"machine": machine, "model": str(source), "batch": args.batch,
                   "files": {k: str(v) for k, v in files.items()}, "splits": splits,
                   "optimized_graph_ops": graphs, "table": format_split(splits)},
                  args.out, "ort-ops")


def _real_windows(pre: Any, subset: str, data_dir: Path, n: int):
    """The first ``n`` windows of the model's test file, when the data are at hand."""
    from amnl.data.cmapss import read_table, subset_files

    test = subset_files(data_dir, subset)["test"]
    if not test.is_file():
        return None
    return pre.windows(read_table(test)).arrays()[:n]


def _rss(args: argparse.Namespace) -> None:
    from amnl.config import MB
    from amnl.data.cmapss import read_table
    from amnl.inference.onnx_runtime import load_exported
    from amnl.profiling.machine import cpu_name
    from amnl.profiling.rss import peak_rss_bytes

    _, pre, runtime = load_exported(args.export, precision=args.precision, threads=args.threads)
    x = pre.windows(read_table(args.input), last_only=not args.all_windows).arrays()
    runtime(x)
    result = {"export": str(args.export), "precision": args.precision, "input": str(args.input),
              "windows": len(x), "rss_mb": peak_rss_bytes() / MB, "units": UNITS,
              "torch_imported": "torch" in sys.modules, "sklearn_imported": "sklearn" in sys.modules,
              "cpu": cpu_name()}
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def _summary(args: argparse.Namespace) -> None:
    import numpy as np

    from amnl.config import MB

    runs = [json.loads(Path(f).read_text()) for f in args.files]
    cells: dict[tuple, list[dict]] = {}
    for run in runs:
        scale = 1.0 if "units" in run else OLD_MB / MB  # old files: MiB under "rss_mb"
        for r in run["rows"]:
            r = {**r, "rss_mb": None if r.get("rss_mb") is None else r["rss_mb"] * scale}
            runtime = r.get("runtime", r.get("engine"))  # old rows: "engine"
            cells.setdefault((runtime, r["precision"], r["window"]), []).append(r)
    peaks = {k: np.median([run["peaks"][k] for run in runs]) for k in runs[0]["peaks"]}
    print(f"{len(runs)} runs; median matmul peak GFLOP/s (int8: GOP/s): "
          + ", ".join(f"{k} {v:,.0f}" for k, v in peaks.items()))
    m = runs[0].get("machine", {})
    host = m.get("cpu", "?") + (f" {m['cpu_family']}/{m['cpu_model']}" if m.get("cpu_family") else "")
    print("| host | runtime | precision | window | b1 p50 ms (min-max) | b1 p95 ms | b256 windows/s (min-max) "
          "| MFLOP / window | % of peak | peak RSS MB | max foreign |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (runtime, precision, window), rs in cells.items():
        def col(key, rs=rs):
            return np.array([r[key] for r in rs if r.get(key) is not None], dtype=float)
        p50, tput, rss = col("p50_ms"), col("throughput"), col("rss_mb")
        print(f"| {host} | {runtime} | {precision} | {window} | {np.median(p50):.2f} ({p50.min():.2f}-{p50.max():.2f}) "
              f"| {np.median(col('p95_ms')):.2f} | {np.median(tput):,.0f} ({tput.min():,.0f}-{tput.max():,.0f}) "
              f"| {rs[0]['flops_per_window'] / 1e6:.1f} | {np.median(col('fraction_of_peak')):.0%} {rs[0]['peak']} "
              f"| {f'{np.median(rss):.0f}' if len(rss) else '-'} | {col('foreign_cpu').max():.0%} |")


def markdown(rows: list[dict]) -> str:
    """Runtime x precision rows per subset, with the RMSE change against torch FP32."""
    lines = ["| subset | runtime | precision | RMSE | dRMSE vs torch fp32 | NASA | MAE | health acc |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    ref = {r["dataset"]: r["rmse"] for r in rows if (r["runtime"], r["precision"]) == ("torch", "fp32")}
    for r in rows:
        d = r["rmse"] - ref[r["dataset"]] if r["dataset"] in ref else float("nan")
        lines.append(f"| {r['dataset']} | {r['runtime']} | {r['precision']} | {r['rmse']:.3f} | "
                     f"{d:+.3f} | {r['nasa']:.1f} | {r['mae']:.2f} | {r['health_accuracy']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed", help="latency / throughput / RSS of every runtime (amnl bench)")
    s.add_argument("--run", type=Path, help="run directory (default: bundled FD001, else random init)")
    s.add_argument("--random-init", action="store_true")
    s.add_argument("--windows", default="30,50")
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--out", type=Path)
    s.set_defaults(fn=_speed)
    c = sub.add_parser("chunks", help="ONNX Runtime throughput against windows per session.run")
    c.add_argument("--run", type=Path, help="run directory (default: random-init base model)")
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--out", type=Path)
    c.set_defaults(fn=_chunks)
    m = sub.add_parser("summary", help="median table over repeated speed runs (their JSON files)")
    m.add_argument("files", nargs="+", type=Path)
    m.set_defaults(fn=_summary)
    o = sub.add_parser("ops", help="ONNX Runtime's per-operator time split, graphs side by side")
    o.add_argument("--run", type=Path, help="run directory (default: the bundled FD001 model)")
    o.add_argument("--onnx", action="append", default=[], metavar="NAME=FILE",
                   help="another ONNX file to profile beside the exports (repeatable)")
    o.add_argument("--precisions", default="fp32,int8")
    o.add_argument("--batch", type=int, default=64, help="windows per session.run (the runtime's chunk)")
    o.add_argument("--runs", type=int, default=30)
    o.add_argument("--threads", type=int, default=0)
    o.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    o.add_argument("--out", type=Path)
    o.set_defaults(fn=_ops)
    r = sub.add_parser("rss", help="peak RSS of an ONNX Runtime process on an exported folder")
    r.add_argument("--export", type=Path, required=True, help="folder or .onnx file of amnl export")
    r.add_argument("--input", type=Path, required=True, help="C-MAPSS text file of histories")
    r.add_argument("--precision", choices=("fp32", "int8"), default="int8")
    r.add_argument("--all-windows", action="store_true", help="every window, not only the last")
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--out", type=Path)
    r.set_defaults(fn=_rss)
    a = sub.add_parser("accuracy", help="test-set metrics per runtime x precision")
    a.add_argument("--model", action="append", default=[], metavar="FD00x=DIR")
    a.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    a.add_argument("--threads", type=int, default=0)
    a.add_argument("--out", type=Path)
    a.set_defaults(fn=_accuracy)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args.fn(args)


if __name__ == "__main__":
    main()
