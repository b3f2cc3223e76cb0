"""Peak memory, its composition and speed of AMNL, measured on the machine at hand.

How memory is measured (the same for every precision, window and batch size):

* **Peak tensor memory, CPU** (allocator level): PyTorch's autograd profiler with
  ``profile_memory=True`` (its legacy, non-Kineto back end, as in
  ``torch.autograd.profiler_legacy.profile``) records every allocation and free of PyTorch's CPU
  allocator during one forward pass; the running sum of those events, in order, peaks at the
  *transient* peak. Adding the bytes
  already held when the pass starts (the weights and the input batch) gives the peak. This counts
  kernel workspaces (oneDNN's LSTM buffers, the fused attention's packed q/k/v) as well as
  tensors, like ``torch.cuda.max_memory_allocated`` does on a GPU. It does not count memory that
  bypasses PyTorch's allocator (thread stacks, oneDNN's JIT code, the Python heap): that shows in
  the process RSS instead.
* **Peak tensor memory, CUDA**: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``, minus what was allocated before the pass, plus weights and input;
  also ``max_memory_reserved`` (the caching allocator's pool) and the CUDA context (device memory
  in use that PyTorch did not reserve, from ``torch.cuda.mem_get_info``).
* **Activations** (tensor level, both devices): a ``TorchDispatchMode`` sees every tensor an
  operator returns; a new storage is counted while it lives (a weak-reference finaliser tells when
  it is freed). The peak of those live bytes is the *activations*; the rest of the transient
  peak is *workspace* (memory kernels allocate for themselves). Views and the identity dropout of
  eval mode share storage and are not counted twice.
* **By layer**: forward hooks on ``cnn``, ``lstm``, ``attention``, ``funnel``, ``rul_head`` and
  ``health_head`` attribute each new tensor to the component running, and record each
  component's output. On CPU the hooks also open a ``record_function`` range, so the profiler's
  allocations give each component's allocator-level peak too.
* The tensor-level and the allocator-level figures come from two separate passes: a
  ``TorchDispatchMode`` can change which kernel an operator picks (with one active, the fused
  bf16 attention on CPU takes a path that allocates about 8x more), so the peak is measured
  untracked.

Kineto (``torch.profiler.profile``) sees the same allocations but costs ~1 s and ~77 MB of RSS
to start, which would distort the RSS of a process that calibrates its own batch size.
* **Peak RSS**: a fresh ``python -c`` process builds the model and runs one pass; its peak
  resident set size is read after each stage (imports, model, inference), so the cost of
  importing PyTorch is visible on its own. On Linux the peak is ``VmHWM`` from
  ``/proc/self/status``: ``getrusage(RUSAGE_SELF).ru_maxrss`` would also count the parent's RSS
  at fork time (the kernel carries it across ``exec``), i.e. a profiler's own 400 MB. Elsewhere
  ``ru_maxrss`` is used.

Precisions: ``fp32``; ``bf16`` and ``fp16`` cast weights and inputs to that dtype (the model
stored in half width, as the study's "FP16 halves memory" means; :class:`~amnl.inference.runtime.TorchRuntime` instead
autocasts an FP32 model); ``int8`` is PyTorch dynamic quantisation of Linear and LSTM layers
(CPU only; attention and CNN stay FP32).

The allocator-level primitives (the recording of CPU allocations, :func:`measure_call_peak`,
:func:`weight_bytes`) and the runtime's own :func:`calibrate_memory` live in
:mod:`amnl.inference.memory`, since the torch runtime uses them and the pipeline does not import
the profiler; they are re-exported here.
"""

from __future__ import annotations

import copy
import gc
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from amnl.config import INFERENCE_PRECISIONS
from amnl.errors import ConfigError
from amnl.inference.memory import (  # noqa: F401  (re-exported: the profiler's modules use them)
    _PROFILER_LOCK,
    CALIBRATION_BATCHES,
    INPUT_SEED,
    _allocation_events,
    _allocator_peaks,
    _cpu_allocations,
    _is_cuda,
    _nbytes,
    _sync,
    _tensors_in,
    calibrate_memory,
    measure_call_peak,
    weight_bytes,
)
from amnl.model.precision import autocast as autocast_context
from amnl.model.precision import input_dtype
from amnl.profiling.tracking import (
    LayerMemory,
    _component_hooks,
    _component_ranges,
    _TensorTracker,
)

logger = logging.getLogger(__name__)

PRECISIONS = INFERENCE_PRECISIONS

CPU_METHOD = ("allocator level: autograd profiler (legacy back end) with profile_memory=True, "
              "running sum of allocation events in order; peak = weights + input + transient peak")
CUDA_METHOD = ("torch.cuda.max_memory_allocated after reset_peak_memory_stats; reserved = "
               "max_memory_reserved; context = device memory in use minus memory_reserved")
TENSOR_METHOD = ("TorchDispatchMode over operator outputs; a storage counts while alive "
                 "(weakref finaliser); views and eval-mode dropout are not counted twice")


# --------------------------------------------------------------------------- models and bytes

def prepare_model(model: nn.Module, precision: str, device: str = "cpu", *,
                  copy_model: bool = True) -> nn.Module:
    """``model`` in eval mode on ``device`` at ``precision``, by default as a copy.

    Args:
        model: the FP32 network (left untouched unless ``copy_model`` is False).
        precision: ``fp32``, ``bf16``/``fp16`` (weights cast) or ``int8`` (dynamic quantisation
            of Linear and LSTM, CPU only).
        device: ``cpu`` or ``cuda[:i]``.
        copy_model: False converts ``model`` in place (no second copy of the weights, e.g.
            when measuring a process's RSS).

    Raises:
        ValueError: unknown precision, or int8 on a GPU.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and not device.startswith("cpu"):
        raise ConfigError("int8 dynamic quantisation runs on CPU only; use --device cpu")
    m = (copy.deepcopy(model) if copy_model else model).eval()
    if precision == "int8":
        from amnl.export.quantize import quantize_torch

        return quantize_torch(m, inplace=not copy_model)
    return m.to(device=device, dtype=input_dtype(precision))



def make_input(batch: int, window: int, features: int, precision: str = "fp32",
               device: str = "cpu") -> torch.Tensor:
    """Seeded standard-normal windows (B, W, F), like z-scored sensors."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    x = torch.randn(batch, window, features, generator=g)
    return x.to(device=device, dtype=input_dtype(precision))


# --------------------------------------------------------------------------- one measurement

@dataclass
class MemoryMeasurement:
    """Memory of one forward pass (bytes).

    Attributes:
        batch: windows in the pass.
        peak: peak tensor memory, weights and input included (see the module docstring).
        weights: parameter and buffer bytes.
        inputs: bytes of the input batch.
        activations: tensor-level peak of live operator outputs.
        workspace: the rest of the transient peak (kernels' own buffers), >= 0.
        reserved: CUDA caching allocator's peak reservation (None on CPU).
        cuda_context: CUDA context and other non-PyTorch device memory (None on CPU).
        layers: per component (``cnn`` ... ``health_head``).
    """

    batch: int
    peak: int
    weights: int
    inputs: int
    activations: int
    workspace: int
    reserved: int | None = None
    cuda_context: int | None = None
    layers: dict[str, LayerMemory] = field(default_factory=dict)


def measure_memory(model: nn.Module, x: torch.Tensor, *, device: str = "cpu",
                   autocast: str = "fp32", warmup: bool = True) -> MemoryMeasurement:
    """Peak memory of ``model(x)`` under ``torch.inference_mode``, with its composition.

    Args:
        model: a network in eval mode on ``device`` (e.g. from :func:`prepare_model`).
        x: the input batch (B, W, F) on ``device``.
        device: ``cpu`` or ``cuda[:i]``.
        autocast: autocast precision around the pass (``fp32`` = none), as
            :class:`amnl.inference.runtime.TorchRuntime` runs ``bf16``/``fp16``.
        warmup: run one pass first so lazy initialisation is not measured.

    Returns:
        A :class:`MemoryMeasurement`.

    Example:
        >>> from amnl.model.factory import create_model
        >>> m = prepare_model(create_model("tiny"), "fp32")
        >>> measure_memory(m, make_input(4, 30, 14)).layers["cnn"].output  # 4 x 8 x 30 x 4 B
        3840
    """
    weights = weight_bytes(model)
    inputs = _nbytes(x)
    existing = [*(t for v in model.state_dict(keep_vars=True).values() for t in _tensors_in(v)), x]
    cuda = _is_cuda(device)
    with torch.inference_mode():
        if warmup:
            with autocast_context(autocast, device):
                model(x)
        # Pass 1, tensor level. A TorchDispatchMode can change the kernel an operator picks
        # (bf16 attention on CPU then allocates 8x more), so pass 2 measures without it.
        tracker = _TensorTracker(existing)
        with tracker, _component_hooks(model, tracker.enter, tracker.exit), \
                autocast_context(autocast, device):
            model(x)
        gc.collect()
        _sync(device)
        # Pass 2, allocator level, untracked.
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            with autocast_context(autocast, device):
                out = model(x)
            _sync(device)
            transient = torch.cuda.max_memory_allocated(device) - before
            reserved = torch.cuda.max_memory_reserved(device)
            free, total = torch.cuda.mem_get_info(torch.device(device))
            context = max(0, (total - free) - torch.cuda.memory_reserved(device))
            layer_peaks: dict[str, int] = {}
        else:
            with (_cpu_allocations() as events, _component_ranges(model),
                  autocast_context(autocast, device)):
                out = model(x)
            transient, layer_peaks = _allocator_peaks(events)
            reserved = context = None
        del out
    for name, layer in tracker.layers.items():
        layer.weights = weight_bytes(getattr(model, name))
        if not cuda:
            layer.allocator_peak = layer_peaks.get(name, 0)
    activations = tracker.peak
    return MemoryMeasurement(
        batch=int(x.shape[0]), peak=weights + inputs + max(transient, activations),
        weights=weights, inputs=inputs, activations=activations,
        workspace=max(0, transient - activations), reserved=reserved, cuda_context=context,
        layers=dict(tracker.layers))
