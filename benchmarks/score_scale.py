"""Scale benchmark of ``amnl score``: synthetic fleets of 1 k, 10 k and 100 k assets, local and
Ray, side by side on this machine.

    python benchmarks/score_scale.py [--sizes 1000,10000,100000] [--out FILE.json]

Fleets come from :func:`amnl.data.synthetic.make_fleet` (lives of 60-120 cycles, about 90 rows
an asset: 9 M rows at 100 k), written as Parquet in row groups of 1,000 assets. Each run is a
fresh ``amnl score`` process (ONNX Runtime FP32, the bundled FD001 model's exported folder);
its wall time, input rows/s, scored cycles/s and the peak of the summed RSS of its process tree
(the driver and, with Ray, every worker: sampled every 0.2 s) are recorded. Every cycle is
scored for the 1 k fleet; the last cycle of each asset (``--cycles last``) for all sizes, since
every cycle of 9 M rows at the ~1,300 cycles/s one machine scores would take two hours. The
runtime alone (``amnl bench --runtimes onnx:fp32``'s throughput) is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from results_file import write_results

AMNL = [sys.executable, "-m", "amnl"]


def write_fleet(path: Path, n_assets: int, seed: int = 0) -> int:
    """A synthetic fleet as Parquet; returns its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from amnl.data.cmapss import COLUMNS
    from amnl.data.synthetic import make_fleet

    rows = 0
    with pq.ParquetWriter(path, _schema(pa, COLUMNS)) as w:
        for b in range(0, n_assets, 1000):
            n = min(1000, n_assets - b)
            engines = make_fleet(n, 1, seed=seed + b)
            values = np.concatenate(engines)
            asset = np.repeat([f"asset-{b + i:06d}" for i in range(n)], [len(e) for e in engines])
            cols = {"asset": asset, "cycle": values[:, 1].astype(np.int64),
                    **{c: values[:, i] for i, c in enumerate(COLUMNS) if i > 1}}
            w.write_table(pa.table(cols))
            rows += len(values)
    return rows


def _schema(pa, columns):
    return pa.schema([("asset", pa.string()), ("cycle", pa.int64()),
                      *((c, pa.float64()) for c in columns[2:])])


def tree_rss(pid: int) -> int:
    """Summed RSS (bytes) of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(d))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(d)] = int(line.split()[1]) * 1024
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def run(cmd: list[str]) -> dict:
    peak = 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            done.wait(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    err = proc.communicate()[1]
    done.set()
    t.join()
    return {"seconds": time.perf_counter() - t0, "rc": proc.returncode,
            "peak_rss_mb": peak / 1e6, "stderr_tail": err.strip().splitlines()[-1:]}


def bench_throughput() -> float:
    """``amnl bench``'s ONNX Runtime FP32 throughput for the bundled FD001 model."""
    out = Path(tempfile.mkdtemp()) / "bench.json"
    subprocess.run([*AMNL, "bench", "--weights", "FD001", "--runtimes", "onnx:fp32", "--windows",
                    "30", "--no-rss", "--seconds", "2", "--out", str(out)], check=True,
                   capture_output=True)
    return float(json.loads(out.read_text())["rows"][0]["throughput"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--ray-sizes", default="1000,10000")
    ap.add_argument("--modes", default=None,
                    help="only these on:cycles pairs, e.g. local:last (default: all of them)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from amnl.export.onnx import export_run
    from amnl.profiling.machine import describe, machine_info
    from amnl.rundir import bundled_dir

    folder = Path(tempfile.mkdtemp(prefix="amnl-score-scale-"))
    model = folder / "model"
    export_run(bundled_dir("FD001"), model / "model.onnx")
    sizes = [int(s) for s in args.sizes.split(",")]
    ray_sizes = {int(s) for s in args.ray_sizes.split(",") if s}
    results = {"machine": machine_info(), "command": " ".join([os.path.relpath(sys.argv[0]),
                                                               *sys.argv[1:]]),
               "bench_onnx_fp32_windows_per_s": bench_throughput(), "rows": []}
    print(f"amnl bench onnx fp32: {results['bench_onnx_fp32_windows_per_s']:.0f} windows/s")
    try:
        for n in sizes:
            path = folder / f"fleet-{n}.parquet"
            rows = write_fleet(path, n)
            cases = [("local", "last")] + ([("ray", "last")] if n in ray_sizes else [])
            if n == sizes[0]:
                cases = [("local", "all"), ("ray", "all"), *cases]
            if args.modes:
                wanted = {tuple(m.split(":")) for m in args.modes.split(",")}
                cases = [c for c in cases if c in wanted]
            for on, cycles in cases:
                out = folder / f"out-{n}-{on}-{cycles}"
                r = run([*AMNL, "score", "-i", str(path), "-o", str(out), "--model", str(model),
                         "--cycles", cycles, "--on", on])
                scored = json.loads((out / "_SUCCESS").read_text())["rows"] if r["rc"] == 0 else 0
                row = {"assets": n, "rows": rows, "on": on, "cycles": cycles, **r,
                       "scored": scored, "input_rows_per_s": rows / r["seconds"],
                       "scored_per_s": scored / r["seconds"]}
                results["rows"].append(row)
                print(f"{n:>7} assets {rows:>9,} rows  {on:5s} {cycles:4s}  {r['seconds']:7.1f} s"
                      f"  {row['input_rows_per_s']:>9,.0f} rows/s  {row['scored_per_s']:>7,.0f} "
                      f"scored/s  peak {r['peak_rss_mb']:6.0f} MB  rc {r['rc']}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
            path.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(describe(results["machine"]))
    write_results(results, args.out, "score-scale")


if __name__ == "__main__":
    main()
