"""Validation-only diagnostics of trained runs: RMSE, health-class-balanced RMSE, error and bias
by true-RUL band, and the RMSE of the runs' averaged predictions (a seed/recipe ensemble; with
``--train-engines`` on the training engines too: how closely a set of distillation teachers
fits the labels it would replace). Never reads the test files.

    python experiments/val_diagnostics.py RUN [RUN ...] [--data-dir ../shared/data/CMAPSS]
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

from amnl.data.cmapss import load_subset
from amnl.evaluate.metrics import balanced_rmse
from amnl.inference.runtime import predict_windows
from amnl.rundir import load_run

BANDS = [(0, 30), (30, 60), (60, 90), (90, 125), (125, 126)]


def band_header(first: str) -> str:
    """Markdown header (and rule) of a band table whose leading columns are ``first``."""
    cols = first.count("|") + 1
    return (f"| {first} | " + " | ".join(f"RUL {lo}-{hi if hi < 126 else 'cap'}: RMSE (bias)"
                                         for lo, hi in BANDS) + " |\n"
            + "|" + "---|" * (cols - 1) + "---:|" + "---:|" * len(BANDS))


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
    ap.add_argument("--from-cycle", type=int, default=None,
                    help="score every engine cut after each cycle >= N (test-like, any window)")
    args = ap.parse_args()
    print(band_header("run | engines | RMSE | balanced RMSE"))
    preds, truth, split = {}, {}, None  # per part (val, train): every run's predictions, labels
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
            w = pre.windows(table, units=units, first_end=args.from_cycle)
            p = predict_windows(model, w.arrays())[0]
            print(f"| {run} | {name} | {np.sqrt(np.mean((p - w.rul) ** 2)):.2f} | "
                  f"{balanced_rmse(p, w.rul, w.health):.2f} | {band_table(p, w.rul)} |")
            preds.setdefault(name, []).append(p)
            truth[name] = w
    for name, ps in preds.items():  # the runs' averaged predictions (an ensemble)
        if len(ps) > 1:
            mean, w = np.mean(ps, axis=0), truth[name]
            print(f"| mean of {len(ps)} runs | {name} | {np.sqrt(np.mean((mean - w.rul) ** 2)):.2f} | "
                  f"{balanced_rmse(mean, w.rul, w.health):.2f} | {band_table(mean, w.rul)} |")


if __name__ == "__main__":
    main()
