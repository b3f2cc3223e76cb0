"""Validation-only diagnostics of trained runs: error and bias by true-RUL band, and the RMSE of
the runs' averaged predictions (a seed/recipe ensemble). Never reads the test files.

    python benchmarks/val_diagnostics.py RUN [RUN ...] [--data-dir ../shared/data/CMAPSS]
        [--train-engines] [--from-cycle N]

Every run must share the validation split (same subset, ``val_fraction`` and ``split_seed``).
By default each run is scored on its own windows (every window that fits, as in training).
``--from-cycle N`` scores every run on the same points instead, whatever its window length:
each validation engine cut after every cycle N, N+1, ... (0-based), the last window of each cut
(padded with the first cycle where the cut is shorter than the window), as the test files
present engines. Use it to compare runs with different windows.
"""

from __future__ import annotations

import argparse

import numpy as np

from amnl.data.cmapss import EngineTable, load_subset
from amnl.features.pipeline import Windows
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


def cut_windows(w: Windows, starts: np.ndarray, lengths: np.ndarray, window: int,
                from_cycle: int, rul_cap: float) -> tuple[np.ndarray, np.ndarray]:
    """Last window of every cut of every engine after cycle ``from_cycle``; and the capped RUL."""
    xs, ruls = [], []
    for start, length in zip(starts, lengths, strict=True):
        ends = start + np.arange(min(from_cycle, length - 1), length)
        idx = np.maximum(ends[:, None] - (window - 1) + np.arange(window)[None, :], start)
        xs.append(w.x[idx])
        ruls.append(np.minimum(start + length - 1 - ends, rul_cap))
    return np.concatenate(xs), np.concatenate(ruls).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--data-dir", default="../shared/data/CMAPSS")
    ap.add_argument("--train-engines", action="store_true",
                    help="also score the training engines (under- vs over-fitting)")
    ap.add_argument("--from-cycle", type=int, default=None,
                    help="score every engine cut after each cycle >= N (test-like, any window)")
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
            if args.from_cycle is None:
                x, rul = w.arrays(), w.rul
            else:
                kept = EngineTable(table.path, table.values[np.isin(table.unit, units)])
                x, rul = cut_windows(w, kept.starts, kept.lengths, cfg.data.window,
                                     args.from_cycle, cfg.data.rul_cap)
            p = predict_windows(model, x)[0]
            print(f"| {run} | {name} | {np.sqrt(np.mean((p - rul) ** 2)):.2f} | "
                  f"{band_table(p, rul)} |")
            if name == "val":
                preds.append(p)
                truth = rul
    if len(preds) > 1:
        mean = np.mean(preds, axis=0)
        print(f"| mean of {len(preds)} runs | val | {np.sqrt(np.mean((mean - truth) ** 2)):.2f} | "
              f"{band_table(mean, truth)} |")


if __name__ == "__main__":
    main()
