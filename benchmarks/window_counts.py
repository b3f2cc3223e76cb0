"""Window counts per subset and the time to build them (issue: data pipeline).

    python benchmarks/window_counts.py [--data-dir ../shared/data/CMAPSS] [--window 30]

Prints a table and writes ``benchmarks/results/window_counts.json`` (with the machine: the
timings are this CPU's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from amnl.config import DataConfig
from amnl.data.cmapss import SUBSETS, load_subset
from amnl.data.paths import resolve_data_dir
from amnl.features.pipeline import Preprocessor
from amnl.profiling.machine import machine_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/window_counts.json"))
    args = ap.parse_args()
    rows = []
    for name in SUBSETS:
        t0 = time.perf_counter()
        sub = load_subset(resolve_data_dir(args.data_dir), name)
        t_read = time.perf_counter() - t0
        pre = Preprocessor(DataConfig(subset=name, window=args.window))
        tr_units, val_units = pre.split_units(sub.train)
        t0 = time.perf_counter()
        pre.fit(sub.train, units=tr_units)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        train = pre.windows(sub.train, units=tr_units)
        val = pre.windows(sub.train, units=val_units)
        test_all = pre.windows(sub.test, rul_after_end=sub.rul)
        test_last = pre.windows(sub.test, last_only=True, rul_after_end=sub.rul)
        x = train.arrays()
        t_win = time.perf_counter() - t0
        short = int((sub.test.lengths < args.window).sum())
        rows.append({"subset": name, "conditions": pre.conditions_.n_conditions_,
                     "train_windows": len(train), "val_windows": len(val),
                     "train_engines": len(tr_units), "val_engines": len(val_units),
                     "test_windows": len(test_all), "test_engines": len(test_last),
                     "test_engines_padded": short, "train_tensor_mb": round(x.nbytes / 1e6, 1),
                     "read_s": round(t_read, 2), "fit_s": round(t_fit, 2),
                     "windows_s": round(t_win, 2)})
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine_info("cpu"), "window": args.window,
                                     "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
