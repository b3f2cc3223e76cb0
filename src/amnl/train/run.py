"""Train AMNL on one C-MAPSS subset and write a run directory (see :mod:`amnl.rundir`).

The test files are never opened here: validation engines come from the training file.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from amnl.config import RunConfig
from amnl.data.cmapss import load_subset, pool_engines
from amnl.errors import ConfigError
from amnl.evaluate.evaluate import score_windows
from amnl.evaluate.metrics import rmse
from amnl.features.dataset import WindowBatches, class_balanced_weights
from amnl.features.pipeline import Preprocessor
from amnl.inference.runtime import pick_device, predict_windows
from amnl.model.network import AMNL
from amnl.machine import describe, machine_info, native_bf16
from amnl.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_LOG,
    SUMMARY_FILE,
    TARGETS_FILE,
    WEIGHTS_FILE,
    save_weights,
)
from amnl.train.distill import TeacherTargets, distilled_rul
from amnl.train.losses import create_loss
from amnl.train.trainer import ProgressCallback, fit

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_precision(requested: str, device: str) -> tuple[str, str]:
    """The autocast precision a run trains at on ``device``, and why (for the user).

    ``auto`` is bf16 where the device runs it natively, else fp32. A bf16 asked for where it is
    emulated is kept (the recipe says so) with a warning: a step can take 40x longer.

    Raises:
        ConfigError: fp16 on the CPU.
    """
    if requested == "fp16" and device == "cpu":
        raise ConfigError("train.precision fp16 needs CUDA (its loss scaling is a GPU feature); "
                          "use bf16, fp32 or auto on the CPU")
    if requested not in ("auto", "bf16"):
        return requested, f"{requested} as asked"
    native, why = native_bf16(device)
    if requested == "auto":
        return ("bf16", f"auto: bf16, native ({why})") if native else \
            ("fp32", f"auto: fp32, since bf16 would be emulated ({why})")
    if not native:
        logger.warning("bf16 is emulated here (%s): a training step can take 40x longer than "
                       "fp32; pass --precision fp32 or auto", why)
        return "bf16", f"bf16 as asked, emulated ({why})"
    return "bf16", f"bf16 as asked, native ({why})"


def train_run(config: RunConfig, data_dir: str | Path, out_dir: str | Path, *, resume: bool = False,
              force: bool = False, callback: ProgressCallback | None = None) -> dict:
    """Fit preprocessing on training engines, train, and write the run directory.

    Args:
        config: the run settings (written resolved to ``config.json``); ``train.device`` says
            where it trains (``auto`` is resolved here, so the saved config names the device).
        data_dir: folder of the C-MAPSS files (only ``train_FDxxx.txt`` is read).
        out_dir: the run directory (created).
        resume: continue an interrupted run in ``out_dir`` (its ``config.json`` wins).
        force: overwrite a run directory that already holds a run.
        callback: progress of the training loop (:class:`amnl.train.trainer.Progress`).

    Returns:
        The final summary written to ``metrics.json``.

    Raises:
        ConfigError: nothing to resume. DataError: the data files are missing or malformed.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, not a run directory; choose another --out")
    if not resume and not force and (out / CONFIG_FILE).exists():
        what = "a finished run" if (out / SUMMARY_FILE).exists() else "an unfinished run"
        raise ConfigError(f"{out} already holds {what}; continue it with --resume, overwrite it "
                          "with --force, or choose another --out")
    if resume:
        if not (out / CHECKPOINT_FILE).is_file():
            raise ConfigError(f"{out}: nothing to resume (no {CHECKPOINT_FILE}); drop --resume")
        config = RunConfig.load(out / CONFIG_FILE)
    device = pick_device(config.train.device)
    if device != config.train.device:
        config = replace(config, train=replace(config.train, device=device))
    precision, why = choose_precision(config.train.precision, device)
    if precision != config.train.precision:
        config = replace(config, train=replace(config.train, precision=precision))
    targets = None
    if config.train.distill > 0:  # read before anything is written; a resumed run reads its copy
        targets = TeacherTargets.load(out / TARGETS_FILE if resume else config.train.teacher_targets)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        for stale in (METRICS_LOG, SUMMARY_FILE, CHECKPOINT_FILE):
            (out / stale).unlink(missing_ok=True)
    tc = config.train
    seed_everything(tc.seed)

    subset = load_subset(data_dir, config.data.subset, test=False)
    pre = Preprocessor(config.data)
    train_units, val_units = pre.split_units(subset.train)
    train_table = subset.train
    if config.data.extra_train:  # RunConfig refuses it together with train.distill
        train_table, train_units = _pool(subset.train, train_units, config.data.extra_train,
                                         data_dir, pre)
    pre.fit(train_table, units=train_units)
    train_w = pre.windows(train_table, units=train_units)
    val_w = pre.windows(subset.train, units=val_units)
    logger.info("%s: %d train windows (%d engines), %d validation windows (%d engines)",
                config.data.subset, len(train_w), len(train_units), len(val_w), len(val_units))
    if targets is not None:
        targets.check_split(config.data.subset, val_units)
        if not resume:  # the run's own copy, for --resume and provenance
            shutil.copyfile(tc.teacher_targets, out / TARGETS_FILE)
        train_w = _distill(train_w, targets, tc.distill, config.data.rul_cap)
    config.save(out / CONFIG_FILE)
    pre.save(out)

    weights = class_balanced_weights(train_w.health) if tc.balance == "health" else None
    batches = WindowBatches(train_w, tc.batch_size, shuffle=True, seed=tc.seed,
                            max_windows=tc.max_train_windows, weights=weights)
    model = AMNL(config.model)
    shared = [*model.cnn.parameters(), *model.lstm.parameters(), *model.attention.parameters(),
              *model.funnel.parameters()]
    loss_fn = create_loss(tc.loss, config.data.rul_cap, shared)
    model.grad_checkpoint = tc.grad_checkpoint

    def validate(m):
        return score_windows(lambda x: predict_windows(m, x, device=device), val_w, prefix="val_")

    result = fit(model, loss_fn, batches, validate, tc, out, device=device, resume=resume,
                 callback=callback, on_best=lambda m: save_weights(m, out / WEIGHTS_FILE),
                 score_key=f"val_{tc.select_metric}")
    epochs = [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines()]
    best = next(e for e in epochs if e["epoch"] == result.best_epoch) if result.best_epoch else {}
    summary = {
        "subset": config.data.subset, "loss": tc.loss, "seed": tc.seed,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early, "interrupted": result.interrupted,
        **{k: v for k, v in best.items() if k.startswith("val_")},
        **({"distill": tc.distill, "teachers": list(targets.teachers)} if targets is not None else {}),
        **({"extra_train": list(config.data.extra_train)} if config.data.extra_train else {}),
        "precision": precision, "precision_reason": why,
        "train_engines": len(train_units),
        "train_windows": len(train_w), "val_windows": len(val_w),
        "val_units": val_units.tolist(),
        "seconds": round(result.seconds, 1),
        "mean_epoch_seconds": round(float(np.mean([e["epoch_seconds"] for e in epochs])), 1)
        if epochs else None,
        "machine": f"{describe(machine_info(device))}, torch {torch.__version__}",
        "device": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if not result.interrupted and (out / WEIGHTS_FILE).is_file():
        _calibrate(out, data_dir)
    return summary


def _calibrate(out: Path, data_dir) -> None:
    """The finished run's RUL intervals and drift reference (held-out engines only)."""
    from amnl.evaluate.calibrate import calibrate, drift_reference
    from amnl.inference.predictor import Predictor

    predictor = Predictor.load(out)
    try:
        calibrate(predictor, data_dir).save(out)
    except ConfigError as exc:  # too few held-out windows (a tiny test run)
        logger.warning("no RUL intervals for %s: %s", out, exc)
    drift_reference(predictor, data_dir).save(out)


def _pool(table, units, extra: tuple[str, ...], data_dir, pre: Preprocessor):
    """The training engines of ``table`` pooled with those of the ``extra`` subsets' training
    files (each file's validation engines, by the same split, left out): (table, unit ids)."""
    parts = [(table, units)]
    for name in extra:
        other = load_subset(data_dir, name, test=False).train
        parts.append((other, pre.split_units(other)[0]))
    pooled, ids = pool_engines(parts)
    logger.info("training engines pooled from %s: %s", " + ".join(t.path for t, _ in parts),
                " + ".join(str(len(u)) for u in ids))
    return pooled, np.concatenate(ids)


def _distill(train_w, targets: TeacherTargets, weight: float, cap: float):
    """Training windows with RUL targets mixed with the teachers' mean (train.distill)."""
    teacher = targets.lookup(train_w.unit, train_w.cycle)
    logger.info("distilling %d teachers (weight %.2f): teacher RMSE to the labels %.2f",
                len(targets.teachers), weight, rmse(np.minimum(teacher, cap), train_w.rul))
    return replace(train_w, rul=distilled_rul(train_w.rul, teacher, weight, cap))
