"""Copy the best campaign run per subset (by validation RMSE, never test) into the package.

    python scripts/bundle_models.py [--campaign runs/campaign] [--loss amnl]

Weights are stored in FP16 safetensors with the run's config and preprocessing state in
``src/amnl/weights/<FD00x>/``, plus ``source.json`` naming the run and its validation metrics.
A subset's bundled model is replaced only when the new run is better on validation.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from amnl.data.cmapss import SUBSETS
from amnl.features.pipeline import Preprocessor
from amnl.train.checkpoint import (
    CONFIG_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    load_run,
    save_weights,
)

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "amnl" / "weights"


def best_run(campaign: Path, subset: str, loss: str) -> tuple[Path, dict] | None:
    found = []
    for summary in campaign.glob(f"{subset}-{loss}-s*/{SUMMARY_FILE}"):
        s = json.loads(summary.read_text())
        if not s.get("interrupted") and s.get("val_rmse") is not None:
            found.append((s["val_rmse"], summary.parent, s))
    if not found:
        return None
    _, run, s = min(found, key=lambda t: t[0])
    return run, s


def bundle(run: Path, summary: dict, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _, _, model = load_run(run)
    save_weights(model, tmp / WEIGHTS_FILE, dtype=torch.float16)
    for f in (CONFIG_FILE, Preprocessor.STATE_FILE, Preprocessor.META_FILE):
        shutil.copy2(run / f, tmp / f)
    source = {"run": run.name, **{k: v for k, v in summary.items()
                                  if k.startswith("val_") or k in ("best_epoch", "seed", "loss")},
              "weights": "fp16"}
    (tmp / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=Path, default=Path("runs/campaign"))
    ap.add_argument("--loss", default="amnl")
    args = ap.parse_args()
    for subset in SUBSETS:
        found = best_run(args.campaign, subset, args.loss)
        if found is None:
            print(f"{subset}: no finished run")
            continue
        run, summary = found
        dest = PACKAGE_WEIGHTS / subset
        current = dest / "source.json"
        if current.is_file() and json.loads(current.read_text())["val_rmse"] <= summary["val_rmse"]:
            print(f"{subset}: bundled model is as good on validation; kept")
            continue
        bundle(run, summary, dest)
        print(f"{subset}: bundled {run.name} (validation RMSE {summary['val_rmse']:.2f})")


if __name__ == "__main__":
    main()
