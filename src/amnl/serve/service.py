"""The fleet service without HTTP: model, database, writer and batcher wired together.

:class:`FleetService` is what the FastAPI app (:mod:`amnl.serve.app`) calls; tests and
embedding applications can drive it directly. The data flow is the study's serving sketch::

    readings -> validation -> Writer (online features, group commit, ack)
             -> DynamicBatcher (one forward pass for many assets) -> Writer (predictions)
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from amnl.cache import cache_dir
from amnl.config import InferenceConfig
from amnl.errors import ConfigError, ModelError
from amnl.features.online import AssetState, OnlineFeatures
from amnl.inference.predictor import Predictor
from amnl.rundir import (
    ONNX_FILES,
    PREPROCESS_FILES,
    has_weights,
    model_id,
    resolve_source,
)
from amnl.serve.batcher import Batch, DynamicBatcher, Job
from amnl.serve.db import create_db_engine, get_meta, migrate, redact, set_meta
from amnl.serve.metrics import ServeMetrics
from amnl.serve.settings import DURABILITY, ServeSettings
from amnl.serve.store import Store, windows_from_rows
from amnl.serve.writer import AssetReadings, Entry, Writer

logger = logging.getLogger(__name__)

#: Nice value of the batcher thread: under overload the CPU goes to acknowledging readings
#: first, and the prediction backlog (bounded, in ``/metrics``) grows instead of the ack latency.
BATCHER_NICE = 10
#: Sub-folder of the user cache for the ONNX exports ``amnl serve`` makes of run directories.
EXPORT_SUBDIR = "serve"


def serving_threads(inference: InferenceConfig) -> InferenceConfig:
    """0 threads means one core less than the machine's for the model, one for HTTP."""
    if inference.threads:
        return inference
    from dataclasses import replace

    return replace(inference, threads=max(1, (os.cpu_count() or 2) - 1))


def export_for_serving(run_dir: Path, precision: str) -> Path:
    """An exported folder of ``run_dir`` for the onnx runtime, made once in a child process
    (so the serving process never imports torch) and kept in the user cache, named by the
    run's model id."""
    folder = cache_dir(EXPORT_SUBDIR) / model_id(run_dir)
    target = folder / ONNX_FILES[precision]
    if target.is_file() and all((folder / f).is_file() for f in PREPROCESS_FILES):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = Path(tmp) / ONNX_FILES[precision]
        code = ("import sys; from amnl.export.onnx import export_run; "
                "export_run(sys.argv[1], sys.argv[2], int8=sys.argv[3] == 'int8')")
        logger.warning("exporting %s to ONNX (%s) in a child process, into %s (once)", run_dir,
                       precision, folder)
        done = subprocess.run([sys.executable, "-c", code, str(run_dir), str(out), precision],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            raise ModelError(f"{run_dir}: the ONNX export failed: {done.stderr.strip()[-2000:]}")
        for f in (*PREPROCESS_FILES, out.name):
            os.replace(Path(tmp) / f, folder / f)
    return folder


def load_predictor(source: str | None, inference: InferenceConfig) -> Predictor:
    path = resolve_source(source)
    if inference.runtime == "onnx" and path.is_dir() and has_weights(path):
        path = export_for_serving(path, inference.precision)
    return Predictor.load(path, inference)


def runtime_batch(predictor: Predictor) -> int:
    """The batch the runtime runs best at: the ONNX chunk, or torch's planned batch."""
    rt = predictor.runtime
    if hasattr(rt, "chunk"):
        return int(rt.chunk)
    if hasattr(rt, "chunk_size"):  # measured at load
        x = np.zeros((1, predictor.window, predictor.config.model.in_features), np.float32)
        return int(rt.chunk_size(x))
    return 64


class FleetService:
    """The service (see the module docstring).

    Args:
        settings: how it runs.
        predictor: a loaded model (default: loaded from ``settings`` by :meth:`start`).
    """

    def __init__(self, settings: ServeSettings, predictor: Predictor | None = None) -> None:
        self.settings = settings
        self.predictor = predictor
        self.metrics = ServeMetrics()
        self.started_at: float | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model, open (and migrate) the database, resume every asset, start the
        threads. Calling it again does nothing."""
        if self.started_at is not None:
            return
        s = self.settings
        if self.predictor is None:
            self.predictor = load_predictor(s.model, serving_threads(s.inference))
        p = self.predictor
        self.online = OnlineFeatures(p.preprocessor)
        self.engine = create_db_engine(s.url, synchronous=DURABILITY[s.durability])
        try:
            migrate(self.engine)
            self._claim_database(p.model_id)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - cannot reach or read the database
            raise ConfigError(f"database {redact(s.url)}: {exc}") from None
        self.store = Store(self.engine)
        entries = {a.asset_id: Entry(AssetState.from_bytes(a.state), a.first_cycle, i + 1)
                   for i, a in enumerate(self.store.load_assets())}
        self.metrics.assets.set(len(entries))
        self.max_batch = 1 if not s.batching else (s.max_batch or runtime_batch(p))
        self.writer = Writer(self.store, self.online, p.model_id, entries, self._committed,
                             self.metrics)
        self.batcher = DynamicBatcher(p.runtime, self._predicted, max_batch=self.max_batch,
                                      max_wait_ms=s.max_wait_ms if s.batching else 0.0,
                                      max_backlog=s.max_backlog, catch_up=self._catch_up,
                                      on_error=lambda _e: self.metrics.failed_predictions.inc(),
                                      nice=BATCHER_NICE)
        self.metrics.model.info({"model_id": p.model_id, "runtime": p.inference.runtime,
                                 "precision": p.inference.precision,
                                 "max_batch": str(self.max_batch)})
        self.writer.start()
        self.batcher.start()
        self.started_at = time.time()
        logger.info("serving model %s (%s %s, batches of up to %d) with %d assets from %s",
                    p.model_id, p.inference.runtime, p.inference.precision, self.max_batch,
                    len(entries), redact(s.url))

    def stop(self) -> None:
        if self.started_at is None:
            return
        self.batcher.stop()
        self.writer.wait_idle(10)
        self.writer.stop()
        self.engine.dispose()
        self.started_at = None

    def _claim_database(self, mid: str) -> None:
        """A database holds one model's states: refuse another's (its inputs would differ)."""
        with self.engine.begin() as conn:
            have = get_meta(conn, "model_id")
            if have is None:
                set_meta(conn, "model_id", mid)
            elif have != mid:
                raise ConfigError(f"database {redact(self.settings.url)} holds the asset states "
                                  f"of model {have}, not {mid}; serve that model or use another "
                                  "--db")

    # -- the pipeline ---------------------------------------------------------------------------
    def _committed(self, jobs: list[Job] | None) -> None:
        if jobs is None:
            self.batcher.mark_behind()
        elif jobs:
            self.batcher.submit(jobs)
        self.metrics.queue_depth.set(self.batcher.depth)
        self.metrics.assets.set(len(self.writer.entries))

    def _predicted(self, batch: Batch) -> None:
        self.metrics.batch_size.observe(len(batch.jobs))
        self.metrics.batch_seconds.observe(batch.seconds)
        self.metrics.batches.labels(batch.reason).inc()
        self.writer.add_batch(batch)
        self.metrics.queue_depth.set(self.batcher.depth)

    def _catch_up(self, n: int) -> list[Job]:
        """Jobs for stored readings that have no prediction (after a restart or an overflow)."""
        self.writer.wait_idle()
        pending = self.store.unpredicted(n)
        by_asset: dict[str, list[int]] = {}
        for a, c in pending:
            by_asset.setdefault(a, []).append(c)
        jobs = []
        w = self.online.window
        for a, cycles in by_asset.items():
            entry = self.writer.entries.get(a)
            if entry is None:
                continue
            have, rows = self.store.feature_rows(a, min(cycles) - w + 1, max(cycles))
            windows = windows_from_rows(have, rows, cycles, w, self.online.n_features)
            jobs.extend(Job(a, entry.incarnation, c, windows[c]) for c in cycles)
        if jobs:
            logger.info("catching up %d predictions of %d assets", len(jobs), len(by_asset))
        return jobs

    # -- what the API calls ---------------------------------------------------------------------
    async def ingest(self, parts: list[AssetReadings]) -> list[dict]:
        """Store readings; returns once they are durable (raises ApiError when refused)."""
        return await asyncio.wrap_future(self.writer.ingest(parts))

    async def delete(self, asset_id: str) -> bool:
        return await asyncio.wrap_future(self.writer.delete(asset_id))

    def known(self, asset_id: str) -> bool:
        return asset_id in self.writer.entries

    def last_cycle(self, asset_id: str) -> int | None:
        e = self.writer.entries.get(asset_id)
        return None if e is None else e.state.last_cycle

    def wait_predicted(self, timeout: float = 60.0) -> bool:
        """Block until every acknowledged reading has its prediction stored (tests, demos)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.writer.wait_idle(timeout)
            if self.batcher.depth == 0 and self.store.unpredicted(1) == []:
                return True
            time.sleep(0.01)
        return False
