"""AMNL: CNN -> BiLSTM -> multi-head self-attention -> FC funnel -> RUL head + health head.

Shapes use B = batch, T = window length, F = input features. Eval mode runs the network's
inference form (time-last convolutions with BatchNorm folded in, attention of the last step
only), the same function as the layers as training runs them and the one implementation every
runtime uses, torch and the ONNX export alike (:attr:`AMNL.inference_form`).
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
    """Conv1d(kernel 3, padding 1) -> BatchNorm -> ReLU -> Dropout, channel-first (B, C, T)."""

    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__(nn.Conv1d(c_in, c_out, 3, padding=1), nn.BatchNorm1d(c_out), nn.ReLU(),
                         nn.Dropout(dropout))

    def time_last(self, x: torch.Tensor) -> torch.Tensor:
        """The block's eval-mode function on time-last input: (B, T, C_in) -> (B, T, C_out).

        One matrix product over the three time taps (gathered in one indexing op), with
        BatchNorm's running statistics folded into its weights: no (B, C, T) transposes, and a
        MatMul that an INT8 quantiser reaches (docs/deployment-inference.md).
        """
        conv, bn = self[0], self[1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
        # row k * C_in + c multiplies input channel c at time t + k - 1 (padding 1)
        w = (conv.weight * scale[:, None, None]).permute(2, 1, 0).reshape(-1, conv.out_channels)
        b = (conv.bias - bn.running_mean) * scale + bn.bias
        p = nn.functional.pad(x, (0, 0, 1, 1))  # a zero step before and after: (B, T + 2, C_in)
        # the window is fixed in a trace (the ONNX export's time axis): a constant index
        t = int(x.shape[1])
        steps = torch.arange(t, device=x.device)
        taps = p[:, steps[:, None] + torch.arange(3, device=x.device)]  # one gather: (B, T, 3, C_in)
        taps = taps.reshape(-1, t, 3 * conv.in_channels)  # (B, T, 3 C_in)
        return torch.relu(torch.matmul(taps, w) + b)


class ConvStack(nn.Sequential):
    """The CNN: :class:`ConvBlock` s on time-last input, (B, T, F) -> (B, T, C).

    Training runs the blocks as written (channel-first); eval mode runs
    :meth:`ConvBlock.time_last`, the same function (see :attr:`AMNL.inference_form`).
    """

    inference_form = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.inference_form:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        for block in self:
            x = block.time_last(x)
        return x


class TemporalAttention(nn.Module):
    """Post-norm self-attention pooled at the last step: LayerNorm(x + MHA(x))[:, -1],
    (B, T, C) -> (B, C), batch-first.

    Training attends every step and keeps the last; eval mode computes the last step only
    (:meth:`last_step`), the same function (see :attr:`AMNL.inference_form`).
    """

    inference_form = True

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.inference_form:
            a, _ = self.mha(x, x, x, need_weights=False)
            return self.norm(x + a)[:, -1]
        return self.last_step(x)

    def last_step(self, x: torch.Tensor) -> torch.Tensor:
        """``LayerNorm(x + MHA(x))[:, -1]`` without attention dropout: (B, T, C) -> (B, C).

        Only the last step's query is attended, and the key and value projections move to the
        query side by associativity. Per head (d = C / heads):
        ``q . (Wk y_t + bk) = (Wk^T q) . y_t + q . bk``, whose last term is the same for every
        ``t`` and cancels in the softmax, and ``sum_t a_t (Wv y_t + bv) = Wv (sum_t a_t y_t) +
        bv`` (the weights sum to 1). At window 30 this is 2.6 M FLOPs a window against 65 M
        for full self-attention, and no (B, T, C) query, key or value tensor is made. The ONNX
        export traces this too (:mod:`amnl.export.onnx`): one implementation for every runtime.
        """
        mha = self.mha
        if mha.in_proj_weight is None or mha.in_proj_bias is None:
            raise TypeError("last-step attention needs one packed, biased in-projection")
        heads, d, e = mha.num_heads, mha.head_dim, mha.embed_dim  # ints: no shape ops in a trace
        wq, wk, wv = mha.in_proj_weight.chunk(3)  # (C, C) each
        bq, _, bv = mha.in_proj_bias.chunk(3)
        last = x[:, -1]  # (B, C)
        q = nn.functional.linear(last, wq * d ** -0.5, bq * d ** -0.5)  # softmax scale folded
        q = q.reshape(-1, heads, d).transpose(0, 1)  # (h, B, d)
        qk = torch.matmul(q, wk.reshape(heads, d, e)).transpose(0, 1)  # Wk^T q: (B, h, C)
        att = torch.softmax(torch.matmul(qk, x.transpose(1, 2)), dim=-1)  # (B, h, T)
        pooled = torch.matmul(att, x).transpose(0, 1)  # sum_t a_t y_t: (h, B, C)
        a = torch.matmul(pooled, wv.reshape(heads, d, e).transpose(1, 2))  # (h, B, d)
        a = a.transpose(0, 1).reshape(-1, e) + bv  # (B, C)
        return self.norm(last + mha.out_proj(a))


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
        self.cnn = ConvStack(*[ConvBlock(a, b, cfg.cnn_dropout) for a, b in zip(chans[:-1], chans[1:])])
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

    @property
    def inference_form(self) -> bool:
        """Whether eval mode runs the inference form of the CNN and the attention (default):
        time-last convolutions with BatchNorm folded in, and last-step attention. It is the
        same function as the layers as training runs them (``False``: channel-first
        convolutions, self-attention over every step, the last kept), to 3e-5 cycles of RUL on
        the bundled models' test windows (``tests/model/test_network.py``); ``False`` is kept
        for that comparison and for ``amnl bench``'s ``torch-full`` row."""
        return self.attention.inference_form

    @inference_form.setter
    def inference_form(self, value: bool) -> None:
        self.cnn.inference_form = self.attention.inference_form = bool(value)

    def _lstm(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared encoding: (B, T, F) -> (B, funnel[-1])."""
        h = self.cnn(x)  # (B, T, 64)
        if self.grad_checkpoint and self.training:
            h = checkpoint(self._lstm, h, use_reentrant=False)  # (B, T, 512)
            h = checkpoint(self.attention, h, use_reentrant=False)  # last step: (B, 512)
        else:
            h = self.attention(self._lstm(h))
        return self.funnel(h)  # (B, 512) -> (B, 32)

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
