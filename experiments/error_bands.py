"""Error by true-RUL band of a finished evaluation (reporting only, after model selection).

    python experiments/error_bands.py runs/campaign2/FD003-amnl-s0/test/predictions.csv [--worst 5]

Reads the per-engine CSV that ``amnl evaluate --out`` writes (true RUL capped at 125) and prints
RMSE (bias) per band, engines per band, the worst engines and the RMSE without them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from val_diagnostics import BANDS, band_header, band_table  # beside this script

from amnl.evaluate.report import read_predictions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--worst", type=int, default=5)
    args = ap.parse_args()
    unit, truth, pred = read_predictions(args.csv)
    err = pred - truth
    counts = [int(((truth >= lo) & (truth < hi)).sum()) for lo, hi in BANDS]
    print(band_header("engines | RMSE"))
    print(f"| {len(unit)} | {np.sqrt(np.mean(err ** 2)):.2f} | {band_table(pred, truth)} |")
    print("engines per band: " + ", ".join(str(c) for c in counts))
    worst = np.argsort(-np.abs(err))[: args.worst]
    print("worst engines (unit: true -> predicted): " + ", ".join(
        f"{unit[i]}: {truth[i]:.0f} -> {pred[i]:.1f}" for i in worst))
    keep = np.setdiff1d(np.arange(len(unit)), worst)
    print(f"RMSE without them: {np.sqrt(np.mean(err[keep] ** 2)):.2f}")


if __name__ == "__main__":
    main()
