"""Analytic FLOPs of one window, by component, for each graph a runtime runs."""

from __future__ import annotations

import itertools
from typing import Any

#: The graph each runtime runs: the network's inference form (torch and ONNX Runtime alike:
#: last-step attention) or, for ``torch-full``, its layers as training runs them.
GRAPH_OF_RUNTIME = {"torch": "inference", "onnx": "inference", "torch-full": "training"}
GRAPHS = ("inference", "training")


# -- FLOPs ------------------------------------------------------------------------------------

def flops_per_window(config: Any, window: int, *, graph: str = "inference") -> dict[str, int]:
    """Multiply-add FLOPs (2 per MAC) of one window, by component; element-wise ops excluded.

    Args:
        config: an :class:`amnl.config.ModelConfig`.
        window: window length T.
        graph: ``inference`` (eval mode, every runtime: the last step's query only, the
            key/value projections moved to the query side, see
            :meth:`amnl.model.network.TemporalAttention.last_step`) or ``training`` (self-attention
            over all T queries, as training computes it).

    Returns:
        FLOPs per component (``cnn``, ``lstm``, ``attention``, ``funnel``, ``heads``) and
        ``total``.

    Example:
        >>> flops_per_window(ModelConfig(), 30)["total"]  # doctest: +SKIP
        139703936
    """
    t, h = window, config.lstm_hidden
    chans = [config.in_features, *config.cnn_channels]
    cnn = sum(2 * t * 3 * a * b for a, b in itertools.pairwise(chans))
    lstm, inp = 0, chans[-1]
    for _ in range(config.lstm_layers):
        lstm += 2 * t * 2 * 4 * h * (inp + h)  # 2 directions, 4 gates, input + recurrent
        inp = 2 * h
    e, heads = 2 * h, config.attn_heads
    if graph == "training":
        attention = 2 * t * e * 3 * e + 2 * 2 * t * t * e + 2 * t * e * e
    elif graph == "inference":
        attention = 4 * (2 * e * e) + 2 * 2 * t * e * heads  # q, Wk^T q, Wv, out; scores, pool
    else:
        raise ValueError(f"graph must be one of {', '.join(GRAPHS)}, got {graph!r}")

    def mlp(widths: list[int]) -> int:
        return sum(2 * a * b for a, b in itertools.pairwise(widths))

    funnel = mlp([e, *config.funnel])
    heads_flops = (mlp([config.funnel[-1], *config.rul_head, 1])
                   + mlp([config.funnel[-1], *config.health_head, config.n_health]))
    out = {"cnn": cnn, "lstm": lstm, "attention": attention, "funnel": funnel, "heads": heads_flops}
    out["total"] = sum(out.values())
    return out
