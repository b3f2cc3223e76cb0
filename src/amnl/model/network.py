"""AMNL: CNN -> BiLSTM -> multi-head self-attention -> FC funnel -> RUL head + health head.

Shapes use B = batch, T = window length, F = input features.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from amnl.config import ModelConfig


class Output(NamedTuple):
    rul: torch.Tensor
    """(B,) remaining useful life in cycles; in [0, rul_scale] (the RUL cap) in eval mode."""
    health: torch.Tensor
    """(B, n_health) health-state logits."""


def _mlp(widths: list[int], dropout: float = 0.0, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2 or last_act:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ConvBlock(nn.Sequential):
    """Conv1d(kernel 3, padding 1) -> BatchNorm -> ReLU -> Dropout, channel-first."""

    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__(nn.Conv1d(c_in, c_out, 3, padding=1), nn.BatchNorm1d(c_out), nn.ReLU(),
                         nn.Dropout(dropout))


class TemporalAttention(nn.Module):
    """Post-norm self-attention: LayerNorm(x + MHA(x)), time-first (B, T, C)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.mha(x, x, x, need_weights=False)
        return self.norm(x + a)


class AMNL(nn.Module):
    """The two-headed AMNL network.

    Args:
        config: sizes and dropouts; the defaults give 3,496,900 parameters (14 inputs).

    Example:
        >>> net = AMNL(ModelConfig()).eval()
        >>> out = net(torch.randn(4, 30, 14))
        >>> out.rul.shape, out.health.shape
        (torch.Size([4]), torch.Size([4, 3]))
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        chans = [cfg.in_features, *cfg.cnn_channels]
        self.cnn = nn.Sequential(*[ConvBlock(a, b, cfg.cnn_dropout) for a, b in zip(chans[:-1], chans[1:])])
        self.lstm = nn.LSTM(chans[-1], cfg.lstm_hidden, num_layers=cfg.lstm_layers, batch_first=True,
                            bidirectional=True, dropout=cfg.lstm_dropout if cfg.lstm_layers > 1 else 0.0)
        dim = 2 * cfg.lstm_hidden
        self.attention = TemporalAttention(dim, cfg.attn_heads, cfg.attn_dropout)
        self.funnel = _mlp([dim, *cfg.funnel], cfg.funnel_dropout)
        self.rul_head = _mlp([cfg.funnel[-1], *cfg.rul_head, 1], last_act=False)
        self.health_head = _mlp([cfg.funnel[-1], *cfg.health_head, cfg.n_health], last_act=False)
        # A ReLU on the output can be dead from step one (spec pitfall): the head ends linear,
        # starts at half the cap, and RUL is clamped at 0 only at inference.
        nn.init.constant_(self.rul_head[-1].bias, 0.5)
        self.grad_checkpoint = False

    def _lstm(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared encoding: (B, T, F) -> (B, funnel[-1])."""
        h = self.cnn(x.transpose(1, 2)).transpose(1, 2)  # (B, F, T) -> (B, T, 64)
        if self.grad_checkpoint and self.training:
            h = checkpoint(self._lstm, h, use_reentrant=False)  # (B, T, 512)
            h = checkpoint(self.attention, h, use_reentrant=False)
        else:
            h = self._lstm(h)  # (B, T, 512)
            h = self.attention(h)  # (B, T, 512)
        return self.funnel(h[:, -1])  # last time step (B, 512) -> (B, 32)

    def forward_heads(self, z: torch.Tensor) -> Output:
        rul = self.rul_head(z).squeeze(-1) * self.config.rul_scale  # (B,)
        if not self.training:  # a RUL is in [0, cap]: the labels are capped (data.rul_cap)
            rul = rul.clamp(0.0, self.config.rul_scale)
        return Output(rul, self.health_head(z))

    def forward(self, x: torch.Tensor) -> Output:
        return self.forward_heads(self.forward_features(x))

    #: Parameter groups reported by ``amnl info``, in data-flow order.
    COMPONENTS = ("cnn", "lstm", "attention", "funnel", "rul_head", "health_head")

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (``cnn``, ``lstm``, ``attention``, ``funnel``, heads)."""
        return {name: sum(p.numel() for p in getattr(self, name).parameters())
                for name in self.COMPONENTS}
