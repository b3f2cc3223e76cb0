"""Validation-only diagnostics of trained runs: error and bias by true-RUL band, and the RMSE of
the runs' averaged predictions (a seed/recipe ensemble). Never reads the test files.

    python benchmarks/val_diagnostics.py RUN [RUN ...] [--data-dir ../shared/data/CMAPSS]
        [--train-engines]

Every run must share the validation split (same subset, ``val_fraction`` and ``split_seed``).
"""

from __future__ import annotations

import argparse

import numpy as np

from amnl.data.cmapss import load_subset
from amnl.model.inference import predict_windows
from amnl.train.checkpoint import load_run

BANDS = [(0, 30), (30, 60), (60, 90), (90, 125), (125, 126)]


def band_table(pred: np.ndarray, truth: np.ndarray) -> str:
    err = pred - truth
    cells = []
    for lo, hi in BANDS:
        m = (truth >= lo) & (truth < hi)
        cells.append(f"{np.sqrt(np.mean(err[m] ** 2)):.2f} ({err[m].mean():+.2f})")
    return " | ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--data-dir", default="../shared/data/CMAPSS")
    ap.add_argument("--train-engines", action="store_true",
                    help="also score the training engines (under- vs over-fitting)")
    args = ap.parse_args()
    print("| run | engines | RMSE | " + " | ".join(
        f"RUL {lo}-{hi if hi < 126 else 'cap'}: RMSE (bias)" for lo, hi in BANDS) + " |")
    print("|---|---|---:|" + "---:|" * len(BANDS))
    preds, truth, split = [], None, None
    for run in args.runs:
        cfg, pre, model = load_run(run)
        table = load_subset(args.data_dir, cfg.data.subset, test=False).train
        train_units, val_units = pre.split_units(table)
        key = (cfg.data.subset, tuple(val_units))
        if split is not None and key != split:
            raise SystemExit(f"{run}: another validation split than {args.runs[0]}")
        split = key
        parts = [("val", val_units)] + ([("train", train_units)] if args.train_engines else [])
        for name, units in parts:
            w = pre.windows(table, units=units)
            p = predict_windows(model, w.arrays())[0]
            print(f"| {run} | {name} | {np.sqrt(np.mean((p - w.rul) ** 2)):.2f} | "
                  f"{band_table(p, w.rul)} |")
            if name == "val":
                preds.append(p)
                truth = w.rul
    if len(preds) > 1:
        mean = np.mean(preds, axis=0)
        print(f"| mean of {len(preds)} runs | val | {np.sqrt(np.mean((mean - truth) ** 2)):.2f} | "
              f"{band_table(mean, truth)} |")


if __name__ == "__main__":
    main()
