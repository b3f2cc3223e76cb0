"""How sharply each run's validation curve dips at the epoch early stopping kept: validation RMSE
at the epochs within ``--around`` of the best, averaged, minus the best. A rough gauge of how much
choosing the epoch on the validation engines flatters the kept score (docs/results.md,
"Distillation"). Reads only each run's ``metrics.jsonl``.

    python experiments/selection_gap.py RUN [RUN ...] [--around 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from amnl.rundir import METRICS_LOG


def gap(run: Path, around: int) -> tuple[int, float, float]:
    """(best epoch, best validation RMSE, mean over the neighbouring epochs minus the best)."""
    val = [json.loads(line)["val_rmse"] for line in (run / METRICS_LOG).read_text().splitlines()]
    b = int(np.argmin(val))
    near = [val[i] for i in range(max(0, b - around), min(len(val), b + around + 1)) if i != b]
    return b + 1, val[b], float(np.mean(near)) - val[b] if near else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--around", type=int, default=2, help="epochs either side of the best")
    args = ap.parse_args()
    gaps = []
    print("| run | best epoch | val RMSE | neighbours minus best |\n|---|---:|---:|---:|")
    for run in args.runs:
        if not (run / METRICS_LOG).is_file():
            continue  # sweep logs and other files beside the run directories
        epoch, best, g = gap(run, args.around)
        gaps.append(g)
        print(f"| {run.name} | {epoch} | {best:.2f} | {g:.2f} |")
    print(f"mean over {len(gaps)} runs: {np.nanmean(gaps):.2f} (median {np.nanmedian(gaps):.2f})")


if __name__ == "__main__":
    main()
