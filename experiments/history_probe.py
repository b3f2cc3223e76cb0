"""Does an engine's history beyond the window carry RUL information? A cheap probe on training
engines only (no test file is read).

    python experiments/history_probe.py [--subsets FD001 FD003] [--folds 5] [--data-dir DIR]

A gradient-boosted tree model (scikit-learn) predicts the capped RUL from summaries of each
training window, scored by cross-validation over whole engines (GroupKFold): the preprocessing is
fitted on each fold's training engines, exactly as ``amnl train`` fits it. Feature sets:

- ``window``: the smoothed sensors at the window's last cycle and their change over the window
  (last 10 cycles minus first 10), what a 30-cycle window shows;
- ``+age``: plus the cycle number (``data.cycle_feature``);
- ``+slow``: plus a slow smoothing of the sensors (``data.slow_smoothing``, about 50 cycles)
  and the last row's departure from it;
- ``+slow+age``: both (the ``hist`` variant of ``experiments/sweep.py``).

Prints RMSE over all held-out windows and the bias by true-RUL band, and writes
``benchmarks/results/history_probe.json``. Trees are not AMNL: the probe says whether the
information is there, the sweep whether the network uses it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import GroupKFold

from amnl.config import DataConfig
from amnl.data.cmapss import load_subset
from amnl.data.paths import resolve_data_dir
from amnl.features.pipeline import Preprocessor

SETS = {"window": (False, False), "+age": (False, True), "+slow": (True, False),
        "+slow+age": (True, True)}
BANDS = ((0, 30), (30, 60), (60, 90), (90, 125), (125, 126))


def summaries(x: np.ndarray, n_sensors: int, slow: bool, age: bool) -> np.ndarray:
    """Per window (N, W, F) -> last smoothed row, its change over the window, [slow row and the
    last row's departure from it], [age]."""
    fast = x[:, :, :n_sensors]
    parts = [fast[:, -1], fast[:, -10:].mean(1) - fast[:, :10].mean(1)]
    if slow:
        slow_row = x[:, -1, n_sensors:2 * n_sensors]
        parts += [slow_row, fast[:, -1] - slow_row]  # trees do not form differences themselves
    if age:
        parts.append(x[:, -1, -1:])
    return np.concatenate(parts, axis=1)


def probe(train, subset: str, folds: int, smoothing: float, slow_alpha: float) -> list[dict]:
    cfg = DataConfig(subset=subset, smoothing=smoothing, slow_smoothing=slow_alpha,
                     cycle_feature=True)
    n = len(Preprocessor(cfg).feature_names)  # the sensors; slow copies and age follow them
    units = train.units
    preds = {name: [] for name in SETS}
    truth = []
    for fit_idx, held_idx in GroupKFold(folds).split(units, groups=units):
        pre = Preprocessor(cfg).fit(train, units=units[fit_idx])
        w_fit = pre.windows(train, units=units[fit_idx])
        w_held = pre.windows(train, units=units[held_idx])
        x_fit, x_held = w_fit.arrays(), w_held.arrays()
        truth.append(w_held.rul)
        for name, (slow, age) in SETS.items():
            model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05,
                                                  max_leaf_nodes=15, min_samples_leaf=100,
                                                  random_state=0)
            model.fit(summaries(x_fit, n, slow, age), w_fit.rul)
            preds[name].append(model.predict(summaries(x_held, n, slow, age)))
    y = np.concatenate(truth)
    rows = []
    for name in SETS:
        err = np.concatenate(preds[name]) - y
        row = {"subset": subset, "features": name, "rmse": float(np.sqrt((err ** 2).mean()))}
        for lo, hi in BANDS:
            m = (y >= lo) & (y < hi)
            row[f"bias_{lo}_{hi}"] = float(err[m].mean()) if m.any() else None
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subsets", nargs="+", default=["FD001", "FD003"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--smoothing", type=float, default=0.1, help="data.smoothing of the window")
    ap.add_argument("--slow", type=float, default=0.02, help="data.slow_smoothing")
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/history_probe.json"))
    args = ap.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    rows = []
    print(f"{'subset':6} {'features':10} {'CV RMSE':>8}  bias by true RUL: "
          + " ".join(f"{lo}-{hi}" if hi < 126 else "capped" for lo, hi in BANDS), flush=True)
    for subset in args.subsets:
        train = load_subset(data_dir, subset, test=False).train
        for row in probe(train, subset, args.folds, args.smoothing, args.slow):
            rows.append(row)
            bias = " ".join(f"{row[f'bias_{lo}_{hi}']:+5.1f}" for lo, hi in BANDS)
            print(f"{subset:6} {row['features']:10} {row['rmse']:8.2f}  {bias}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"folds": args.folds, "smoothing": args.smoothing,
                                     "slow_smoothing": args.slow, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
