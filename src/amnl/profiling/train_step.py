"""Peak memory and time of one training step (``amnl profile --train``)."""

from __future__ import annotations

import copy
import gc
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from amnl.model.precision import autocast as autocast_context

logger = logging.getLogger(__name__)

from amnl.profiling.memory import (
    INPUT_SEED,
    _allocator_peaks,
    _cpu_allocations,
    _is_cuda,
    _nbytes,
    _sync,
    weight_bytes,
)


@dataclass
class TrainStepMeasurement:
    """Peak memory (bytes) and time of one training step.

    Attributes:
        peak: weights + optimiser state + input + the step's transient peak.
        weights: parameter and buffer bytes.
        optimizer_state: AdamW moments (allocated on the first step, so resident here).
        saved_activations: bytes autograd saved for backward (unique storages, no weights).
        transient: allocator-level (CPU) or allocated (CUDA) peak during the step.
        step_ms: median wall time of a step.
    """

    batch: int
    window: int
    precision: str
    grad_checkpoint: bool
    peak: int
    weights: int
    optimizer_state: int
    saved_activations: int
    transient: int
    step_ms: float


def measure_training_step(model: nn.Module, *, batch: int = 256, window: int = 30,
                          precision: str = "fp32", grad_checkpoint: bool = False,
                          device: str = "cpu", repeats: int = 3,
                          loss: str = "amnl") -> TrainStepMeasurement:
    """Peak memory and step time of one AdamW training step of ``model`` (a copy).

    The step is the trainer's: autocast forward, dual loss, backward, gradient clipping,
    AdamW. A first untimed step creates the optimiser state, so the measured step is a
    steady-state one.

    Args:
        model: the FP32 network (copied).
        batch: windows per step.
        window: window length.
        precision: autocast precision, ``fp32``, ``bf16`` or ``fp16`` (CUDA).
        grad_checkpoint: recompute BiLSTM and attention in the backward pass.
        device: ``cpu`` or ``cuda[:i]``.
        repeats: timed steps (median reported).
        loss: the dual loss by name (:func:`amnl.train.losses.create_loss`).
    """
    from amnl.train.losses import create_loss

    net = copy.deepcopy(model).to(device).train()
    net.grad_checkpoint = grad_checkpoint
    cap = net.config.rul_scale  # the RUL cap of the run the model belongs to
    loss_fn = create_loss(loss, cap).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(INPUT_SEED)
    x = torch.randn(batch, window, net.config.in_features, generator=g).to(device)
    rul = (torch.rand(batch, generator=g) * cap).to(device)
    health = torch.randint(0, net.config.n_health, (batch,), generator=g).to(device)
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            saved[st.data_ptr()] = st.nbytes()
        return t

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast_context(precision, device):
            out = net(x)
        total, _, _ = loss_fn(out.rul, out.health, rul, health)
        total.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    step()  # creates AdamW's moments
    opt.zero_grad(set_to_none=True)
    gc.collect()
    weights = weight_bytes(net)
    opt_state = sum(_nbytes(t) for s in opt.state.values() for t in s.values()
                    if isinstance(t, torch.Tensor))
    _sync(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if _is_cuda(device):
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            step()
            _sync(device)
            transient = torch.cuda.max_memory_allocated(device) - before
        else:
            with _cpu_allocations() as events:
                step()
            transient = _allocator_peaks(events)[0]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return TrainStepMeasurement(batch, window, precision, grad_checkpoint,
                                weights + opt_state + _nbytes(x) + transient, weights, opt_state,
                                sum(saved.values()), transient,
                                float(np.median(times)) if times else float("nan"))
