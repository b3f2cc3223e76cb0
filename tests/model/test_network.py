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


# -- the inference form: one function, cheaper ------------------------------------------------

#: How far the inference form may be from the layers as training runs them (issue #21), cycles.
INFERENCE_FORM_TOLERANCE = 1e-4


def _both_forms(net, x):
    net.eval()
    with torch.no_grad():
        fast = net(x)
        net.inference_form = False
        try:
            reference = net(x)
        finally:
            net.inference_form = True
    return fast, reference


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_inference_form_is_the_training_form_in_eval(size):
    """Time-last folded convolutions and last-step attention compute the eval-mode function of
    channel-first convolutions and full self-attention, BatchNorm statistics included."""
    torch.manual_seed(0)
    net = create_model(size)
    net.train()
    for _ in range(3):  # running statistics away from their initial 0 / 1
        net(torch.randn(32, 30, 14))
    x = torch.randn(16, 30, 14)
    fast, reference = _both_forms(net, x)
    assert (fast.rul - reference.rul).abs().max() <= INFERENCE_FORM_TOLERANCE
    torch.testing.assert_close(fast.health, reference.health, atol=1e-5, rtol=0)


def test_training_mode_is_unchanged_by_the_inference_form():
    torch.manual_seed(0)
    net = create_model("tiny").train()
    x = torch.randn(8, 30, 14)
    torch.manual_seed(1)
    a = net(x).rul
    net.inference_form = False
    torch.manual_seed(1)
    torch.testing.assert_close(net(x).rul, a, rtol=0, atol=0)


def test_inference_form_attends_only_the_last_step():
    """The last step's output does not depend on what the other steps would have attended:
    no (B, T, C) query, key or value tensor is made (the attention block returns (B, C))."""
    net = create_model("tiny").eval()
    h = torch.randn(3, 30, 2 * net.config.lstm_hidden)
    assert net.attention(h).shape == (3, 2 * net.config.lstm_hidden)
    net.attention.inference_form = False
    assert net.attention(h).shape == (3, 2 * net.config.lstm_hidden)


@pytest.mark.needs_data
@pytest.mark.parametrize("name", ["FD001", "FD002", "FD003", "FD004"])
def test_inference_form_equals_full_attention_on_real_windows(name, cmapss_dir, exported):
    """Each bundled model on real test windows (FD001: every window; the others: every engine's
    last window and 1,024 more): torch and ONNX Runtime FP32 against full self-attention."""
    import numpy as np

    from amnl.data.cmapss import load_subset
    from amnl.inference.onnx_runtime import OnnxRuntime
    from amnl.inference.runtime import TorchRuntime
    from amnl.rundir import bundled_dir, load_run

    _cfg, pre, model = load_run(bundled_dir(name))
    test = load_subset(cmapss_dir, name, train=False).test
    x = pre.windows(test).arrays()
    if name != "FD001":
        pick = np.random.default_rng(0).choice(len(x), 1024, replace=False)
        x = np.concatenate([pre.windows(test, last_only=True).arrays(), x[pick]])
    fast = TorchRuntime(model)(x)
    model.inference_form = False
    reference = TorchRuntime(model)(x)
    onnx_rul, onnx_p = OnnxRuntime(exported(name) / "model.onnx")(x)
    for rul, p in (fast, (onnx_rul, onnx_p)):
        assert np.abs(rul - reference[0]).max() <= INFERENCE_FORM_TOLERANCE
        assert np.abs(p - reference[1]).max() <= 1e-5
