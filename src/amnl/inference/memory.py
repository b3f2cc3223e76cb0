"""The runtime's own memory measurement: the peak PyTorch's allocator reaches in a forward
pass, and the memory line ``TorchRuntime(batch_size="auto")`` plans its chunks from.

The method is the profiler's (:mod:`amnl.profiling.memory`, which builds its full measurements on
these functions): on CPU the autograd profiler's legacy back end records every allocation and
free of PyTorch's allocator, in order, and the running sum peaks at the transient peak; on CUDA
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. Here, below the profiler
in the data flow, so that inference does not import it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from amnl.config import MB
from amnl.inference.planner import MemoryFit, fit_memory
from amnl.model.precision import autocast as autocast_context

logger = logging.getLogger(__name__)

#: Batch sizes a quick calibration measures (``TorchRuntime(batch_size="auto")``).
CALIBRATION_BATCHES = (8, 16, 32)
INPUT_SEED = 0
#: Prefix of the ``record_function`` ranges whose allocations are attributed to a component
#: (the profiler's forward hooks open ``amnl::<component>``).
RANGE_PREFIX = "amnl::"
#: The autograd profiler is process-wide: one recording at a time (several runtimes may
#: calibrate from several threads).
_PROFILER_LOCK = threading.Lock()


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
