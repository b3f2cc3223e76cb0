"""Summarise the training campaign: mean +- std per (subset, loss) over seeds.

    python benchmarks/results_table.py [--campaign runs/campaign] [--json benchmarks/results/campaign.json]  (JSON only when asked)

Reads each run's ``metrics.json`` (validation, training time) and ``test/metrics.json``
(written by ``amnl evaluate --out``), prints a Markdown table and writes the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def _fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def collect(campaign: Path) -> list[dict]:
    rows = []
    for summary in sorted(campaign.glob("*/metrics.json")):
        run = summary.parent
        s = json.loads(summary.read_text())
        test_file = run / "test" / "metrics.json"
        if s.get("interrupted") or not test_file.is_file():
            continue
        rows.append({"run": run.name, **s, "test": json.loads(test_file.read_text())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=Path, default=Path("runs/campaign"))
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the rows here (e.g. benchmarks/results/campaign.json)")
    args = ap.parse_args()
    rows = collect(args.campaign)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["subset"], r["loss"])].append(r)
    print("| subset | loss | seeds | val RMSE | test RMSE | test NASA | NASA / engine | raw-truth RMSE "
          "| all-windows RMSE | health acc | best epoch | s / epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (subset, loss), rs in sorted(groups.items()):
        t = [r["test"] for r in rs]
        print(f"| {subset} | {loss} | {len(rs)} ({', '.join(str(r['seed']) for r in rs)}) "
              f"| {_fmt([r['val_rmse'] for r in rs])} | {_fmt([x['rmse'] for x in t])} "
              f"| {_fmt([x['nasa'] for x in t], 0)} | {_fmt([x['nasa_mean'] for x in t])} "
              f"| {_fmt([x['rmse_raw'] for x in t])} | {_fmt([x['all_windows_rmse'] for x in t])} "
              f"| {_fmt([x['health_accuracy'] for x in t], 3)} "
              f"| {', '.join(str(r['best_epoch']) for r in rs)} "
              f"| {_fmt([r['mean_epoch_seconds'] for r in rs], 0)} |")
    print()
    print("| run | val RMSE | test RMSE | NASA | epochs run | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['val_rmse']:.2f} | {r['test']['rmse']:.2f} | {r['test']['nasa']:.0f} "
              f"| {r['epochs_run']} | {r['seconds']:.0f} |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
