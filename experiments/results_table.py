"""Summarise training campaigns and sweeps: mean +- std per subset and loss (or variant) over seeds.

    python experiments/results_table.py [--campaign runs/campaign ...] [--by loss|variant] [--seeds S ...]
        [--agreement] [--json FILE]

Reads each run's ``metrics.json`` (validation, training time) and ``test/metrics.json``
(written by ``amnl evaluate --out``) in every folder given, prints Markdown tables and, when
asked, writes the raw numbers as JSON. ``--by variant`` groups runs by their name without
subset and seed (``FD001-lr2e-3-s4`` -> ``lr2e-3``), as ``experiments/sweep.py`` names them.
``--agreement`` reports, after the fact, how well validation RMSE ranks test RMSE (Spearman,
per subset, over runs and over the groups' means) and the best test RMSE of any run: a check
of the selection protocol, never an input to it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np


def _fmt(values: list[float | None], digits: int = 2) -> str:
    values = [v for v in values if v is not None]  # e.g. all-windows RMSE of an evaluation without it
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


def group_name(row: dict, by: str) -> str:
    """The run's loss, or its variant: the run directory name without subset and seed."""
    if by == "loss":
        return row["loss"]
    return re.sub(r"-s\d+$", "", row["run"]).removeprefix(f"{row['subset']}-")


def grouped(rows: list[dict], by: str) -> list[tuple[str, str, list[dict]]]:
    """(subset, group, runs), each subset's groups by mean validation RMSE."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["subset"], group_name(r, by))].append(r)
    order = sorted(groups, key=lambda k: (k[0], np.mean([r["val_rmse"] for r in groups[k]])))
    return [(subset, name, groups[(subset, name)]) for subset, name in order]


def print_groups(rows: list[dict], by: str = "loss") -> None:
    print(f"| subset | {by} | seeds | val RMSE | test RMSE | test NASA | NASA / engine | raw-truth RMSE "
          "| all-windows RMSE | health acc | best epoch | s / epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    secs_digits = 0 if by == "loss" else 1  # sweep epochs take seconds, not tens of seconds
    for subset, name, rs in grouped(rows, by):
        t = [r["test"] for r in rs]
        print(f"| {subset} | {name} | {len(rs)} ({', '.join(str(r['seed']) for r in rs)}) "
              f"| {_fmt([r['val_rmse'] for r in rs])} | {_fmt([x['rmse'] for x in t])} "
              f"| {_fmt([x['nasa'] for x in t], 0)} | {_fmt([x['nasa_mean'] for x in t])} "
              f"| {_fmt([x['rmse_raw'] for x in t])} | {_fmt([x.get('all_windows_rmse') for x in t])} "
              f"| {_fmt([x['health_accuracy'] for x in t], 3)} "
              f"| {', '.join(str(r['best_epoch']) for r in rs)} "
              f"| {_fmt([r['mean_epoch_seconds'] for r in rs], secs_digits)} |")


def rank_agreement(pairs: list[tuple[float, float]]) -> str:
    """Spearman correlation of (validation, test) pairs; "-" for fewer than three."""
    from scipy.stats import spearmanr

    return f"{spearmanr(*zip(*pairs))[0]:.2f}" if len(pairs) >= 3 else "-"


def print_agreement(rows: list[dict], by: str) -> None:
    print("| subset | runs | Spearman val/test, runs | groups | Spearman, group means | best test RMSE (run) |")
    print("|---|---|---|---|---|---|")
    for subset in sorted({r["subset"] for r in rows}):
        rs = [r for r in rows if r["subset"] == subset]
        groups = [g for s, _, g in grouped(rs, by)]
        means = [(np.mean([r["val_rmse"] for r in g]), np.mean([r["test"]["rmse"] for r in g]))
                 for g in groups]
        best = min(rs, key=lambda r: r["test"]["rmse"])
        runs = [(r["val_rmse"], r["test"]["rmse"]) for r in rs]
        print(f"| {subset} | {len(rs)} | {rank_agreement(runs)} | {len(groups)} "
              f"| {rank_agreement(means)} | {best['test']['rmse']:.2f} ({best['run']}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=Path, nargs="+", default=[Path("runs/campaign")],
                    help="run folders (campaigns, sweeps); their runs are pooled")
    ap.add_argument("--by", choices=("loss", "variant"), default="loss")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="only runs of these seeds (e.g. a control's seeds that a variant also has)")
    ap.add_argument("--agreement", action="store_true",
                    help="also report how validation RMSE ranks test RMSE (after the fact)")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the rows here (e.g. benchmarks/results/campaign.json)")
    args = ap.parse_args()
    rows = [r for campaign in args.campaign for r in collect(campaign)
            if args.seeds is None or r["seed"] in args.seeds]
    print_groups(rows, args.by)
    print()
    print("| run | val RMSE | test RMSE | NASA | epochs run | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['val_rmse']:.2f} | {r['test']['rmse']:.2f} | {r['test']['nasa']:.0f} "
              f"| {r['epochs_run']} | {r['seconds']:.0f} |")
    if args.agreement:
        print()
        print_agreement(rows, args.by)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
