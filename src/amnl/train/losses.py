"""Dual-head losses (spec section 3), selected by name.

Every loss returns the total to back-propagate plus the two task losses (detached floats are
taken by the trainer for logging). GABA and GRACE weight tasks by the real per-task gradient
norms on the shared backbone, so they need the backbone parameters.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from amnl.config import LOSSES as LOSS_NAMES
from amnl.errors import ConfigError

EMA_BETA = 0.99
#: GABA: smallest task weight before renormalisation, and steps with uniform weights.
GABA_FLOOR = 0.05
GABA_WARMUP_STEPS = 100


def failure_weighted_mse(pred: torch.Tensor, target: torch.Tensor, cap: float) -> torch.Tensor:
    """mean(w(y) (yhat - y)^2) with w(y) = 1 + clip(1 - y/cap, 0, 1): 1 when healthy (at the RUL
    cap, ``data.rul_cap``), 2 at failure."""
    w = 1.0 + (1.0 - target / cap).clamp(0.0, 1.0)
    return (w * (pred - target) ** 2).mean()


class DualLoss(nn.Module):
    """Base: fixed 0.5/0.5 weights. Subclasses change the RUL term or the weights.

    Args:
        cap: the RUL cap of the labels (``data.rul_cap``), where the failure weight of the
            failure-weighted losses reaches its minimum of 1.
    """

    name = "baseline"

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = float(cap)

    def rul_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target)

    def combine(self, l_rul: torch.Tensor, l_health: torch.Tensor) -> torch.Tensor:
        return 0.5 * l_rul + 0.5 * l_health

    def forward(self, rul_pred: torch.Tensor, health_logits: torch.Tensor, rul: torch.Tensor,
                health: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (total, rul task loss, health task loss)."""
        l_rul = self.rul_loss(rul_pred.float(), rul)
        l_health = F.cross_entropy(health_logits.float(), health)
        return self.combine(l_rul, l_health), l_rul, l_health

    def task_weights(self) -> tuple[float, float]:
        return 0.5, 0.5


class AMNLLoss(DualLoss):
    """Default: 0.5 failure-weighted MSE + 0.5 cross-entropy."""

    name = "amnl"

    def rul_loss(self, pred, target):
        return failure_weighted_mse(pred, target, self.cap)


class NormalizedAMNLLoss(AMNLLoss):
    """Each task loss divided by a bias-corrected EMA (beta 0.99) of its detached magnitude."""

    name = "amnl-normalized"

    def __init__(self, cap: float) -> None:
        super().__init__(cap)
        self.register_buffer("mu", torch.zeros(2))
        self.register_buffer("t", torch.zeros((), dtype=torch.long))

    def combine(self, l_rul, l_health):
        if self.training:
            self.t += 1
            cur = torch.stack([l_rul.detach(), l_health.detach()])
            self.mu.mul_(EMA_BETA).add_((1 - EMA_BETA) * cur)
        corr = self.mu / (1 - EMA_BETA ** self.t.clamp_min(1).item())
        corr = torch.where(corr > 0, corr, torch.ones_like(corr))
        return 0.5 * l_rul / corr[0] + 0.5 * l_health / corr[1]


class GABALoss(DualLoss):
    """Gradient-aware balancing: lambda_rul = g_health / (g_rul + g_health), and symmetric.

    g_i is the L2 norm of d(task loss i)/d(shared backbone). Weights are an EMA (beta 0.99),
    floored at 0.05 and renormalised; uniform for the first 100 training steps.
    """

    name = "gaba"

    def __init__(self, cap: float, shared: Iterable[nn.Parameter] | None = None) -> None:
        super().__init__(cap)
        self.shared = list(shared) if shared is not None else []
        self.register_buffer("lam", torch.full((2,), 0.5))
        self.register_buffer("t", torch.zeros((), dtype=torch.long))

    def _grad_norm(self, loss: torch.Tensor) -> torch.Tensor:
        params = [p for p in self.shared if p.requires_grad]
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))

    def combine(self, l_rul, l_health):
        if self.training and self.shared and torch.is_grad_enabled():
            self.t += 1
            g_rul, g_health = self._grad_norm(l_rul), self._grad_norm(l_health)
            total = (g_rul + g_health).clamp_min(1e-12)
            target = torch.stack([g_health / total, g_rul / total]).detach()
            if self.t == 1:
                self.lam.copy_(target)
            else:
                self.lam.mul_(EMA_BETA).add_((1 - EMA_BETA) * target)
        w = self._current()
        return w[0] * l_rul + w[1] * l_health

    def _current(self) -> torch.Tensor:
        """Uniform during warm-up, then the floored and renormalised EMA weights."""
        if self.t <= GABA_WARMUP_STEPS:
            return torch.full((2,), 0.5, device=self.lam.device)
        w = self.lam.clamp_min(GABA_FLOOR)
        return w / w.sum()

    def task_weights(self):
        w = self._current()
        return float(w[0]), float(w[1])


class GRACELoss(GABALoss):
    """GABA task weights with AMNL's failure-weighted MSE inside."""

    name = "grace"

    def rul_loss(self, pred, target):
        return failure_weighted_mse(pred, target, self.cap)


LOSSES: dict[str, type[DualLoss]] = {cls.name: cls for cls in
                                     (AMNLLoss, NormalizedAMNLLoss, DualLoss, GABALoss, GRACELoss)}


if set(LOSSES) != set(LOSS_NAMES):  # pragma: no cover - a loss added in one place only
    raise ImportError(f"amnl.config.LOSSES {LOSS_NAMES} and the losses here {sorted(LOSSES)} differ")


def create_loss(name: str, cap: float, shared: Iterable[nn.Parameter] | None = None) -> DualLoss:
    """Build a loss by name (:data:`amnl.config.LOSSES`).

    Args:
        name: the loss.
        cap: the RUL cap of the labels, ``config.data.rul_cap``.
        shared: the backbone parameters GABA/GRACE measure.
    """
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    cls = LOSSES[name]
    return cls(cap, shared) if issubclass(cls, GABALoss) else cls(cap)
