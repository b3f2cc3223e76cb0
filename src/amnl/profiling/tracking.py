"""Tensor-level memory tracking: which operator outputs are alive, overall and per network
component (see :mod:`amnl.profiling.memory` for how it is used)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from amnl.inference.memory import RANGE_PREFIX  # the ranges opened around each component
from amnl.model.network import AMNL

logger = logging.getLogger(__name__)


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
