"""Losses of spec section 3."""

from __future__ import annotations

import pytest
import torch

from amnl.errors import ConfigError
from amnl.model import create_model
from amnl.train.losses import LOSSES, create_loss, failure_weighted_mse


def test_failure_weight_is_one_when_healthy_two_at_failure():
    pred = torch.tensor([1.0, 126.0, 63.5])
    true = torch.tensor([0.0, 125.0, 62.5])
    # weights 2, 1, 1.5 on squared errors of 1 each
    assert failure_weighted_mse(pred, true, 125.0).item() == pytest.approx((2 + 1 + 1.5) / 3)


def test_rul_cap_moves_the_failure_weight_and_the_output_scale():
    """``data.rul_cap`` is the one place of the cap: a run with a cap of 150 weighs a
    125-cycle label above 1 (it is not yet 'healthy'), and its model scales to 150."""
    from amnl.config import DataConfig, RunConfig

    cfg = RunConfig(data=DataConfig(rul_cap=150.0))
    assert cfg.model.rul_scale == 150.0
    pred, true = torch.tensor([126.0]), torch.tensor([125.0])
    at_150 = create_loss("amnl", cfg.data.rul_cap)(pred, torch.zeros(1, 3), true, torch.tensor([0]))[1]
    at_125 = create_loss("amnl", RunConfig().data.rul_cap)(pred, torch.zeros(1, 3), true,
                                                           torch.tensor([0]))[1]
    assert at_125.item() == pytest.approx(1.0)
    assert at_150.item() == pytest.approx(1.0 + (1 - 125 / 150))
    # the trainer builds its loss from the run's cap (train/run.py passes config.data.rul_cap)
    assert create_loss("grace", cfg.data.rul_cap).cap == 150.0


def test_loss_names_have_one_list():
    from amnl.config import LOSSES as NAMES

    assert sorted(LOSSES) == sorted(NAMES)


def test_all_losses_by_name_backprop():
    x = torch.randn(8, 30, 14)
    rul = torch.rand(8) * 125
    health = torch.randint(0, 3, (8,))
    for name in LOSSES:
        net = create_model("tiny").train()
        shared = [*net.cnn.parameters(), *net.lstm.parameters(), *net.attention.parameters(),
                  *net.funnel.parameters()]
        loss_fn = create_loss(name, 125.0, shared).train()
        out = net(x)
        total, l_rul, l_health = loss_fn(out.rul, out.health, rul, health)
        total.backward()
        assert torch.isfinite(total) and net.rul_head[-1].weight.grad is not None, name
    with pytest.raises(ConfigError, match="unknown loss 'nope'; choose one of amnl, "):
        create_loss("nope", 125.0)


def test_baseline_is_plain_half_half():
    loss_fn = create_loss("baseline", 125.0)
    rul_pred, rul = torch.tensor([10.0]), torch.tensor([0.0])
    logits, health = torch.zeros(1, 3), torch.tensor([0])
    total, l_rul, l_health = loss_fn(rul_pred, logits, rul, health)
    assert l_rul.item() == 100.0
    assert total.item() == pytest.approx(0.5 * 100 + 0.5 * torch.log(torch.tensor(3.0)).item())


def test_gaba_uses_gradient_norms_after_warmup():
    torch.manual_seed(0)
    net = create_model("tiny").train()
    shared = list(net.lstm.parameters())
    loss_fn = create_loss("gaba", 125.0, shared).train()
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
