"""The AMNL network: parameter budget, shapes, heads, the dead-ReLU pitfall."""

from __future__ import annotations

import pytest
import torch

from amnl.model import create_model


def test_parameter_budget_matches_spec():
    counts = create_model("base", in_features=17).parameter_counts()
    assert sum(counts.values()) == 3_497_476  # spec section 2, 17 inputs
    assert counts["lstm"] == 2_236_416 and counts["attention"] == 1_051_648
    assert sum(create_model("base").parameter_counts().values()) == 3_496_900  # 14 inputs


@pytest.mark.parametrize("window", [30, 50, 1])
def test_output_shapes(window):
    net = create_model("tiny").eval()
    out = net(torch.randn(5, window, 14))
    assert out.rul.shape == (5,) and out.health.shape == (5, 3)


def test_rul_nonnegative_in_eval_and_trains_from_init():
    # The spec's pitfall: a ReLU output dead from step one. Our head must move for every seed.
    x = torch.randn(64, 30, 14)
    y = torch.full((64,), 100.0)
    for seed in range(20):
        torch.manual_seed(seed)
        net = create_model("tiny")
        assert (net.eval()(x).rul >= 0).all()
        net.train()
        loss = ((net(x).rul - y) ** 2).mean()
        loss.backward()
        assert net.rul_head[-1].weight.grad.abs().sum() > 0, f"dead RUL head for seed {seed}"


def test_grad_checkpoint_same_result():
    torch.manual_seed(0)
    net = create_model("tiny")
    net.train()
    x = torch.randn(4, 30, 14)
    torch.manual_seed(1)
    a = net(x).rul.sum()
    a.backward()
    g1 = net.lstm.weight_ih_l0.grad.clone()
    net.zero_grad()
    net.grad_checkpoint = True
    torch.manual_seed(1)
    b = net(x).rul.sum()
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(net.lstm.weight_ih_l0.grad, g1)
