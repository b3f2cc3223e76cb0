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
stored in half width, as the study's "FP16 halves memory" means; :class:`TorchEngine` instead
autocasts an FP32 model); ``int8`` is PyTorch dynamic quantisation of Linear and LSTM layers
(CPU only; attention and CNN stay FP32).
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from amnl.deploy.planner import LatencyFit, MemoryFit, fit_latency, fit_memory
from amnl.model.inference import autocast as autocast_context
from amnl.model.network import AMNL

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DEFAULT_PRECISIONS = {"cpu": ("fp32", "bf16", "int8"), "cuda": ("fp32", "fp16", "bf16")}
DEFAULT_BATCH_SIZES = (1, 8, 32, 64, 128, 256, 512)
#: The training window and the longer window the memory study also quotes (spec section 1).
DEFAULT_WINDOWS = (30, 50)
DEFAULT_WARMUP = 2
DEFAULT_REPEATS = 5
#: Batch sizes a quick calibration measures (``TorchEngine(batch_size="auto")``).
CALIBRATION_BATCHES = (8, 16, 32)
#: The study's layer types (spec section 5) and the network components in each.
LAYER_TYPES: dict[str, tuple[str, ...]] = {
    "CNN": ("cnn",), "BiLSTM": ("lstm",), "attention": ("attention",),
    "FC and heads": ("funnel", "rul_head", "health_head"),
}
#: Prefix of the profiler ranges opened around each component.
RANGE_PREFIX = "amnl::"
INPUT_SEED = 0
MB = 1e6

CPU_METHOD = ("allocator level: autograd profiler (legacy back end) with profile_memory=True, "
              "running sum of allocation events in order; peak = weights + input + transient peak")
CUDA_METHOD = ("torch.cuda.max_memory_allocated after reset_peak_memory_stats; reserved = "
               "max_memory_reserved; context = device memory in use minus memory_reserved")
TENSOR_METHOD = ("TorchDispatchMode over operator outputs; a storage counts while alive "
                 "(weakref finaliser); views and eval-mode dropout are not counted twice")
RSS_METHOD = ("fresh `python -c` process; peak RSS per stage from /proc/self/status VmHWM "
              "(ru_maxrss would include the parent's RSS at fork)")


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
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and not device.startswith("cpu"):
        raise ValueError("int8 dynamic quantisation runs on CPU only; use --device cpu")
    m = (copy.deepcopy(model) if copy_model else model).eval()
    if precision == "int8":
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            return torch.ao.quantization.quantize_dynamic(m, {nn.Linear, nn.LSTM},
                                                          dtype=torch.qint8, inplace=not copy_model)
    return m.to(device=device, dtype=input_dtype(precision))


def input_dtype(precision: str) -> torch.dtype:
    """Dtype of the input windows for a model prepared at ``precision``."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


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


# --------------------------------------------------------------------------- tensor tracking

@dataclass
class LayerMemory:
    """Memory of one network component in one forward pass (bytes).

    Attributes:
        weights: parameters and buffers.
        activations: every tensor the component's operators created (their sum).
        output: the tensor(s) the component returns.
        peak: tensor-level peak of live bytes the component added.
        allocator_peak: allocator-level peak the component added (CPU only, else None).
    """

    weights: int = 0
    activations: int = 0
    output: int = 0
    peak: int = 0
    allocator_peak: int | None = None


class _TensorTracker(TorchDispatchMode):
    """Counts live bytes of tensors created by operators, overall and per component."""

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.ignored = {t.untyped_storage().data_ptr() for t in existing if not t.is_quantized}
        self.live = 0
        self.peak = 0
        self.layers: dict[str, LayerMemory] = {}
        self._finalizers: dict[int, weakref.finalize] = {}
        self._current: str | None = None
        self._entry_live = 0

    def _free(self, ptr: int, n: int) -> None:
        self.live -= n
        self._finalizers.pop(ptr, None)

    def _track(self, t: torch.Tensor) -> None:
        if t.is_quantized or t.device.type == "meta":
            return  # quantised outputs of dynamic int8 are fp32 anyway; meta has no memory
        st = t.untyped_storage()
        ptr, n = st.data_ptr(), st.nbytes()
        if n == 0 or ptr in self.ignored or ptr in self._finalizers:
            return  # empty, pre-existing (weights, input), or a view of a counted storage
        self._finalizers[ptr] = weakref.finalize(st, self._free, ptr, n)
        self.live += n
        self.peak = max(self.peak, self.live)
        if self._current is not None:
            layer = self.layers[self._current]
            layer.activations += n
            layer.peak = max(layer.peak, self.live - self._entry_live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def enter(self, name: str) -> None:
        self.layers.setdefault(name, LayerMemory())
        self._current, self._entry_live = name, self.live

    def exit(self, name: str, output: Any) -> None:
        seen: set[int] = set()
        for t in tree_flatten(output)[0]:
            if isinstance(t, torch.Tensor) and not t.is_quantized:
                st = t.untyped_storage()
                if st.data_ptr() not in seen:
                    seen.add(st.data_ptr())
                    self.layers[name].output += st.nbytes()
        self._current = None


@contextmanager
def _component_hooks(model: nn.Module, enter: Callable[[str], None],
                     leave: Callable[[str, Any], None]) -> Iterator[None]:
    """Call ``enter(name)`` / ``leave(name, output)`` around each component's forward."""
    handles = []
    for name in AMNL.COMPONENTS:
        module = getattr(model, name, None)
        if module is None:
            continue
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: enter(n)))
        handles.append(module.register_forward_hook(lambda m, a, out, n=name: leave(n, out)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _component_ranges(model: nn.Module) -> Iterator[None]:
    """A profiler range ``amnl::<component>`` around each component's forward."""
    opened: list = []

    def enter(name: str) -> None:
        opened.append(torch.autograd.profiler.record_function(RANGE_PREFIX + name))
        opened[-1].__enter__()

    def leave(name: str, output: Any) -> None:
        opened.pop().__exit__(None, None, None)

    with _component_hooks(model, enter, leave):
        yield


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
            :class:`amnl.deploy.engines.TorchEngine` runs ``bf16``/``fp16``.
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
    allocator's peak on CUDA), for any callable, e.g. a chunked ``TorchEngine`` call. Memory
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


@dataclass
class Latency:
    """Forward-pass latency percentiles (ms) and throughput (windows/s, at the median)."""

    p50_ms: float
    p95_ms: float
    throughput: float


def measure_latency(model: nn.Module, x: torch.Tensor, *, device: str = "cpu",
                    autocast: str = "fp32", warmup: int = DEFAULT_WARMUP,
                    repeats: int = DEFAULT_REPEATS) -> Latency:
    """Latency of ``model(x)`` over ``repeats`` passes after ``warmup`` passes."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    with torch.inference_mode(), autocast_context(autocast, device):
        for _ in range(warmup):
            model(x)
        _sync(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1000.0)
    p50, p95 = np.percentile(times, [50, 95])
    return Latency(float(p50), float(p95), float(x.shape[0] / p50 * 1000.0))


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


# --------------------------------------------------------------------------- peak RSS

#: The child process of :func:`measure_rss`. argv[1] is a JSON job; prints one JSON line.
_RSS_CHILD = r"""
import json, resource, sys
job = json.loads(sys.argv[1])
scale = 1 if sys.platform == "darwin" else 1024
stages = {}
def peak_rss():
    try:  # this process's high-water mark (ru_maxrss also counts the parent before exec)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
def mark(name):
    stages[name] = peak_rss()
mark("python")
import numpy as np
import torch
mark("import_torch")
if job["threads"]:
    torch.set_num_threads(job["threads"])
from amnl.deploy.engines import TorchEngine
from amnl.deploy.profiling import prepare_model, make_input
mark("import_amnl")
src = job["source"]
if src.get("run"):
    from safetensors.torch import load_file
    from amnl.config import RunConfig
    from amnl.model.network import AMNL
    cfg = RunConfig.load(src["run"] + "/config.json")
    model = AMNL(cfg.model)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in load_file(src["run"] + "/model.safetensors").items()})
else:
    from amnl.model.factory import create_model
    torch.manual_seed(0)
    model = create_model(src.get("size", "base"), in_features=src.get("in_features", 14))
features = model.config.in_features
mark("model")
if job["mode"] == "engine":
    engine = TorchEngine(model, device=job["device"], precision=job["precision"],
                         batch_size=job["chunk"], memory_budget_mb=job["budget_mb"])
    x = make_input(job["batch"], job["window"], features).numpy()
    mark("prepared")
    engine(x)
else:
    model = prepare_model(model, job["precision"], job["device"], copy_model=False)
    x = make_input(job["batch"], job["window"], features, job["precision"], job["device"])
    mark("prepared")
    with torch.inference_mode():
        model(x)
mark("inference")
now = {}
try:  # what the resident pages are at the end: anonymous (heap, tensors) or file (libraries)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")):
                now[line.split(":")[0]] = int(line.split()[1]) * 1024
except OSError:
    pass
print(json.dumps({"stages": stages, "now": now}))
"""


@dataclass
class RssMeasurement:
    """Peak resident set size of a fresh process after each stage (bytes).

    Attributes:
        stages: ``python``, ``import_torch``, ``import_amnl``, ``model``, ``prepared``,
            ``inference``; each the process's peak RSS so far.
        final: the current RSS at the end split by kind (Linux ``VmRSS``, ``RssAnon``,
            ``RssFile``, ``RssShmem``): file pages are the shared libraries' code and data.
    """

    stages: dict[str, int]
    final: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.stages.values())


def measure_rss(source: dict, *, precision: str = "fp32", window: int = 30, batch: int = 256,
                device: str = "cpu", mode: str = "forward", chunk: int | str = 1024,
                budget_mb: float | None = None, threads: int = 0,
                env: dict[str, str] | None = None, timeout_s: float = 300.0) -> RssMeasurement:
    """Peak RSS of a fresh Python process that runs one inference.

    Args:
        source: ``{"size": "base", "in_features": 14}`` (random init) or ``{"run": DIR}``.
        precision: as in :func:`prepare_model` (``mode="forward"``) or
            :class:`~amnl.deploy.engines.TorchEngine` (``mode="engine"``).
        window: window length.
        batch: windows in the one inference call.
        device: ``cpu`` or ``cuda``.
        mode: ``forward`` (one pass of the prepared model) or ``engine`` (a ``TorchEngine``
            call, chunked by ``chunk``/``budget_mb``).
        chunk: the engine's batch size (``"auto"`` lets the planner choose).
        budget_mb: the engine's memory budget for ``chunk="auto"``.
        threads: torch threads in the child (0 = default).
        env: extra environment variables for the child (e.g. glibc ``MALLOC_*`` tunables).
        timeout_s: give up after this long.

    Raises:
        RuntimeError: the child failed (its stderr is in the message).
    """
    job = {"source": {k: str(v) if k == "run" else v for k, v in source.items()},
           "precision": precision, "window": window, "batch": batch, "device": device,
           "mode": mode, "chunk": chunk, "budget_mb": budget_mb, "threads": threads}
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, json.dumps(job)],
                          capture_output=True, text=True, timeout=timeout_s, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"RSS child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    data = json.loads(proc.stdout.splitlines()[-1])
    return RssMeasurement({k: int(v) for k, v in data["stages"].items()},
                          {k: int(v) for k, v in data["now"].items()})


# --------------------------------------------------------------------------- the whole profile

@dataclass
class ProfileRow:
    """One precision x window x batch size: memory, speed and (optionally) RSS."""

    precision: str
    window: int
    batch: int
    device: str
    memory: MemoryMeasurement
    latency: Latency | None = None
    rss: int | None = None

    def to_dict(self) -> dict:
        m = self.memory
        d = {"precision": self.precision, "window": self.window, "batch": self.batch,
             "device": self.device, "peak": m.peak, "weights": m.weights, "inputs": m.inputs,
             "activations": m.activations, "workspace": m.workspace, "reserved": m.reserved,
             "cuda_context": m.cuda_context, "rss": self.rss,
             "layers": {k: asdict(v) for k, v in m.layers.items()},
             "layer_types": layer_type_totals(m.layers)}
        if self.latency is not None:
            d.update(latency_p50_ms=self.latency.p50_ms, latency_p95_ms=self.latency.p95_ms,
                     throughput=self.latency.throughput)
        return d


def layer_type_totals(layers: dict[str, LayerMemory]) -> dict[str, dict[str, int]]:
    """Sum components into the study's layer types (CNN, BiLSTM, attention, FC and heads)."""
    out = {}
    for kind, names in LAYER_TYPES.items():
        parts = [layers[n] for n in names if n in layers]
        out[kind] = {"weights": sum(p.weights for p in parts),
                     "activations": sum(p.activations for p in parts),
                     "output": sum(p.output for p in parts)}
    return out


@dataclass
class FitRow:
    """The memory and latency lines of one precision and window."""

    precision: str
    window: int
    device: str
    memory: MemoryFit
    latency: LatencyFit | None

    def to_dict(self) -> dict:
        d = {"precision": self.precision, "window": self.window, "device": self.device,
             "base": self.memory.base, "per_sample": self.memory.per_sample,
             "r2": self.memory.r2, "max_residual": self.memory.max_residual,
             "resident": self.memory.resident,
             "max_measured_batch": self.memory.max_measured_batch}
        if self.latency is not None:
            d.update(latency_base_ms=self.latency.base_ms,
                     latency_per_sample_ms=self.latency.per_sample_ms,
                     latency_r2=self.latency.r2)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FitRow:
        mem = MemoryFit(d["base"], d["per_sample"], d["r2"], d.get("max_residual", 0.0),
                        d.get("resident", 0.0), d.get("max_measured_batch", 0))
        lat = (LatencyFit(d["latency_base_ms"], d["latency_per_sample_ms"], d["latency_r2"])
               if "latency_base_ms" in d else None)
        return cls(d["precision"], int(d["window"]), d.get("device", "cpu"), mem, lat)


@dataclass
class ProfileReport:
    """Everything ``amnl profile`` measured, with how and where."""

    machine: dict
    model: dict
    rows: list[ProfileRow]
    fits: list[FitRow]
    method: dict = field(default_factory=lambda: {
        "cpu_peak": CPU_METHOD, "cuda_peak": CUDA_METHOD, "activations": TENSOR_METHOD,
        "rss": RSS_METHOD})
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"machine": self.machine, "model": self.model, "method": self.method,
                "notes": self.notes, "rows": [r.to_dict() for r in self.rows],
                "fits": [f.to_dict() for f in self.fits]}

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def fit_for(self, precision: str, window: int) -> FitRow:
        """The fit of one precision and window; ValueError naming what exists otherwise."""
        for f in self.fits:
            if f.precision == precision and f.window == window:
                return f
        have = sorted({(f.precision, f.window) for f in self.fits})
        raise ValueError(f"no fit for precision {precision} window {window}; have {have}")


def load_fits(path: str | Path) -> list[FitRow]:
    """The fits of a JSON file written by ``amnl profile --json``."""
    data = json.loads(Path(path).read_text())
    if "fits" not in data:
        raise ValueError(f"{path}: not an `amnl profile --json` file (no 'fits')")
    return [FitRow.from_dict(d) for d in data["fits"]]


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict:
    """CPU model, cores, torch version, load average and GPU name (when CUDA is used)."""
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": device,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if _is_cuda(device):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def profile_inference(model: nn.Module, *, precisions: Sequence[str] = ("fp32",),
                      windows: Sequence[int] = (30,),
                      batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, device: str = "cpu",
                      warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                      rss_source: dict | None = None, model_info: dict | None = None,
                      progress: Callable[[str], None] | None = None) -> ProfileReport:
    """Measure every precision x window x batch size and fit the memory line per pair.

    Args:
        model: the FP32 network (copied per precision, left untouched).
        precisions: from :data:`PRECISIONS`.
        windows: window lengths.
        batch_sizes: batch sizes (at least two distinct for a fit).
        device: ``cpu`` or ``cuda[:i]``.
        warmup: untimed passes before timing; 0 with ``repeats=0`` skips timing.
        repeats: timed passes per row (0 = memory only).
        rss_source: model source for fresh-process RSS (see :func:`measure_rss`; the child uses
            this process's torch thread count); None skips.
        model_info: what to record about the model in the report.
        progress: called with a short line before each row.

    Returns:
        A :class:`ProfileReport`.
    """
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precision must be among {PRECISIONS}, got {p!r}")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    features = model.config.in_features
    rows: list[ProfileRow] = []
    fits: list[FitRow] = []
    for precision in precisions:
        prepared = prepare_model(model, precision, device)
        for window in windows:
            block = []
            for batch in batch_sizes:
                if progress:
                    progress(f"{precision} window {window} batch {batch}")
                x = make_input(batch, window, features, precision, device)
                mem = measure_memory(prepared, x, device=device)
                lat = (measure_latency(prepared, x, device=device, warmup=warmup,
                                       repeats=repeats) if repeats > 0 else None)
                rss = (measure_rss(rss_source, precision=precision, window=window, batch=batch,
                                   device=device, threads=torch.get_num_threads()).peak
                       if rss_source is not None else None)
                block.append(ProfileRow(precision, window, batch, device, mem, lat, rss))
                del x
            rows.extend(block)
            if len({r.batch for r in block}) >= 2:
                mfit = fit_memory([r.batch for r in block], [r.memory.peak for r in block],
                                  resident=block[0].memory.weights)
                lfit = (fit_latency([r.batch for r in block], [r.latency.p50_ms for r in block])
                        if all(r.latency for r in block) else None)
                fits.append(FitRow(precision, window, device, mfit, lfit))
        del prepared
        gc.collect()
        if _is_cuda(device):
            torch.cuda.empty_cache()
    return ProfileReport(machine_info(device), model_info or {}, rows, fits)


# --------------------------------------------------------------------------- training step

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
    loss_fn = create_loss(loss).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(INPUT_SEED)
    x = torch.randn(batch, window, net.config.in_features, generator=g).to(device)
    rul = (torch.rand(batch, generator=g) * 125).to(device)
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


# --------------------------------------------------------------------------- plot

def plot_profile(report: ProfileReport, path: str | Path) -> Path:
    """PNG: peak memory vs batch per precision and window (with the fits), throughput vs batch.

    Raises:
        ImportError: matplotlib is missing (``pip install amnl[plot]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'amnl[plot]'") from exc
    fig, (ax_mem, ax_thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups: dict[tuple[str, int], list[ProfileRow]] = {}
    for r in report.rows:
        groups.setdefault((r.precision, r.window), []).append(r)
    for (precision, window), rows in groups.items():
        b = np.array([r.batch for r in rows])
        label = f"{precision} w{window}"
        line = ax_mem.plot(b, [r.memory.peak / MB for r in rows], "o", label=label)[0]
        try:
            f = report.fit_for(precision, window).memory
            grid = np.linspace(b.min(), b.max(), 50)
            ax_mem.plot(grid, f.predict(grid) / MB, "-", color=line.get_color(), alpha=0.6)
        except ValueError:
            pass
        if all(r.latency for r in rows):
            ax_thr.plot(b, [r.latency.throughput for r in rows], "o-", label=label)
    ax_mem.set(xlabel="batch size", ylabel="peak tensor memory (MB)",
               title=f"memory vs batch ({report.machine.get('device', '')})")
    ax_thr.set(xlabel="batch size", ylabel="windows / s", title="throughput vs batch",
               xscale="log")
    for ax in (ax_mem, ax_thr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
