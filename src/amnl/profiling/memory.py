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
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from amnl.config import INFERENCE_PRECISIONS, MB
from amnl.errors import ConfigError
from amnl.inference.planner import MemoryFit, fit_memory
from amnl.model.precision import autocast as autocast_context
from amnl.model.precision import input_dtype
from amnl.profiling.tracking import (
    RANGE_PREFIX,
    LayerMemory,
    _component_hooks,
    _component_ranges,
    _TensorTracker,
)

logger = logging.getLogger(__name__)

PRECISIONS = INFERENCE_PRECISIONS
#: Batch sizes a quick calibration measures (``TorchRuntime(batch_size="auto")``).
CALIBRATION_BATCHES = (8, 16, 32)
INPUT_SEED = 0

CPU_METHOD = ("allocator level: autograd profiler (legacy back end) with profile_memory=True, "
              "running sum of allocation events in order; peak = weights + input + transient peak")
CUDA_METHOD = ("torch.cuda.max_memory_allocated after reset_peak_memory_stats; reserved = "
               "max_memory_reserved; context = device memory in use minus memory_reserved")
TENSOR_METHOD = ("TorchDispatchMode over operator outputs; a storage counts while alive "
                 "(weakref finaliser); views and eval-mode dropout are not counted twice")
#: The autograd profiler is process-wide: one recording at a time (several runtimes may
#: calibrate from several threads).
_PROFILER_LOCK = threading.Lock()


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


def _tensors_in(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Tensors inside a state-dict value: tensors, tuples, packed quantised parameters."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors_in(o, depth + 1)
    elif isinstance(obj, torch.ScriptObject) and depth < 4:
        try:  # packed int8 weights unpack to (qint8 weight, fp32 bias, ...) in __getstate__
            yield from _tensors_in(obj.__getstate__(), depth + 1)
        except (RuntimeError, AttributeError):
            logger.debug("cannot unpack %r to count its bytes", obj)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def weight_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (int8 packed weights at 1 byte each)."""
    # keep every tensor alive while counting: unpacked int8 weights are fresh tensors, and a
    # freed one's address could be reused by the next and wrongly look like a duplicate
    tensors = [t for value in module.state_dict(keep_vars=True).values() for t in _tensors_in(value)]
    seen: set[int] = set()
    total = 0
    for t in tensors:
        key = id(t) if t.is_quantized else t.data_ptr()
        if key not in seen:
            seen.add(key)
            total += _nbytes(t)
    return total


def make_input(batch: int, window: int, features: int, precision: str = "fp32",
               device: str = "cpu") -> torch.Tensor:
    """Seeded standard-normal windows (B, W, F), like z-scored sensors."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    x = torch.randn(batch, window, features, generator=g)
    return x.to(device=device, dtype=input_dtype(precision))


def _is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def _sync(device: str) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize(device)

# --------------------------------------------------------------------------- allocator level

@contextmanager
def _cpu_allocations() -> Iterator[list]:
    """Record CPU allocator events; the yielded list is filled on exit (see
    :func:`_allocation_events`).

    Uses the autograd profiler's legacy (non-Kineto) back end, the one behind
    ``torch.autograd.profiler_legacy.profile(profile_memory=True)``, and reads its raw records:
    they keep every allocation in order, and starting it costs nothing like Kineto's ~1 s and
    ~77 MB of RSS (which would spoil the RSS of a process that calibrates its batch size).
    """
    from torch.autograd import profiler_legacy

    with _PROFILER_LOCK:  # the profiler is process-wide: one recording at a time
        if torch.autograd._profiler_enabled():
            raise RuntimeError("cannot measure CPU memory while a PyTorch profiler is running")
        config = profiler_legacy.profile(use_cuda=False, profile_memory=True).config()
        events: list = []
        torch.autograd._enable_profiler_legacy(config)
        try:
            yield events
        finally:
            events.extend(_allocation_events(torch.autograd._disable_profiler_legacy()))


def _allocation_events(thread_records) -> list[tuple[float, int, str | None]]:
    """(time us, bytes (+alloc / -free), component or None), in time order.

    Within a thread the records are already in order, so each allocation belongs to the
    ``amnl::<name>`` range (opened by the forward hooks) that is open when it happens.
    """
    start = next(r for records in thread_records for r in records
                 if r.name() == "__start_profile")
    out: list[tuple[float, int, str | None]] = []
    for records in thread_records:
        open_ranges: dict[tuple[int, int], str] = {}
        current: str | None = None
        for r in records:
            kind = r.kind()
            if kind == "memory_alloc":
                out.append((start.cpu_elapsed_us(r), int(r.cpu_memory_usage()), current))
            elif kind == "push" and r.name().startswith(RANGE_PREFIX):
                current = r.name()[len(RANGE_PREFIX):]
                open_ranges[(r.handle(), r.node_id())] = current
            elif kind == "pop" and open_ranges.pop((r.handle(), r.node_id()), None):
                current = None
    out.sort(key=lambda e: e[0])  # stable: same-time events keep their thread order
    return out


def _allocator_peaks(events: list[tuple[float, int, str | None]]) -> tuple[int, dict[str, int]]:
    """Transient peak of the running allocation sum, overall and per component.

    A component's peak is the most the running sum rose above its value just before the
    component's first event.
    """
    running = peak = 0
    per_layer: dict[str, int] = {}
    start: dict[str, int] = {}
    for _t, size, layer in events:
        if layer is not None and layer not in start:
            start[layer] = running
            per_layer[layer] = 0
        running += size
        peak = max(peak, running)
        if layer is not None:
            per_layer[layer] = max(per_layer[layer], running - start[layer])
    return peak, per_layer

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


def measure_call_peak(fn: Callable[[], Any], device: str = "cpu") -> int:
    """Transient peak bytes PyTorch's allocator reaches while ``fn()`` runs.

    The same methods as :func:`measure_memory` (allocator events on CPU, the caching
    allocator's peak on CUDA), for any callable, e.g. a chunked ``TorchRuntime`` call. Memory
    held before the call (weights) is not included.

    Raises:
        RuntimeError: on CPU, a PyTorch profiler is already running in this thread.
    """
    if _is_cuda(device):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    with _cpu_allocations() as events:
        fn()
    return _allocator_peaks(events)[0]

def calibrate_memory(model: nn.Module, *, window: int, features: int, device: str = "cpu",
                     autocast: str = "fp32", dtype: torch.dtype = torch.float32,
                     batches: Sequence[int] = CALIBRATION_BATCHES,
                     points: dict[int, int] | None = None) -> MemoryFit:
    """Measure the peak at a few batch sizes and fit the memory line (``batch_size="auto"``).

    Only the allocator-level peak is measured (:func:`measure_call_peak`): no tensor tracking,
    whose ``TorchDispatchMode`` would import ``torch._dynamo`` (about 75 MB of RSS). Small
    batches keep the calibration's own peak (and so the process's RSS) low; a caller that
    plans beyond them measures the planned batch too (pass the same ``points``) and refits.

    Args:
        model: the network as it will run (eval mode, on ``device``).
        window: window length W.
        features: inputs per cycle F.
        device: where it runs.
        autocast: autocast precision around the passes.
        dtype: input dtype.
        batches: batch sizes to measure (those already in ``points`` are not measured again).
        points: ``{batch: peak bytes}`` measured so far; updated in place.

    Returns:
        The :class:`MemoryFit` of all points; ``resident`` = the weights.

    Raises:
        RuntimeError: on CPU, a PyTorch profiler is already running.
    """
    points = {} if points is None else points
    g = torch.Generator().manual_seed(INPUT_SEED)
    weights = weight_bytes(model)
    with torch.inference_mode(), autocast_context(autocast, device):
        for b in batches:
            if b in points:
                continue
            x = torch.randn(b, window, features, generator=g).to(device=device, dtype=dtype)
            if not points:
                model(x)  # warm-up: lazy initialisation is not per-sample memory
            points[b] = weights + _nbytes(x) + measure_call_peak(lambda x=x: model(x), device)
    fit = fit_memory(list(points), list(points.values()), resident=weights)
    logger.info("memory line: %.1f MB + %.3f MB x batch (R^2 %.3f, batches %s)", fit.base / MB,
                fit.per_sample / MB, fit.r2, sorted(points))
    return fit
