"""Train a grid of recipe variants x seeds in parallel processes, then summarise it by validation.

    python experiments/sweep.py --out runs/sweep --subsets FD001 FD003 --seeds 0 1 2 3 4 \
        --variants r2l full b64 --parallel 12 --device cuda --launch-until 400 --stop-after 480

Each job is ``amnl train --config <configs/fd00x.json, or --base-rev's, with the variant's
changes> --seed S``, then ``amnl evaluate --all-windows --out <run>/test`` (test figures are
reported, never used to choose).
Jobs start seed by seed (every variant's seed 0 first), so a sweep cut short by
``--launch-until`` still has the same seeds for every variant. Jobs still running at
``--stop-after`` seconds get Ctrl-C (they leave a resumable checkpoint) and are left out of the
summary. Re-running skips finished runs. The summary (``results_table.py --by variant``: mean +-
std of validation RMSE per subset and variant, with the test figures beside them) is printed,
and its runs are written to ``<out>/sweep.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from results_table import collect, print_groups

from amnl.config import DataConfig, ModelConfig, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FIELDS = {name: {f.name for f in dataclasses.fields(klass)} for name, klass in
                 (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))}

LOWDROP = {"model.lstm_dropout": 0.1, "model.cnn_dropout": 0.05, "model.attn_dropout": 0.05}
NODROP = {"model.lstm_dropout": 0.0, "model.cnn_dropout": 0.0, "model.attn_dropout": 0.0}
HIST = {"data.cycle_feature": True, "data.slow_smoothing": 0.02}
#: Stands for ``<--teachers>/<subset>.npz``, or ``<subset>-split<K>.npz`` with ``data.split_seed``
#: K (files from ``amnl distill-targets`` over runs of that split).
TEACHERS = "<teachers>"
#: Stands for the subset's partner: the other file with as many operating conditions.
POOL = "<partner>"
PARTNERS = {"FD001": ["FD003"], "FD003": ["FD001"], "FD002": ["FD004"], "FD004": ["FD002"]}

# name -> changes to the subset's configs/fd00x.json ("section.field": value)
VARIANTS: dict[str, dict[str, object]] = {
    "r2l": {},                                            # the base configs (control)
    "r2l80": {"train.epochs": 80, "train.plateau_patience": 4, "train.early_stop_patience": 10},
    "full": {"train.max_train_windows": 0},               # every training window, every epoch
    "b64": {"train.batch_size": 64},
    "lr2e-3": {"train.lr": 2e-3},
    "baseline": {"train.loss": "baseline"},
    "lowdrop": LOWDROP,
    "lowdrop-lr2e-3": {**LOWDROP, "train.lr": 2e-3},
    "lowdrop-lr3e-3": {**LOWDROP, "train.lr": 3e-3},
    "nodrop-lr2e-3": {**NODROP, "train.lr": 2e-3},
    "wd1e-2": {"train.weight_decay": 1e-2},
    "smooth0.2": {"data.smoothing": 0.2},
    "w40": {"data.window": 40},
    "ema0.99": {"train.ema_decay": 0.99},
    # the engine's history beyond the window: its age, and a slow smoothing (~50 cycles)
    "age": {"data.cycle_feature": True},
    "slow": {"data.slow_smoothing": 0.02},
    "hist": HIST,
    "hist-lr1e-3": {**HIST, "train.lr": 1e-3},
    "hist-nodrop-lr2e-3": {**HIST, **NODROP, "train.lr": 2e-3},
    # on the history configs: the other losses of spec section 3, a longer window, a faster
    # slow smoothing (memory ~20 cycles)
    "normalized": {"train.loss": "amnl-normalized"},
    "gaba": {"train.loss": "gaba"},
    "grace": {"train.loss": "grace"},
    "slow0.05": {"data.slow_smoothing": 0.05},
    "slow0.05-normalized": {"data.slow_smoothing": 0.05, "train.loss": "amnl-normalized"},
    # distillation from the adopted config's seeds (--teachers): the RUL target mixes the label
    # with the teachers' mean prediction
    "distill0.5": {"train.distill": 0.5, "train.teacher_targets": TEACHERS},
    "distill1": {"train.distill": 1.0, "train.teacher_targets": TEACHERS},
    "noise0.05": {"train.noise_std": 0.05},               # Gaussian noise on the scaled inputs
    # train on the subset's engines and its partner's (same operating-condition regime)
    "pool": {"data.extra_train": POOL},
    "nopool": {"data.extra_train": []},                  # the subset's own engines only (campaign 6)
}
# Confirmation on other validation engines: "splitK" is the config with data.split_seed K (the
# control), "splitK-<variant>" the variant on the same split, to compare in pairs.
for _k in (1, 2, 3):
    VARIANTS[f"split{_k}"] = {"data.split_seed": _k}
    for _v in ("gaba", "slow0.05-normalized", "distill0.5", "distill1", "nopool"):
        VARIANTS[f"split{_k}-{_v}"] = {**VARIANTS[_v], "data.split_seed": _k}


def base_config(subset: str, rev: str | None) -> dict:
    """configs/fd00x.json of the working tree, or as of git revision ``rev``, or from folder
    ``rev`` when that is a directory (a copy taken where git is at hand)."""
    rel = f"configs/{subset.lower()}.json"
    if rev is None:
        return json.loads((ROOT / rel).read_text())
    if Path(rev).is_dir():
        return json.loads((Path(rev) / f"{subset.lower()}.json").read_text())
    shown = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True,
                           check=False)
    if shown.returncode:
        raise SystemExit(f"--base-rev {rev}: {shown.stderr.strip()}")
    return json.loads(shown.stdout)


def variant_config(subset: str, variant: str, out: Path, rev: str | None = None,
                   teachers: Path | None = None) -> Path:
    cfg = base_config(subset, rev)
    for key, value in VARIANTS[variant].items():
        section, field = key.split(".")
        if field not in CONFIG_FIELDS[section]:
            raise SystemExit(f"variant {variant}: {key} is not a setting of amnl.config")
        cfg[section][field] = value
    if cfg["train"].get("teacher_targets") == TEACHERS:  # teachers of the same validation split
        if teachers is None:
            raise SystemExit(f"variant {variant} needs --teachers")
        split = cfg["data"].get("split_seed", 0)
        cfg["train"]["teacher_targets"] = str(teachers / (f"{subset}.npz" if not split else
                                                          f"{subset}-split{split}.npz"))
    if cfg["data"].get("extra_train") == POOL:
        cfg["data"]["extra_train"] = PARTNERS[subset]
    path = out / "configs" / f"{subset}-{variant}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def job_command(subset: str, config: Path, seed: int, run: Path, args: argparse.Namespace) -> str:
    amnl = f"{sys.executable} -m amnl"
    common = f"--dataset {subset} --data-dir {args.data_dir} --device {args.device}"
    resume = " --resume" if (run / "checkpoint.pt").is_file() else ""
    train = (f"{amnl} train {common} --config {config} --seed {seed} --out {run} --threads "
             f"{args.threads} --no-progress{resume}" + (f" --epochs {args.epochs}" if args.epochs else ""))
    # --all-windows: results_table.py reports the all-windows test RMSE beside the protocol's
    evaluate = f"{amnl} evaluate {common} --run {run} --out {run}/test --all-windows"
    return f"{train} && {evaluate}"


def run_jobs(jobs: list[tuple[str, str, int]], args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    done = {r["run"] for r in collect(args.out)}  # trained and evaluated
    pending = [j for j in jobs if run_name(*j) not in done]
    running: dict[tuple[str, str, int], subprocess.Popen] = {}
    configs: dict[tuple[str, str], Path] = {}  # one config file per (subset, variant), not per job
    print(f"{len(jobs)} jobs, {len(jobs) - len(pending)} already done, {args.parallel} at a time",
          flush=True)
    while pending or running:
        elapsed = time.monotonic() - t0
        for job, proc in list(running.items()):
            if proc.poll() is not None:
                del running[job]
                status = "done" if proc.returncode == 0 else f"FAILED rc {proc.returncode}"
                print(f"{elapsed:6.0f}s {status} {run_name(*job)}", flush=True)
        if elapsed > args.launch_until and pending:
            print(f"{elapsed:6.0f}s launch deadline: {len(pending)} jobs not started", flush=True)
            pending = []
        if args.stop_after and elapsed > args.stop_after and running:
            for job, proc in running.items():
                print(f"{elapsed:6.0f}s stop deadline: interrupting {run_name(*job)}", flush=True)
                os.killpg(proc.pid, signal.SIGINT)
            for proc in running.values():
                proc.wait()
            break
        while pending and len(running) < args.parallel:
            job = pending.pop(0)
            subset, variant, seed = job
            run = args.out / run_name(*job)
            if (subset, variant) not in configs:
                configs[subset, variant] = variant_config(subset, variant, args.out, args.base_rev,
                                                          args.teachers)
            cmd = job_command(subset, configs[subset, variant], seed, run, args)
            with open(args.out / f"{run_name(*job)}.log", "a") as log:  # the child keeps its copy
                running[job] = subprocess.Popen(cmd, shell=True, stdout=log, stderr=subprocess.STDOUT,
                                                cwd=ROOT, start_new_session=True)
        time.sleep(1.0)
    print(f"{time.monotonic() - t0:6.0f}s sweep over", flush=True)


def run_name(subset: str, variant: str, seed: int) -> str:
    return f"{subset}-{variant}-s{seed}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--subsets", nargs="+", default=["FD001", "FD003"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--extra", nargs="*", default=[], metavar="SUBSET:VARIANT:SEED",
                    help="More jobs, started before the grid's (e.g. FD004:r2l80:1).")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("AMNL_DATA_DIR",
                                                                         "../shared/data/CMAPSS")))
    ap.add_argument("--base-rev", default=None,
                    help="Start the variants from configs/fd00x.json as of this git revision, "
                         "or from a folder of fd00x.json copies (default: the working tree), "
                         "to repeat a past sweep.")
    ap.add_argument("--teachers", type=Path, default=None,
                    help="Folder of <subset>.npz teacher targets (amnl distill-targets) for the "
                         "distill variants.")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--parallel", type=int, default=1, help="Training processes at a time.")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per training process.")
    ap.add_argument("--launch-until", type=float, default=float("inf"),
                    help="Start no job after this many seconds.")
    ap.add_argument("--stop-after", type=float, default=0.0,
                    help="Interrupt jobs still running after this many seconds (0: never).")
    ap.add_argument("--epochs", type=int, default=0, help="Override every config's epochs (smoke tests).")
    ap.add_argument("--summary-only", action="store_true", help="Summarise finished runs only.")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.data_dir = args.data_dir.resolve()
    args.teachers = args.teachers.resolve() if args.teachers else None
    args.out = args.out.resolve()
    jobs = []
    for spec in args.extra:
        subset, variant, seed = spec.split(":")
        if variant not in VARIANTS:
            raise SystemExit(f"--extra {spec}: unknown variant {variant!r}")
        jobs.append((subset, variant, int(seed)))
    jobs += [(s, v, seed) for seed in args.seeds for s in args.subsets for v in args.variants]
    if not args.summary_only:
        run_jobs(jobs, args)
    names = {run_name(*j) for j in jobs}
    rows = [r for r in collect(args.out) if r["run"] in names]
    print_groups(rows, by="variant")
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out / 'sweep.json'}")


if __name__ == "__main__":
    main()
