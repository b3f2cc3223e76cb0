"""A small, data-agnostic training loop: AdamW, warm-up, plateau schedule, clipping, EMA,
early stopping, mixed precision, resumable checkpoints.

It knows nothing about C-MAPSS: it takes a model, a loss, training batches and a validation
callable that scores a model (lower is better).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from amnl.config import TrainConfig
from amnl.model.precision import autocast
from amnl.rundir import CHECKPOINT_FILE, METRICS_LOG
from amnl.train.losses import DualLoss

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FILE", "EMA", "FitResult", "Progress", "ProgressCallback", "fit"]


class EMA:
    """Exponential moving average of weights, decay warmed up as min(d, (1 + t) / (10 + t))."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    interrupted: bool
    seconds: float


Validate = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class Progress:
    """What :func:`fit` reports to its ``callback`` (the library prints nothing itself).

    Attributes:
        event: ``epoch_start``, ``step`` (after each optimiser step) or ``epoch_end``.
        epoch: the epoch, 0-based.
        epochs: the most epochs the run may take (``cfg.epochs``).
        step: optimiser steps done in this epoch.
        steps: optimiser steps per epoch.
        loss: running mean training loss of this epoch (``step`` and ``epoch_end``).
        record: at ``epoch_end``, the line written to ``metrics.jsonl`` (validation metrics,
            LR, seconds, ``best``).
    """

    event: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None
    record: dict | None = None


ProgressCallback = Callable[[Progress], None]


def _lr_factor(step: int, warmup_steps: int) -> float:
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return 0.1 + 0.9 * step / warmup_steps


def fit(model: nn.Module, loss_fn: DualLoss, batches: Iterable, validate: Validate,
        cfg: TrainConfig, run_dir: str | Path, *, on_best: Callable[[nn.Module], None],
        device: str = "cpu", resume: bool = False, callback: ProgressCallback | None = None,
        score_key: str = "val_rmse") -> FitResult:
    """Train until ``cfg.epochs`` or early stopping; call ``on_best(ema_model)`` on improvement.

    Args:
        model: the network (returns an object with ``rul`` and ``health``).
        loss_fn: a :class:`DualLoss`.
        batches: re-iterable of ``(x, rul, health)`` with ``len()``.
        validate: scores the EMA model, returning a dict holding ``score_key`` (lower is better).
        cfg: training settings.
        run_dir: where ``metrics.jsonl`` and the resumable ``checkpoint.pt`` go.
        on_best: persists the best model (the caller decides the format).
        resume: continue from ``checkpoint.pt`` in ``run_dir``.
        callback: called with a :class:`Progress` at each epoch's start and end and after
            every step (reading the running loss then costs a device sync per step; without a
            callback the loss stays on the device until the epoch ends).
    """
    run_dir = Path(run_dir)
    model.to(device)
    loss_fn.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    ema = EMA(model, cfg.ema_decay)
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none (scaler disabled).
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=cfg.precision == "fp16")
    steps_per_epoch = len(batches)  # type: ignore[arg-type]
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    state = {"epoch": 0, "step": 0, "best": math.inf, "best_epoch": -1, "bad_epochs": 0}
    ckpt = run_dir / CHECKPOINT_FILE
    if resume:
        saved = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        ema.model.load_state_dict(saved["ema"])
        ema.steps = saved["ema_steps"]
        opt.load_state_dict(saved["opt"])
        plateau.load_state_dict(saved["plateau"])
        loss_fn.load_state_dict(saved["loss"])
        if "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        state = saved["state"]
        if "batch_rng" in saved and hasattr(batches, "generator"):
            batches.generator.set_state(saved["batch_rng"])
        torch.set_rng_state(saved["torch_rng"])
        logger.info("resumed from %s at epoch %d", ckpt, state["epoch"])

    def save_checkpoint() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "ema": ema.model.state_dict(),
                    "ema_steps": ema.steps, "opt": opt.state_dict(), "plateau": plateau.state_dict(),
                    "loss": loss_fn.state_dict(), "scaler": scaler.state_dict(), "state": dict(state),
                    "batch_rng": getattr(batches, "generator", torch.Generator()).get_state(),
                    "torch_rng": torch.get_rng_state()}, tmp)
        tmp.replace(ckpt)

    def report(event: str, epoch: int, step: int, loss: float | None = None,
               record: dict | None = None) -> None:
        if callback is not None:
            callback(Progress(event, epoch, cfg.epochs, step, steps_per_epoch, loss, record))

    t_start = time.perf_counter()
    interrupted = stopped = False
    try:
        while state["epoch"] < cfg.epochs:
            epoch = state["epoch"]
            t0 = time.perf_counter()
            model.train()
            loss_fn.train()
            sums = torch.zeros(3, device=device)
            n = 0
            report("epoch_start", epoch, 0)
            for x, rul, health in batches:
                x, rul, health = x.to(device), rul.to(device), health.to(device)
                if cfg.noise_std > 0:
                    x = x + cfg.noise_std * torch.randn_like(x)
                if state["step"] <= warmup_steps:  # afterwards the plateau rule owns the LR
                    for g in opt.param_groups:
                        g["lr"] = cfg.lr * _lr_factor(state["step"], warmup_steps)
                with autocast(cfg.precision, device):
                    out = model(x)
                total, l_rul, l_health = loss_fn(out.rul, out.health, rul, health)
                opt.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                ema.update(model)
                state["step"] += 1
                # summed on the device: reading a loss every step would stall a GPU
                sums += torch.stack([total.detach(), l_rul.detach(), l_health.detach()]).float()
                n += 1
                if callback is not None:
                    report("step", epoch, n, sums[0].item() / n)
            train_s = time.perf_counter() - t0
            metrics = validate(ema.model)
            score = metrics[score_key]
            if state["step"] >= warmup_steps:
                plateau.step(score)
            improved = score < state["best"]
            if improved:
                state.update(best=score, best_epoch=epoch, bad_epochs=0)
                on_best(ema.model)
            else:
                state["bad_epochs"] += 1
            sums = sums.cpu()
            record = {"epoch": epoch + 1, "loss": float(sums[0] / n), "loss_rul": float(sums[1] / n),
                      "loss_health": float(sums[2] / n), **metrics,
                      "lr": opt.param_groups[0]["lr"], "task_weights": list(loss_fn.task_weights()),
                      "train_seconds": round(train_s, 2),
                      "epoch_seconds": round(time.perf_counter() - t0, 2), "best": improved}
            with open(run_dir / METRICS_LOG, "a") as f:
                f.write(json.dumps(record) + "\n")
            report("epoch_end", epoch, n, record["loss"], record)
            logger.info("epoch %d: %s", epoch + 1, record)
            state["epoch"] = epoch + 1
            save_checkpoint()
            if state["bad_epochs"] >= cfg.early_stop_patience:
                stopped = True
                break
    except KeyboardInterrupt:
        interrupted = True
        save_checkpoint()
        logger.warning("interrupted: state saved to %s; continue with --resume", ckpt)
    if not interrupted:
        ckpt.unlink(missing_ok=True)
    return FitResult(state["best_epoch"] + 1, state["best"], state["epoch"], stopped, interrupted,
                     time.perf_counter() - t_start)
