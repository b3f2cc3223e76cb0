"""Batch-size planning from measured memory: a straight-line fit and the largest batch that fits.

The deployment study plans with a constant scaling law (14 MB + 1.8 MB x batch, largest power of
two, capped at 256). Here the line comes from measurements (:mod:`amnl.inference.memory`,
``amnl profile``): ``memory = base + per_sample x batch`` fitted by least squares, and the planner
only returns a batch whose *upper envelope* (the line shifted up by its largest positive
residual) fits, so it never picks a batch that a measured point says would not fit.

Example:
    >>> fit = fit_memory([1, 8, 32, 64], [14.4e6, 17.0e6, 27.5e6, 41.0e6])
    >>> plan_batch(fit, 40e6).batch_size
    32
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from amnl.config import MB
from amnl.errors import ConfigError

logger = logging.getLogger(__name__)

#: The study's planner rule: largest power of two that fits, capped at 256 (spec section 5).
DEFAULT_MAX_BATCH = 256
#: Largest batch the planner considers when it is asked for "the largest batch that fits".
UNCAPPED_MAX_BATCH = 1 << 20
#: Share of the free memory an automatic batch size may use (leaves room for the rest of the
#: process and for allocator fragmentation).
DEFAULT_FREE_FRACTION = 0.5
#: Batch size used when free memory cannot be read at all.
FALLBACK_BATCH = 64
#: Linux: the kernel's estimate of memory available without swapping (kB).
MEMINFO = Path("/proc/meminfo")
MEMINFO_KEY = "MemAvailable:"
#: The study's deployment targets (spec section 5), in bytes.
STUDY_TARGETS_MB = (16_000, 4_000, 2_000, 500)
#: The study's modelled scaling law: memory = 14 MB + 1.8 MB x batch (spec section 5).
STUDY_BASE_MB = 14.0
STUDY_PER_SAMPLE_MB = 1.8


@dataclass(frozen=True)
class LineFit:
    """``y = intercept + slope * x`` with its R^2 and the largest positive residual."""

    intercept: float
    slope: float
    r2: float
    max_residual: float = 0.0
    """Largest (measured - predicted) over the fitted points, >= 0."""


def fit_line(x: Sequence[float], y: Sequence[float]) -> LineFit:
    """Ordinary least squares of ``y`` on ``x``.

    Args:
        x: at least two distinct values.
        y: one value per ``x``.

    Returns:
        The fit. R^2 is 1.0 when ``y`` is exactly explained (including a constant ``y``).

    Raises:
        ValueError: fewer than two distinct ``x`` values, or lengths differ.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {xs.shape} and {ys.shape}")
    if len(np.unique(xs)) < 2:
        raise ValueError(f"a line needs at least two distinct batch sizes, got {sorted(set(xs))}")
    slope, intercept = np.polyfit(xs, ys, 1)
    resid = ys - (intercept + slope * xs)
    ss_res = float(resid @ resid)
    ss_tot = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return LineFit(float(intercept), float(slope), float(r2), float(max(0.0, resid.max())))


@dataclass(frozen=True)
class MemoryFit:
    """Peak memory as a line in the batch size: ``base + per_sample * batch`` (bytes).

    Attributes:
        base: intercept, bytes (weights, fixed workspace).
        per_sample: slope, bytes per window.
        r2: coefficient of determination of the fit.
        max_residual: largest amount a measured point lies above the line, bytes.
        resident: bytes of ``base`` already allocated before inference (the weights); they do
            not need free memory again.
        max_measured_batch: largest batch the line was fitted on (0 = unknown); plans beyond it
            are extrapolations.
    """

    base: float
    per_sample: float
    r2: float
    max_residual: float = 0.0
    resident: float = 0.0
    max_measured_batch: int = 0

    def predict(self, batch: int | np.ndarray) -> float | np.ndarray:
        """Fitted peak bytes at ``batch``."""
        return self.base + self.per_sample * batch

    def upper(self, batch: int) -> float:
        """Conservative peak bytes at ``batch``: the fit plus its largest positive residual,
        never decreasing in ``batch``."""
        return self.base + self.max_residual + max(self.per_sample, 0.0) * batch

    def to_dict(self) -> dict:
        return asdict(self)


def fit_memory(batches: Sequence[int], peak_bytes: Sequence[float], *, resident: float = 0.0
               ) -> MemoryFit:
    """Least-squares line of peak memory against batch size.

    Args:
        batches: batch sizes measured (at least two distinct).
        peak_bytes: the peak memory measured at each batch size, bytes.
        resident: bytes of the peak that were allocated before inference (weights).

    Returns:
        A :class:`MemoryFit`.

    Example:
        >>> f = fit_memory([1, 2, 4], [12.0, 14.0, 18.0])
        >>> round(f.base, 6), round(f.per_sample, 6), f.r2
        (10.0, 2.0, 1.0)
    """
    line = fit_line(batches, peak_bytes)
    return MemoryFit(line.intercept, line.slope, line.r2, line.max_residual, float(resident),
                     int(max(batches)))


@dataclass(frozen=True)
class LatencyFit:
    """Latency of one forward pass as a line in the batch size (milliseconds)."""

    base_ms: float
    per_sample_ms: float
    r2: float

    def predict(self, batch: int) -> float:
        """Fitted latency in ms at ``batch`` (at least a microsecond)."""
        return max(self.base_ms + self.per_sample_ms * batch, 1e-3)

    def throughput(self, batch: int) -> float:
        """Windows per second expected at ``batch``."""
        return batch / self.predict(batch) * 1000.0

    def to_dict(self) -> dict:
        return asdict(self)


def fit_latency(batches: Sequence[int], latency_ms: Sequence[float]) -> LatencyFit:
    """Least-squares line of the median latency against batch size, both coefficients >= 0.

    A pass never gets cheaper with more windows, so a line that falls with the batch (or starts
    below zero) is noise: on a busy machine the small batches, measured first, are slowed by
    other processes, and ordinary least squares gave a negative "ms / sample". The fit is then
    the best line with a flat slope or with a zero intercept, and a warning says so.

    Example:
        >>> fit_latency([1, 8, 32], [9.0, 4.0, 5.0]).per_sample_ms  # batch 1 slowed down
        0.0
    """
    line = fit_line(batches, latency_ms)
    if line.slope >= 0 and line.intercept >= 0:
        return LatencyFit(line.intercept, line.slope, line.r2)
    xs, ys = np.asarray(batches, dtype=float), np.asarray(latency_ms, dtype=float)
    flat = (float(ys.mean()), 0.0)
    through_zero = (0.0, max(float(xs @ ys / (xs @ xs)), 0.0))
    base, slope = min((flat, through_zero),
                      key=lambda c: float(((ys - c[0] - c[1] * xs) ** 2).sum()))
    ss_res = float(((ys - base - slope * xs) ** 2).sum())
    ss_tot = float(((ys - ys.mean()) ** 2).sum())
    logger.warning("latency did not grow with the batch size (%s ms at batches %s): the machine "
                   "looks busy; fitted with a per-window cost >= 0 (%.4f ms) instead",
                   ", ".join(f"{y:.3g}" for y in ys), ", ".join(str(int(b)) for b in xs), slope)
    return LatencyFit(base, slope, 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0)


@dataclass(frozen=True)
class Plan:
    """What the planner chose and why.

    Attributes:
        batch_size: the chosen batch size (>= 1).
        memory_bytes: the memory the plan had to fit in.
        predicted_bytes: the conservative predicted peak at ``batch_size``.
        limited_by: ``memory``, ``latency`` or ``cap`` (the ``max_batch`` limit).
        throughput: expected windows per second (None without a latency fit).
        latency_ms: expected latency of one batch (None without a latency fit).
        extrapolated: the batch lies beyond the largest measured batch.
    """

    batch_size: int
    memory_bytes: float
    predicted_bytes: float
    limited_by: str
    throughput: float | None = None
    latency_ms: float | None = None
    extrapolated: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _largest_fitting(ok, hi: int, power_of_two: bool) -> int:
    """Largest b in [1, hi] with ok(b) (ok is monotone: true up to some point), 0 if none."""
    if not ok(1):
        return 0
    if power_of_two:
        b = 1
        while b * 2 <= hi and ok(b * 2):
            b *= 2
        return b
    lo, top = 1, hi
    while lo < top:  # invariant: ok(lo)
        mid = (lo + top + 1) // 2
        if ok(mid):
            lo = mid
        else:
            top = mid - 1
    return lo


def plan_batch(fit: MemoryFit, memory_bytes: float, *, max_batch: int = DEFAULT_MAX_BATCH,
               power_of_two: bool = True, latency: LatencyFit | None = None,
               latency_budget_ms: float | None = None) -> Plan:
    """The largest batch whose conservative predicted peak fits in ``memory_bytes``.

    Args:
        fit: the measured memory line.
        memory_bytes: memory the whole peak (weights included) must fit in.
        max_batch: never return more than this (the study caps at 256).
        power_of_two: only consider powers of two (the study's rule).
        latency: a latency line; needed for ``latency_budget_ms`` and for the throughput.
        latency_budget_ms: the largest acceptable latency of one batch.

    Returns:
        A :class:`Plan`.

    Raises:
        ConfigError: not even batch 1 fits (the message gives both numbers), or a latency
            budget without a latency fit.
    """
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    if latency_budget_ms is not None and latency is None:
        raise ConfigError("a latency budget needs measured latencies (a LatencyFit)")

    def fits_memory(b: int) -> bool:
        return fit.upper(b) <= memory_bytes

    def fits_latency(b: int) -> bool:
        return latency_budget_ms is None or latency.predict(b) <= latency_budget_ms  # type: ignore[union-attr]

    if not fits_memory(1):
        raise ConfigError(f"batch 1 needs {fit.upper(1) / MB:.1f} MB but only "
                         f"{memory_bytes / MB:.1f} MB are available")
    if not fits_latency(1):
        raise ConfigError(f"batch 1 takes {latency.predict(1):.2f} ms, over the latency budget "  # type: ignore[union-attr]
                         f"of {latency_budget_ms} ms")
    b = _largest_fitting(lambda n: fits_memory(n) and fits_latency(n), max_batch, power_of_two)
    nxt = b * 2 if power_of_two else b + 1
    if nxt > max_batch:
        limited_by = "cap"
    elif not fits_memory(nxt):
        limited_by = "memory"
    else:
        limited_by = "latency"
    return Plan(b, float(memory_bytes), fit.upper(b), limited_by,
                latency.throughput(b) if latency else None,
                latency.predict(b) if latency else None,
                bool(fit.max_measured_batch) and b > fit.max_measured_batch)


def _meminfo(key: str) -> int | None:
    """One ``/proc/meminfo`` entry (``key`` with its colon), bytes; None when unreadable."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def free_memory_bytes(device: str = "cpu") -> int | None:
    """Memory a new allocation can use now, bytes; None when it cannot be read.

    CUDA: ``torch.cuda.mem_get_info`` free bytes plus what PyTorch's caching allocator holds
    reserved but unused. CPU: ``MemAvailable`` from ``/proc/meminfo`` (Linux), else
    ``sysconf(SC_AVPHYS_PAGES) * SC_PAGE_SIZE`` (free pages, an underestimate).
    """
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    available = _meminfo(MEMINFO_KEY)
    if available is not None:
        return available
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


#: Where the cgroup file systems are mounted (v2: one hierarchy; v1: one per controller).
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: cgroup v1 reports "no limit" as a number near 2^63.
_NO_LIMIT = 1 << 60


def memory_limit_bytes() -> int | None:
    """The most memory this process may use: the machine's (``MemTotal``) or, when smaller,
    its cgroup's limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``, of the cgroup named in
    ``/proc/self/cgroup``: a container or a ``systemd`` slice on an edge box). None when
    neither can be read."""
    total = _meminfo("MemTotal:")
    limits = [] if total is None else [total]
    try:
        groups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        groups = []
    for line in groups:
        _id, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if controllers == "":  # v2
            candidates = [CGROUP_ROOT / path / "memory.max"]
        elif "memory" in controllers.split(","):  # v1
            candidates = [CGROUP_ROOT / "memory" / path / "memory.limit_in_bytes"]
        else:
            continue
        for f in candidates:
            try:
                text = f.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < _NO_LIMIT:
                limits.append(int(text))
    return min(limits) if limits else None


def batch_size_for_free_memory(fit: MemoryFit, *, device: str = "cpu",
                               fraction: float = DEFAULT_FREE_FRACTION,
                               budget_bytes: float | None = None,
                               max_batch: int = DEFAULT_MAX_BATCH, power_of_two: bool = True,
                               free_bytes: int | None = None) -> int:
    """The batch size to run now, from the memory line and the memory free on ``device``.

    The memory allowed is ``fraction`` of the free memory plus what the model already holds
    (``fit.resident``), and at most ``budget_bytes`` when given (a cap on the whole peak,
    weights included).

    Args:
        fit: the measured memory line of this model, precision and window.
        device: ``cpu`` or ``cuda[:i]``.
        fraction: share of the free memory to use.
        budget_bytes: optional hard cap on the peak, bytes.
        max_batch: largest batch to return.
        power_of_two: only powers of two.
        free_bytes: free memory to assume (default: read it with :func:`free_memory_bytes`).

    Returns:
        A batch size >= 1: 1 even when nothing fits (the caller cannot do with less), and
        :data:`FALLBACK_BATCH` (capped) when no memory figure is known at all.
    """
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    if free is None and budget_bytes is None:
        logger.warning("cannot read free memory on %s; using batch size %d", device,
                       min(FALLBACK_BATCH, max_batch))
        return min(FALLBACK_BATCH, max_batch)
    allowed = [b for b in (budget_bytes,) if b is not None]
    if free is not None:
        allowed.append(free * fraction + fit.resident)
    memory = min(allowed)
    try:
        return plan_batch(fit, memory, max_batch=max_batch, power_of_two=power_of_two).batch_size
    except ConfigError as exc:
        logger.warning("%s; running with batch size 1", exc)
        return 1
