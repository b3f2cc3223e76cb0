"""Resident memory of ``amnl serve`` per asset, after a restart (#26 item 15).

For each fleet size, a database of that many assets (each with a few C-MAPSS cycles, every one
predicted) is made once; then a fresh process starts the service on it (model, threads, every
asset resumed) and reports its RSS, with ``--max-assets-in-memory`` unbounded and bounded. The
per-asset figure is the slope against the empty database::

    python benchmarks/serve_memory.py --data-dir ../shared/data/CMAPSS --sizes 0 10000 50000 \\
        --bound 10000 --out benchmarks/results/serve-memory-<date>-<cpu>.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import write_results  # noqa: E402

#: Cycles stored per asset (the state snapshot's size does not depend on it).
CYCLES = 3
#: Readings per fleet post while filling a database.
POST = 2000

_CHILD = r"""
import json, sys, time
from amnl.config import InferenceConfig
from amnl.serve.service import FleetService
from amnl.serve.settings import ServeSettings

db, bound = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
service = FleetService(ServeSettings(inference=InferenceConfig(runtime="onnx", threads=1),
                                     db=db, model=sys.argv[3], max_assets_in_memory=bound))
service.start()
start_s = time.perf_counter() - t0
assert service.wait_predicted(600)
import gc; gc.collect()
rss = int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
print(json.dumps({"rss_kb": rss, "start_s": start_s, "assets": len(service.writer.entries),
                  "in_memory": service.writer.entries.in_memory,
                  "alert_states": len(service.writer.alerts.states)}))
service.stop()
"""


def fill(db: str, n: int, model: str, data_dir: Path) -> None:
    """``n`` assets of ``CYCLES`` cycles each (FD001 test engines, repeated), all predicted."""
    import numpy as np

    from amnl.config import InferenceConfig
    from amnl.data.cmapss import COLUMNS, load_subset
    from amnl.features.online import READING_COLUMNS
    from amnl.serve.service import FleetService
    from amnl.serve.settings import ServeSettings
    from amnl.serve.writer import AssetReadings

    test = load_subset(data_dir, "FD001", train=False).test
    raw = [COLUMNS.index(c) for c in READING_COLUMNS]
    units = [test.values[test.unit == u][:CYCLES] for u in test.units]
    service = FleetService(ServeSettings(inference=InferenceConfig(runtime="onnx", threads=1),
                                         db=db, model=model))
    service.start()
    try:
        for k in range(CYCLES):
            for lo in range(0, n, POST):
                ids = range(lo, min(lo + POST, n))
                rows = np.stack([units[i % len(units)][k] for i in ids])
                parts = [AssetReadings(f"a{i}", rows[j: j + 1, 1].astype(np.int64),
                                       rows[j: j + 1, raw], [["body", "readings", j]])
                         for j, i in enumerate(ids)]
                service.writer.ingest(parts).result(600)
        assert service.wait_predicted(1800)
    finally:
        service.stop()


def measure(db: str, bound: int, model: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, db, str(bound), model],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu() -> str:
    text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return " ".join(fields.get(k, "?").strip() for k in ("Model name", "CPU(s)"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--model", default="FD001")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 10_000, 50_000])
    ap.add_argument("--bound", type=int, default=10_000,
                    help="--max-assets-in-memory of the bounded runs")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            db = str(Path(tmp) / f"fleet-{n}.db")
            t0 = time.perf_counter()
            fill(db, n, args.model, args.data_dir)
            fill_s = time.perf_counter() - t0
            for bound in sorted({max(args.sizes) * 2, args.bound}, reverse=True):
                m = measure(db, bound, args.model)
                rows.append({"assets": n, "max_assets_in_memory": bound, "fill_s": fill_s, **m})
                print(json.dumps(rows[-1]), flush=True)
    base = {r["max_assets_in_memory"]: r["rss_kb"] for r in rows if r["assets"] == 0}
    for r in rows:
        if r["assets"]:
            r["kb_per_asset"] = (r["rss_kb"] - base[r["max_assets_in_memory"]]) / r["assets"]
    print(f"{'assets':>8} {'bound':>8} {'in memory':>10} {'RSS MB':>8} {'kB/asset':>9} {'start s':>8}")
    for r in rows:
        print(f"{r['assets']:>8} {r['max_assets_in_memory']:>8} {r['in_memory']:>10} "
              f"{r['rss_kb'] / 1024:>8.0f} {r.get('kb_per_asset', 0):>9.2f} {r['start_s']:>8.1f}")
    write_results({"cpu": cpu(), "cycles_per_asset": CYCLES, "rows": rows}, args.out,
                  "serve-memory")


if __name__ == "__main__":
    main()
