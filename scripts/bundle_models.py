"""Copy the best campaign run per subset (by validation RMSE, never test) into the package.

    python scripts/bundle_models.py [--campaign runs/campaign] [--loss amnl]

Weights are stored in FP16 safetensors with the run's config and preprocessing state in
``src/amnl/weights/<FD00x>/``, plus ``source.json`` naming the run and its validation metrics.
Only runs of the recipe in ``configs/fd00x.json`` (seed and threads aside) are candidates, so
that the config retrains the bundled model's recipe (``--any-recipe`` lifts that). Runs are
ranked by the validation score their config selects with (``train.select_metric``).
A subset's bundled model is replaced only when the new run is better by that score on the
validation engines (same split settings; the training file only, never the test).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from amnl.config import RunConfig
from amnl.data.cmapss import SUBSETS, load_subset
from amnl.evaluate.evaluate import score_windows
from amnl.inference.runtime import predict_windows
from amnl.rundir import (
    CONFIG_FILE,
    PREPROCESS_FILES,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    load_run,
    save_weights,
)

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "amnl" / "weights"
RECIPES = Path(__file__).resolve().parents[1] / "configs"


def selection_key(cfg: RunConfig) -> str:
    """The summary key of the validation score a run was selected by (``val_rmse`` by default)."""
    return f"val_{cfg.train.select_metric}"


def best_run(campaign: Path, subset: str, loss: str, any_recipe: bool = False,
             ) -> tuple[Path, dict, str] | None:
    """The finished run of ``subset`` trained with ``loss`` with the best validation score
    (any run directory name: campaign runs and sweep variants alike), its summary and the
    score's key. Unless ``any_recipe``, only runs of the recipe in ``configs/fd00x.json``
    count, so that the bundled model is one that its config retrains."""
    found, other = [], 0
    recipe = RunConfig.load(RECIPES / f"{subset.lower()}.json").recipe()
    for summary in campaign.glob(f"{subset}-*/{SUMMARY_FILE}"):
        s = json.loads(summary.read_text())
        cfg = RunConfig.load(summary.parent / CONFIG_FILE)
        key = selection_key(cfg)
        if s.get("subset") != subset or s.get("loss") != loss or s.get("interrupted") \
                or s.get(key) is None:
            continue
        if not any_recipe and cfg.recipe() != recipe:
            other += 1
            continue
        found.append((s[key], summary.parent, s, key))
    if other:
        print(f"{subset}: {other} runs of other recipes than configs/{subset.lower()}.json left out")
    if not found:
        return None
    _, run, s, key = min(found, key=lambda t: t[0])
    return run, s, key


def bundled_score(dest: Path, key: str, data_dir: Path) -> float:
    """Validation score ``key`` of the bundled model: as recorded in its ``source.json`` (the
    training run's figure, like a new run's summary), else computed on its validation engines."""
    source = json.loads((dest / "source.json").read_text())
    if key in source:
        return source[key]
    cfg, pre, model = load_run(dest)
    table = load_subset(data_dir, cfg.data.subset, test=False).train
    _, val_units = pre.split_units(table)
    val = pre.windows(table, units=val_units)
    return score_windows(lambda x: predict_windows(model, x), val, prefix="val_")[key]


def bundle(run: Path, summary: dict, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _, _, model = load_run(run)
    save_weights(model, tmp / WEIGHTS_FILE, dtype=torch.float16)
    for f in PREPROCESS_FILES:
        shutil.copy2(run / f, tmp / f)
    kept = ("best_epoch", "seed", "loss", "machine", "device")
    source = {"run": run.name, **{k: v for k, v in summary.items()
                                  if k.startswith("val_") or k in kept},
              "weights": "fp16"}
    (tmp / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=Path, default=Path("runs/campaign"))
    ap.add_argument("--loss", default="amnl")
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"),
                    help="C-MAPSS folder (its training files score the bundled model)")
    ap.add_argument("--any-recipe", action="store_true",
                    help="Also consider runs whose config differs from configs/fd00x.json.")
    args = ap.parse_args()
    for subset in SUBSETS:
        found = best_run(args.campaign, subset, args.loss, args.any_recipe)
        if found is None:
            print(f"{subset}: no finished run")
            continue
        run, summary, key = found
        dest = PACKAGE_WEIGHTS / subset
        if (dest / WEIGHTS_FILE).is_file():
            old = bundled_score(dest, key, args.data_dir)
            if old <= summary[key]:
                print(f"{subset}: bundled model is as good on validation ({key} {old:.2f} <= "
                      f"{summary[key]:.2f} of {run.name}); kept")
                continue
            print(f"{subset}: {key} {summary[key]:.2f} of {run.name} against {old:.2f} bundled")
        if not (run / WEIGHTS_FILE).is_file():
            raise SystemExit(f"{subset}: the best run by validation, {run} ({summary[key]:.2f}), "
                             f"has no {WEIGHTS_FILE}; copy its weights back before bundling")
        bundle(run, summary, dest)
        print(f"{subset}: bundled {run.name} ({key} {summary[key]:.2f})")


if __name__ == "__main__":
    main()
