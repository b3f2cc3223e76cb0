"""Peak resident set size of a fresh Python process that loads a model and runs inference.

The measuring process runs this module as a program (``python -m amnl.profiling.rss JOB``),
so the cost of importing PyTorch, building the model and each inference shows on its own.
On Linux the peak is ``VmHWM`` from ``/proc/self/status``: ``getrusage(RUSAGE_SELF).ru_maxrss``
would also count the parent's RSS at fork time (the kernel carries it across ``exec``), i.e. a
profiler's own 400 MB. Elsewhere ``ru_maxrss`` is the fallback.

A job (JSON) names:

* ``source``: ``{"run": DIR}`` (a run directory or bundled model), ``{"size": "base",
  "in_features": 14}`` (random init, seed 0), or ``{"onnx": FILE}`` (an exported file; the child
  never imports torch then);
* ``mode``: ``forward`` (one pass of the model prepared at ``precision``, as
  :func:`amnl.profiling.memory.prepare_model` casts it) or ``runtime`` (calls of the runtime the
  CLI uses, :class:`~amnl.inference.runtime.TorchRuntime` or
  :class:`~amnl.inference.onnx_runtime.OnnxRuntime`, one per entry of ``batches``);
* ``precision``, ``window``, ``batches``, ``device``, ``threads``, and for ``runtime`` mode
  ``chunk`` (the batch size, or ``"auto"``) and ``budget_mb``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RSS_METHOD = ("fresh `python -m amnl.profiling.rss` process; peak RSS per stage from "
              "/proc/self/status VmHWM (ru_maxrss would include the parent's RSS at fork)")
STATUS = Path("/proc/self/status")
#: Fields of /proc/self/status recorded at the end: resident anonymous (heap, tensors) and
#: file pages (the shared libraries' code and data).
FINAL_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
INPUT_SEED = 0


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark, bytes: ``VmHWM`` on Linux, else ``ru_maxrss``."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def _final_rss() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in STATUS.read_text().splitlines():
            key = line.split(":")[0]
            if key in FINAL_FIELDS:
                out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


@dataclass
class RssMeasurement:
    """Peak resident set size of a fresh process after each stage (bytes).

    Attributes:
        stages: ``python``, ``import_torch`` (not for ONNX), ``import_amnl``, ``model``,
            ``prepared``, ``inference``; each the process's peak RSS so far.
        final: the current RSS at the end split by kind (Linux ``VmRSS``, ``RssAnon``,
            ``RssFile``, ``RssShmem``).
        torch_imported: whether the child imported torch.
    """

    stages: dict[str, int]
    final: dict[str, int] = field(default_factory=dict)
    torch_imported: bool = True

    @property
    def peak(self) -> int:
        return max(self.stages.values())


def measure_rss(source: dict, *, precision: str = "fp32", window: int = 30,
                batches: tuple[int, ...] = (256,), device: str = "cpu", mode: str = "forward",
                chunk: int | str = 1024, budget_mb: float | None = None, threads: int = 0,
                env: dict[str, str] | None = None, timeout_s: float = 300.0) -> RssMeasurement:
    """Peak RSS of a fresh Python process that runs inference (see the module docstring).

    Args:
        source: ``{"run": DIR}``, ``{"size": "base", "in_features": 14}`` or ``{"onnx": FILE}``.
        precision: the model's precision.
        window: window length.
        batches: windows of each inference call, in order.
        device: ``cpu`` or ``cuda``.
        mode: ``forward`` or ``runtime``.
        chunk: the runtime's batch size (``"auto"`` lets the planner choose).
        budget_mb: the runtime's memory budget for ``chunk="auto"``.
        threads: threads in the child (0 = default).
        env: extra environment variables for the child (e.g. glibc ``MALLOC_*`` tunables).
        timeout_s: give up after this long.

    Raises:
        RuntimeError: the child failed (its stderr is in the message).
    """
    job = {"source": {k: str(v) if k in ("run", "onnx") else v for k, v in source.items()},
           "precision": precision, "window": window, "batches": list(batches),
           "device": device, "mode": mode, "chunk": chunk, "budget_mb": budget_mb,
           "threads": threads}
    proc = subprocess.run([sys.executable, "-m", "amnl.profiling.rss", json.dumps(job)],
                          capture_output=True, text=True, timeout=timeout_s, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"RSS child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    data = json.loads(proc.stdout.splitlines()[-1])
    return RssMeasurement({k: int(v) for k, v in data["stages"].items()},
                          {k: int(v) for k, v in data["final"].items()}, data["torch_imported"])


def _child(job: dict[str, Any]) -> dict[str, Any]:
    """The measured process: load, run, report the peak after each stage."""
    stages: dict[str, int] = {}

    def mark(name: str) -> None:
        stages[name] = peak_rss_bytes()

    mark("python")
    import numpy as np

    src = job["source"]
    window, batches = job["window"], job["batches"]
    if "onnx" in src:  # the edge path: no torch at all
        from amnl.inference.onnx_runtime import OnnxRuntime

        mark("import_amnl")
        runtime = OnnxRuntime(src["onnx"], threads=job["threads"])
        features = int(runtime.session.get_inputs()[0].shape[2])
        mark("model")
        x = np.random.default_rng(INPUT_SEED).standard_normal(
            (max(batches), window, features), dtype=np.float32)
        mark("prepared")
        for b in batches:
            runtime(x[:b])
    else:
        import torch

        mark("import_torch")
        from amnl.inference.runtime import TorchRuntime, set_threads
        from amnl.profiling.memory import make_input, prepare_model

        set_threads(job["threads"])
        mark("import_amnl")
        if src.get("run"):
            from amnl.rundir import load_run

            model = load_run(src["run"])[2]
        else:
            from amnl.model.factory import create_model

            torch.manual_seed(0)
            model = create_model(src.get("size", "base"), in_features=src.get("in_features", 14))
        features = model.config.in_features
        mark("model")
        if job["mode"] == "runtime":
            runtime = TorchRuntime(model, device=job["device"], precision=job["precision"],
                                   batch_size=job["chunk"], memory_budget_mb=job["budget_mb"],
                                   window=window)
            x = make_input(max(batches), window, features).numpy()
            mark("prepared")
            for b in batches:
                runtime(x[:b])
        else:
            model = prepare_model(model, job["precision"], job["device"], copy_model=False)
            x = make_input(max(batches), window, features, job["precision"], job["device"])
            mark("prepared")
            with torch.inference_mode():
                for b in batches:
                    model(x[:b])
    mark("inference")
    return {"stages": stages, "final": _final_rss(), "torch_imported": "torch" in sys.modules}


if __name__ == "__main__":  # python -m amnl.profiling.rss JOB
    if len(sys.argv) != 2:
        sys.exit("usage: python -m amnl.profiling.rss JOB_JSON (see amnl.profiling.rss.measure_rss)")
    print(json.dumps(_child(json.loads(sys.argv[1]))))
