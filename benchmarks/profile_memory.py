"""Inference memory and speed of AMNL, and the chunked-inference targets of the profiler issue.

    benchmarks/quiet.sh .venv/bin/python benchmarks/profile_memory.py profile --precision fp32
    benchmarks/quiet.sh .venv/bin/python benchmarks/profile_memory.py chunking

``profile``: every window x batch size of one precision (memory, composition, by layer, latency,
fresh-process RSS) -> ``benchmarks/results/profile_<device>_<precision>_w<windows>_t<threads>.json``
(+ a PNG with ``--plot``). ``chunking``: batch 256, window 30, FP32: peak tensor memory and throughput of one
unchunked ``TorchRuntime`` call against planner-sized chunks (``batch_size="auto"`` under a
memory budget), and the peak RSS of a fresh process doing either ->
``benchmarks/results/chunking_<device>_t<threads>.json``.

Run it through ``benchmarks/quiet.sh`` on a shared machine (it serialises measurements and can
pause background training). ``--threads 1`` keeps timings stable when other work shares the
cores: with two OpenMP threads and a busy CPU, each parallel region waits for a descheduled
thread and a forward pass can take seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from amnl.config import MB
from amnl.inference.runtime import TorchRuntime, set_threads
from amnl.model.factory import create_model
from amnl.profiling.machine import machine_info
from amnl.profiling.memory import make_input, measure_call_peak, weight_bytes
from amnl.profiling.report import DEFAULT_BATCH_SIZES, plot_profile, profile_inference
from amnl.profiling.rss import measure_rss

RESULTS = Path(__file__).resolve().parent / "results"
#: The issue's targets: batch 256, window 30, FP32; peak tensor memory <= 40 MB with >= 95 % of
#: the unconstrained throughput; peak RSS <= 300 MB with PyTorch.
TARGET_BATCH, TARGET_WINDOW = 256, 30
BUDGETS_MB = (40.0, 30.0)
#: glibc: serve blocks >= 128 KiB from mmap and return them on free. By default glibc raises this
#: threshold as large blocks are freed, so freed activations stay in the heap and count in RSS.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _model(form: str = "inference"):
    """The published ``base`` network, random init (seed 0), in its inference form (what eval
    mode runs) or, ``form="training"``, with the layers as training runs them (full attention:
    the model before issue #21)."""
    torch.manual_seed(0)
    model = create_model("base")
    model.inference_form = form == "inference"
    return model


def run_profile(args) -> dict:
    report = profile_inference(
        _model(args.form), precisions=[args.precision], windows=args.windows, batch_sizes=args.batch_sizes,
        device=args.device, warmup=args.warmup, repeats=args.repeats,
        rss_source={"size": "base"} if args.rss and args.form == "inference" else None,
        model_info={"source": "random-init", "size": "base", "form": args.form},
        progress=lambda line: print(f"  {line}", flush=True))
    stem = (f"profile_{args.device}_{args.precision}_w{'-'.join(map(str, args.windows))}"
            f"_t{torch.get_num_threads()}{f'-{args.tag}' if args.tag else ''}")
    out = RESULTS / f"{stem}.json"
    report.save_json(out)
    print(f"{'W':>3} {'batch':>5} {'peak MB':>8} {'weights':>8} {'activ.':>8} {'worksp.':>8} "
          f"{'RSS MB':>7} {'p50 ms':>8} {'p95 ms':>8} {'win/s':>7}")
    for r in report.rows:
        m, lat = r.memory, r.latency
        print(f"{r.window:>3} {r.batch:>5} {m.peak / MB:8.1f} {m.weights / MB:8.2f} "
              f"{m.activations / MB:8.1f} {m.workspace / MB:8.1f} "
              f"{(r.rss or 0) / MB:7.1f} {lat.p50_ms if lat else 0:8.2f} "
              f"{lat.p95_ms if lat else 0:8.2f} {lat.throughput if lat else 0:7.0f}")
    for f in report.fits:
        print(f"fit {f.precision} w{f.window}: {f.memory.base / MB:.2f} MB + "
              f"{f.memory.per_sample / MB:.4f} MB x batch (R^2 {f.memory.r2:.4f})")
    if args.plot:
        plot_profile(report, RESULTS / f"{stem}.png")
    print(f"wrote {out}")
    return report.to_dict()


def _time_calls(runtimes: dict[str, TorchRuntime], x: np.ndarray, repeats: int) -> dict:
    """Median seconds per call, the runtimes interleaved so drifts in load hit all alike."""
    times: dict[str, list[float]] = {k: [] for k in runtimes}
    for e in runtimes.values():  # warm-up, and the auto runtimes' calibration
        e(x)
        e(x)
    for _ in range(repeats):
        for name, e in runtimes.items():
            t0 = time.perf_counter()
            e(x)
            times[name].append(time.perf_counter() - t0)
    return {k: {"median_s": float(np.median(v)), "p95_s": float(np.percentile(v, 95)),
                "throughput": len(x) / float(np.median(v))} for k, v in times.items()}


def run_chunking(args) -> dict:
    model = _model()
    x = make_input(TARGET_BATCH, TARGET_WINDOW, model.config.in_features).numpy()
    runtimes = {"unchunked": TorchRuntime(model, batch_size=TARGET_BATCH)}
    for budget in BUDGETS_MB:
        runtimes[f"auto {budget:g} MB"] = TorchRuntime(model, batch_size="auto",
                                                       memory_budget_mb=budget)
    t0 = time.perf_counter()
    runtimes[f"auto {BUDGETS_MB[0]:g} MB"](x)
    calibration_s = time.perf_counter() - t0
    for e in runtimes.values():  # calibrate every auto runtime before measuring it
        e(x)
    weights = weight_bytes(runtimes["unchunked"].model)
    rows = {}
    for name, e in runtimes.items():
        transient = measure_call_peak(lambda e=e: e(x), args.device)
        rows[name] = {"chunk": e.last_batch_size, "peak": weights + transient,
                      "weights": weights, "transient": transient,
                      "fit": e.memory_fit.to_dict() if e.memory_fit else None}
    speed = _time_calls(runtimes, x, args.repeats)
    base = speed["unchunked"]["throughput"]
    for name, row in rows.items():
        row.update(speed[name], throughput_ratio=speed[name]["throughput"] / base)
    threads = torch.get_num_threads()
    rss = {"unchunked": measure_rss({"size": "base"}, batches=(TARGET_BATCH,), mode="runtime",
                                    chunk=TARGET_BATCH, threads=threads)}
    for budget in BUDGETS_MB:
        rss[f"auto {budget:g} MB"] = measure_rss({"size": "base"}, batches=(TARGET_BATCH,),
                                                 mode="runtime", chunk="auto", budget_mb=budget,
                                                 threads=threads)
    for name, m in rss.items():
        rows[name]["rss"] = m.stages
        rows[name]["rss_final"] = m.final
    glibc = {name: measure_rss({"size": "base"}, batches=(TARGET_BATCH,), mode="runtime",
                               chunk=chunk, budget_mb=budget, threads=threads, env=MALLOC_ENV)
             for name, chunk, budget in (("unchunked", TARGET_BATCH, None),
                                         *((f"auto {b:g} MB", "auto", b) for b in BUDGETS_MB))}
    for name, m in glibc.items():
        rows[name]["rss_mmap_threshold"] = m.stages
    result = {"machine": machine_info(args.device), "batch": TARGET_BATCH,
              "window": TARGET_WINDOW, "precision": "fp32", "repeats": args.repeats,
              "calibration_s": calibration_s, "malloc_env": MALLOC_ENV, "runtimes": rows}
    print(f"batch {TARGET_BATCH}, window {TARGET_WINDOW}, FP32, {args.device}, "
          f"{torch.get_num_threads()} threads; first auto call (calibration) {calibration_s:.1f} s")
    print(f"{'runtime':<14} {'chunk':>5} {'peak MB':>8} {'win/s':>7} {'ratio':>6} {'RSS MB':>7} "
          f"{'RSS before':>10} {'end: anon':>9} {'file':>6} {'RSS mmap-thr.':>13}")
    for name, r in rows.items():
        end = r["rss_final"]
        print(f"{name:<14} {r['chunk']:>5} {r['peak'] / MB:8.1f} {r['throughput']:7.0f} "
              f"{r['throughput_ratio']:6.3f} {r['rss']['inference'] / MB:7.1f} "
              f"{r['rss']['prepared'] / MB:10.1f} {end.get('RssAnon', 0) / MB:9.1f} "
              f"{end.get('RssFile', 0) / MB:6.1f} "
              f"{r['rss_mmap_threshold']['inference'] / MB:13.1f}")
    out = RESULTS / f"chunking_{args.device}_t{threads}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="section", required=True)
    p = sub.add_parser("profile", help="every window x batch of one precision")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--windows", type=lambda s: [int(v) for v in s.split(",")], default=[30, 50])
    p.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                   default=list(DEFAULT_BATCH_SIZES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-rss", dest="rss", action="store_false")
    p.add_argument("--plot", action="store_true")
    p.add_argument("--form", choices=("inference", "training"), default="inference",
                   help="eval mode's inference form (default) or the layers as training runs "
                        "them (full attention; its RSS is not measured: a fresh process builds "
                        "the inference form)")
    p.add_argument("--tag", default="", help="suffix of the result file's name")
    c = sub.add_parser("chunking", help="batch 256 unchunked vs planner-sized chunks")
    c.add_argument("--repeats", type=int, default=7)
    for s in (p, c):
        s.add_argument("--device", default="cpu")
        s.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    set_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (run_profile if args.section == "profile" else run_chunking)(args)


if __name__ == "__main__":
    main()
