"""Losses of spec section 3."""

from __future__ import annotations

import pytest
import torch

from amnl.model import create_model
from amnl.train.losses import LOSSES, create_loss, failure_weighted_mse


def test_failure_weight_is_one_when_healthy_two_at_failure():
    pred = torch.tensor([1.0, 126.0, 63.5])
    true = torch.tensor([0.0, 125.0, 62.5])
    # weights 2, 1, 1.5 on squared errors of 1 each
    assert failure_weighted_mse(pred, true).item() == pytest.approx((2 + 1 + 1.5) / 3)


def test_all_losses_by_name_backprop():
    x = torch.randn(8, 30, 14)
    rul = torch.rand(8) * 125
    health = torch.randint(0, 3, (8,))
    for name in LOSSES:
        net = create_model("tiny").train()
        shared = [*net.cnn.parameters(), *net.lstm.parameters(), *net.attention.parameters(),
                  *net.funnel.parameters()]
        loss_fn = create_loss(name, shared).train()
        out = net(x)
        total, l_rul, l_health = loss_fn(out.rul, out.health, rul, health)
        total.backward()
        assert torch.isfinite(total) and net.rul_head[-1].weight.grad is not None, name
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("nope")


def test_baseline_is_plain_half_half():
    loss_fn = create_loss("baseline")
    rul_pred, rul = torch.tensor([10.0]), torch.tensor([0.0])
    logits, health = torch.zeros(1, 3), torch.tensor([0])
    total, l_rul, l_health = loss_fn(rul_pred, logits, rul, health)
    assert l_rul.item() == 100.0
    assert total.item() == pytest.approx(0.5 * 100 + 0.5 * torch.log(torch.tensor(3.0)).item())


def test_gaba_uses_gradient_norms_after_warmup():
    torch.manual_seed(0)
    net = create_model("tiny").train()
    shared = list(net.lstm.parameters())
    loss_fn = create_loss("gaba", shared).train()
    x, rul, health = torch.randn(16, 30, 14), torch.rand(16) * 125, torch.randint(0, 3, (16,))
    for step in range(105):
        out = net(x)
        total, *_ = loss_fn(out.rul, out.health, rul, health)
        if step == 50:
            assert loss_fn.task_weights() == (0.5, 0.5)  # uniform during the 100-step warm-up
    w_rul, w_health = loss_fn.task_weights()
    # The RUL gradient dominates at init, so GABA shifts weight to the health task (floor 0.05).
    assert w_health > 0.9 and w_rul >= 0.05 / 1.05 - 1e-6
    assert w_rul + w_health == pytest.approx(1.0)
