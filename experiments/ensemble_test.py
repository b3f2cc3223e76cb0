"""Test RMSE of runs and of their averaged predictions (a seed ensemble), from each run's
``test/predictions.csv`` written by ``amnl evaluate --out`` (true RUL already capped at 125).
A report, never a choice: the validation side of the same comparison is ``val_diagnostics.py``
(its "mean of N runs" row).

    python experiments/ensemble_test.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from amnl.evaluate.metrics import rmse
from amnl.evaluate.report import CSV_FILE, read_predictions


def read_run(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(true RUL, predicted RUL) per test engine, in unit order."""
    unit, truth, pred = read_predictions(run / "test" / CSV_FILE)
    order = np.argsort(unit)
    return truth[order], pred[order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    truth, preds, singles = None, [], []
    for run in args.runs:
        t, p = read_run(run)
        if truth is not None and not np.array_equal(t, truth):
            raise SystemExit(f"{run}: not the same test engines as {args.runs[0]}")
        truth = t
        preds.append(p)
        singles.append(rmse(p, t))
        print(f"{run.name}: test RMSE {singles[-1]:.2f}")
    spread = np.std(singles, ddof=1) if len(singles) > 1 else 0.0
    print(f"mean of the {len(preds)} runs' RMSE {np.mean(singles):.2f} ± {spread:.2f}; "
          f"RMSE of their averaged predictions {rmse(np.mean(preds, axis=0), truth):.2f}")


if __name__ == "__main__":
    main()
