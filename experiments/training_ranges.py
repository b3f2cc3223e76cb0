"""Where the range checks of ``amnl.inference.checks`` come from: per bundled model and file,
the largest per-condition |z| of the model's inputs, the largest distance of a cycle's settings
from its condition centre, and the longest engine.

    python experiments/training_ranges.py --data-dir ../shared/data/CMAPSS \\
        [--out benchmarks/results/training-ranges.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/training-ranges.json"))
    args = ap.parse_args()

    from amnl.data.cmapss import SETTING_COLUMNS, load_subset
    from amnl.rundir import bundled_dir, load_config, load_preprocessor

    rows = []
    for name in ("FD001", "FD002", "FD003", "FD004"):
        d = bundled_dir(name)
        cfg = load_config(d)
        pre = load_preprocessor(d, cfg)
        subset = load_subset(args.data_dir, name)
        for kind, table in (("train", subset.train), ("test", subset.test)):
            cond, scaled = pre.scale(table)
            settings = table.columns(SETTING_COLUMNS)
            dev = np.abs(settings - pre.conditions_.centers_[cond]).max(0)
            row = {"model": name, "file": f"{kind}_{name}.txt", "max_abs_z": float(np.abs(scaled).max()),
                   "max_setting_deviation": dev.tolist(), "longest_engine": int(table.lengths.max())}
            rows.append(row)
            print(f"{name} {kind:5s} max|z| {row['max_abs_z']:5.2f}  settings max deviation "
                  f"{', '.join(f'{v:.4f}' for v in dev)}  longest engine {row['longest_engine']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
