"""The fleet service without HTTP: model, database, writer and batcher wired together.

:class:`FleetService` is what the FastAPI app (:mod:`amnl.serve.app`) calls; tests and
embedding applications can drive it directly. The data flow is the study's serving sketch::

    readings -> validation -> Writer (online features, group commit, ack)
             -> DynamicBatcher (one forward pass for many assets) -> Writer (predictions)
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from amnl.cache import cache_dir
from amnl.config import InferenceConfig
from amnl.errors import ConfigError, ModelError
from amnl.features.online import READING_COLUMNS, AssetState, OnlineFeatures
from amnl.inference.checks import StreamChecks
from amnl.inference.drift import DriftMonitor
from amnl.inference.predictor import Predictor
from amnl.rundir import (
    ONNX_FILES,
    PREPROCESS_FILES,
    has_weights,
    model_id,
    resolve_source,
)
from amnl.serve.alert_book import AlertBook
from amnl.serve.alert_rules import SEVERITIES, AssetAlerts, load_rules
from amnl.serve.batcher import Batch, DynamicBatcher, Job
from amnl.serve.db import (
    create_db_engine,
    get_meta,
    migrate,
    now,
    redact,
    schema_lock,
    set_meta,
)
from amnl.serve.errors import ApiError
from amnl.serve.metrics import ServeMetrics
from amnl.serve.settings import DURABILITY, MAX_CYCLE, MAX_FAILURE_GAP, ServeSettings
from amnl.serve.store import Store, windows_from_rows
from amnl.serve.webhooks import WebhookSender
from amnl.serve.writer import AssetReadings, Entries, Entry, Writer

logger = logging.getLogger(__name__)

#: Nice value of the batcher thread: under overload the CPU goes to acknowledging readings
#: first, and the prediction backlog (bounded, in ``/metrics``) grows instead of the ack latency.
BATCHER_NICE = 10
#: Sub-folder of the user cache for the ONNX exports ``amnl serve`` makes of run directories.
EXPORT_SUBDIR = "serve"
#: Longest wait for the writer's answer to a write, seconds: past it the client gets a 503 (the
#: writer answers every request; this is the last resort should it not).
ANSWER_TIMEOUT_SECONDS = 30.0
#: The types :meth:`FleetService.validate` takes as a cycle and as a value (``bool`` is neither,
#: nor is a string of digits).
_INTEGERS = frozenset({int, np.int64, np.int32})
_NUMBERS = _INTEGERS | {float, np.float64, np.float32}


def serving_threads(inference: InferenceConfig) -> InferenceConfig:
    """0 threads means one core less than the machine's for the model, one for HTTP."""
    if inference.threads:
        return inference
    from dataclasses import replace

    return replace(inference, threads=max(1, (os.cpu_count() or 2) - 1))


def export_for_serving(run_dir: Path, precision: str) -> Path:
    """An exported folder of ``run_dir`` for the onnx runtime, made once in a child process
    (so the serving process never imports torch) and kept in the user cache, named by the
    run's model id and the export's graph format (a newer amnl exports again)."""
    from amnl.export.onnx import (  # no torch behind them
        FORMAT_VERSION,
        copy_calibration,
    )

    folder = cache_dir(EXPORT_SUBDIR) / f"{model_id(run_dir)}-format{FORMAT_VERSION}"
    target = folder / ONNX_FILES[precision]
    if target.is_file() and all((folder / f).is_file() for f in PREPROCESS_FILES):
        copy_calibration(run_dir, folder)  # a calibration made since the export
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
    copy_calibration(run_dir, folder)
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
        self.answer_timeout = ANSWER_TIMEOUT_SECONDS
        """Seconds a write waits for the writer's answer (:data:`ANSWER_TIMEOUT_SECONDS`)."""

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
        self.checks = StreamChecks(p.preprocessor, p.config)
        self.engine = create_db_engine(s.url, synchronous=DURABILITY[s.durability])
        try:
            migrate(self.engine)
            self._claim_database(p.model_id)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - cannot reach or read the database
            raise ConfigError(f"database {redact(s.url)}: {exc}") from None
        self.store = Store(self.engine)
        unpredicted = self.store.unpredicted_by_asset()
        # in memory: the assets with readings waiting for a prediction, then others up to the
        # bound; the rest are loaded from their row when used (Entries). The rows are read
        # one at a time, so that a restart never holds every state at once.
        room = max(s.max_assets_in_memory - len(unpredicted), 0)
        kept, states, evaluated, failed = {}, {}, {}, {}
        for i, a in enumerate(self.store.iter_assets()):
            alert = AssetAlerts.from_json(a.alert_state) if a.alert_state else None
            # predictions stored but not yet evaluated for alerts (they waited for another)
            evaluated[a.asset_id] = alert.cycle if alert else a.first_cycle - 1
            if a.failure_cycle is not None:
                failed[a.asset_id] = a.failure_cycle
            waiting = a.asset_id in unpredicted
            if waiting or room > 0:
                room -= not waiting
                kept[a.asset_id] = Entry(AssetState.from_bytes(a.state), a.first_cycle, i + 1)
                if alert is not None:
                    states[a.asset_id] = alert
        entries = Entries(kept, len(evaluated), lambda a: self.writer._load_entry(a),
                          s.max_assets_in_memory)
        self.metrics.assets.set(len(entries))
        self.max_batch = 1 if not s.batching else (s.max_batch or runtime_batch(p))
        self.rules = load_rules(s.alert_rules)
        book = AlertBook(self.store, self.rules, s.webhooks, p.model_id, states)
        for a, rows in self.store.predictions_after(evaluated).items():
            book.buffers[a] = {int(r["cycle"]): r for r in rows}
        self.drift = DriftMonitor(p.drift) if p.drift is not None else None
        self.webhooks = (WebhookSender(self.engine, s.webhook_secret, self.metrics,
                                       lambda run: self.writer.control(run))  # its writes too
                         if s.webhooks else None)
        self.writer = Writer(self.store, self.online, p.model_id, entries, self._committed,
                             self.metrics, alerts=book, intervals=p.intervals, drift=self.drift,
                             failed=failed,
                             on_events=self.webhooks.wake if self.webhooks else lambda: None,
                             unpredicted=unpredicted,
                             checks=self.checks)
        self.batcher = DynamicBatcher(p.runtime, self._predicted, max_batch=self.max_batch,
                                      max_wait_ms=s.max_wait_ms if s.batching else 0.0,
                                      max_backlog=s.max_backlog, catch_up=self._catch_up,
                                      on_error=lambda _e: self.metrics.failed_predictions.inc(),
                                      nice=BATCHER_NICE, on_fault=lambda step, _e:
                                      self.metrics.background_errors.labels("batcher",
                                                                            step).inc(),
                                      on_window=lambda kind, _j:
                                      self.metrics.windows_failed.labels(kind).inc())
        self.metrics.model.info({"model_id": p.model_id, "runtime": p.inference.runtime,
                                 "precision": p.inference.precision,
                                 "max_batch": str(self.max_batch)})
        self.writer.start()
        self.batcher.start()
        if self.webhooks:
            self.webhooks.start()
        self.started_at = time.time()
        self.demo = None
        if s.demo:
            from amnl.serve.demo import Demo

            self.demo = Demo(self, s.demo_speed)
            self.demo.start()
        logger.info("serving model %s (%s %s, batches of up to %d) with %d assets from %s",
                    p.model_id, p.inference.runtime, p.inference.precision, self.max_batch,
                    len(entries), redact(s.url))

    def stop(self) -> None:
        if self.started_at is None:
            return
        if self.demo is not None:
            self.demo.stop()
        self.batcher.stop()
        if self.webhooks:  # before the writer: it records the attempts in flight
            self.webhooks.stop()
        self.writer.wait_idle(10)
        self.writer.stop()
        self.engine.dispose()
        self.started_at = None

    def _claim_database(self, mid: str) -> None:
        """A database holds one model's states: refuse another's (its inputs would differ).
        Under the schema lock, so that two servers starting at once cannot both claim it."""
        with schema_lock(self.engine) as conn:
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
        self.metrics.queue_depth.set(self.writer.backlog)
        self.metrics.assets.set(len(self.writer.entries))

    def _predicted(self, batch: Batch) -> None:
        self.metrics.batch_size.observe(len(batch.jobs))
        self.metrics.batch_seconds.observe(batch.seconds)
        self.metrics.batches.labels(batch.reason).inc()
        self.writer.add_batch(batch)

    def _catch_up(self, n: int) -> list[Job]:
        """Jobs for stored readings that have no prediction (after a restart or an overflow)."""
        if not self.writer.wait_idle():  # what it has queued would be found again
            raise RuntimeError("the writer is behind; catch-up waits (retried)")
        skip = self.batcher.skipped()  # queued, or set aside: not twice
        limit = n + len(skip)
        pending = self.store.unpredicted(limit)
        by_asset: dict[str, list[int]] = {}
        taken = 0
        for a, c in pending:
            entry = self.writer.entries.get(a)
            if entry is None or (a, entry.incarnation, c) in skip:
                continue
            if taken == n:
                break
            by_asset.setdefault(a, []).append(c)
            taken += 1
        if len(pending) >= limit or taken == n:  # there may be more
            self.batcher.mark_behind()
        jobs = []
        w = self.online.window
        for a, cycles in by_asset.items():
            entry = self.writer.entries.get(a)
            if entry is None:
                continue
            have, rows = self.store.feature_rows(a, min(cycles) - w + 1, max(cycles))
            windows = windows_from_rows(have, rows, cycles, w, self.online.n_features)
            warned = self._stored_warnings(a, entry, cycles, windows)
            jobs.extend(Job(a, entry.incarnation, c, windows[c], warnings=warned[c])
                        for c in cycles)
        if jobs:
            logger.debug("catching up %d predictions of %d assets", len(jobs), len(by_asset))
        return jobs

    def _stored_warnings(self, asset_id: str, entry: Entry, cycles: list[int],
                         windows: dict[int, np.ndarray]) -> dict[int, tuple[str, ...]]:
        """The input warnings of recovered predictions, from the stored readings of their
        windows: the same as the writer gives as readings arrive."""
        w = self.online.window
        lo = max(min(cycles) - w + 1, entry.first_cycle)
        with self.engine.connect() as conn:
            stored = self.store.stored_readings(conn, asset_id, lo, max(cycles))
        have = np.array(sorted(stored), np.int64)
        raw = np.stack([stored[int(c)] for c in have])
        cond, z = self.online.scale(have, raw, label=f"asset {asset_id}")
        flags = self.checks.flags(raw[:, self.online.settings], cond, z)
        pos = {int(c): i for i, c in enumerate(have)}
        return {c: tuple(self.checks.warnings(flags[max(0, pos[c] - w + 1): pos[c] + 1], c,
                                              windows[c], entry.first_cycle))
                for c in cycles}

    # -- what the API calls ---------------------------------------------------------------------
    def validate(self, readings: Iterable[Mapping[str, Any]], loc: list,
                 asset_id: str | None = None) -> list[AssetReadings]:
        """The one entry point of readings into the service (HTTP, the demo, an embedding
        application): each reading checked and the readings grouped by asset, in order.

        What is checked here needs no state: ``cycle`` an integer >= 1, every other value a
        finite number or absent (None), the model's inputs (:attr:`required_columns`) present,
        and each asset's cycles consecutive within the request. What needs an asset's stored
        state (a cycle that does not follow the last stored one, a re-sent cycle with other
        values, a closed history, a value not finite once scaled) is checked by the writer
        thread, in order with the other writes (:meth:`amnl.serve.writer.Writer._apply`).

        Args:
            readings: mappings of ``cycle``, the settings and sensors by name
                (:data:`amnl.features.online.READING_COLUMNS`) and, without ``asset_id``, the
                reading's own ``asset_id``.
            loc: where ``readings`` is in the request (``["body", "readings"]``); errors name
                ``loc + [index, field]``.
            asset_id: the asset of every reading, when they are one asset's.

        Returns:
            One :class:`AssetReadings` per asset, in order of first appearance; pass it to
            :meth:`ingest`.

        Raises:
            ApiError: 422 naming the first bad reading and field (counted in
                ``amnl_readings_rejected_total``); nothing is stored.
        """
        readings = list(readings)
        try:
            return self._validate(readings, loc, asset_id)
        except ApiError as exc:
            self.metrics.rejected.labels(exc.detail[0]["type"]).inc(len(readings))
            raise

    @property
    def required_columns(self) -> list[str]:
        """The settings and sensors the model reads (each reading must carry them)."""
        return self.online.required

    def _validate(self, readings: list, loc: list, asset_id: str | None) -> list[AssetReadings]:
        need = set(self.online.required)
        groups: dict[str, tuple[list, list, list]] = {}
        for i, r in enumerate(readings):
            cycle = r.get("cycle")
            if type(cycle) not in _INTEGERS or not 1 <= cycle <= MAX_CYCLE:
                raise ApiError(422, [*loc, i, "cycle"], f"cycle must be an integer from 1 to "
                               f"{MAX_CYCLE}, got {cycle!r:.40}", "int_type")
            raw = []
            for c in READING_COLUMNS:
                v = r.get(c)
                if v is None:
                    if c in need:
                        raise ApiError(422, [*loc, i, c], f"{c} is required by the model (it "
                                       f"reads {', '.join(self.online.required)})", "missing")
                    raw.append(np.nan)
                elif type(v) not in _NUMBERS or not math.isfinite(v):
                    raise ApiError(422, [*loc, i, c], f"{c} must be a finite number, got "
                                   f"{v!r:.40}", "finite_number")
                else:
                    raw.append(v)
            a = asset_id if asset_id is not None else r["asset_id"]
            cycles, raws, locs = groups.setdefault(a, ([], [], []))
            if cycles and cycle != cycles[-1] + 1:
                raise ApiError(422, [*loc, i, "cycle"], f"asset {a}: cycle {cycle} follows cycle "
                               f"{cycles[-1]} in this request; expected {cycles[-1] + 1}",
                               "cycle_order", expected_cycle=cycles[-1] + 1)
            cycles.append(cycle)
            raws.append(raw)
            locs.append([*loc, i])
        return [AssetReadings(a, np.array(c, np.int64), np.array(r, np.float64), locs)
                for a, (c, r, locs) in groups.items()]

    async def ingest(self, parts: list[AssetReadings]) -> list[dict]:
        """Store readings; returns once they are durable (raises ApiError when refused)."""
        return await self._answer(self.writer.ingest(parts))

    async def delete(self, asset_id: str) -> bool:
        return await self._answer(self.writer.delete(asset_id))

    async def _answer(self, fut):
        """The writer's answer to ``fut``, or a 503 after :attr:`answer_timeout` seconds (the
        write may still be applied then: a re-sent identical reading is a no-op)."""
        try:  # shielded: a timeout leaves the writer's future alone
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)),
                                          self.answer_timeout)
        except asyncio.TimeoutError:
            logger.error("no answer from the writer within %g s", self.answer_timeout)
            self.metrics.background_errors.labels("writer", "answer_timeout").inc()
            raise ApiError(503, [], f"no answer from the writer within {self.answer_timeout:g} "
                           "s; the write may still be applied: send it again (a re-sent "
                           "identical reading is a no-op)", "timeout") from None

    def known(self, asset_id: str) -> bool:
        return asset_id in self.writer.entries

    def pending(self, asset_id: str) -> int:
        """The asset's stored readings still waiting for their prediction (queued, or in the
        database for a catch-up after a restart or an overflow)."""
        return self.writer.unpredicted.get(asset_id, 0)

    def with_pending(self, rows: list[dict]) -> list[dict]:
        """Asset rows with ``pending`` (:meth:`pending`) set, for :func:`asset_out`."""
        for r in rows:
            r["pending"] = self.pending(r["asset_id"])
        return rows

    def last_cycle(self, asset_id: str) -> int | None:
        e = self.writer.entries.get(asset_id)
        return None if e is None else e.state.last_cycle

    async def failure(self, asset_id: str, cycle: int) -> dict:
        """Record that an asset failed (or was removed) at ``cycle``: the true RUL of its past
        predictions is then known (:meth:`accuracy`), and it takes no more readings.

        ``cycle`` is the asset's last cycle or up to :data:`MAX_FAILURE_GAP` cycles later
        (a 422 otherwise); another cycle than one already recorded is a 409.
        """
        entry = self.writer.entries.get(asset_id)
        if entry is None:
            raise ApiError(404, ["path", "asset_id"], f"no asset {asset_id}", "not_found")

        def run(conn):
            entry = self.writer.entries.get(asset_id)
            if entry is None:  # deleted while this waited in the writer's queue
                raise ApiError(404, ["path", "asset_id"], f"no asset {asset_id}", "not_found")
            last = entry.state.last_cycle
            if cycle < last:
                raise ApiError(422, ["body", "cycle"], f"asset {asset_id} has readings up to "
                               f"cycle {last}; it cannot have failed at {cycle}", "cycle_order",
                               expected_cycle=last)
            if cycle > last + MAX_FAILURE_GAP:
                raise ApiError(422, ["body", "cycle"], f"asset {asset_id}'s last reading is at "
                               f"cycle {last}; a failure is recorded at most {MAX_FAILURE_GAP} "
                               f"cycles later (got {cycle}: a typo?)", "cycle_order",
                               expected_cycle=last)
            have = self.writer.failed.get(asset_id)
            if have is not None and have != cycle:
                raise ApiError(409, ["body", "cycle"], f"asset {asset_id}'s failure is recorded "
                               f"at cycle {have}", "conflict")
            self.store.set_failure(conn, asset_id, cycle)
            return {"asset_id": asset_id, "failure_cycle": cycle, "last_cycle": last}

        return await self._answer(self.writer.control(
            run, lambda _r: self.writer.failed.__setitem__(asset_id, cycle)))

    async def ack(self, alert_id: int, note: str | None) -> dict:
        def run(conn):
            row = self.store.alert(alert_id)
            entry = self.writer.entries.get(row["asset_id"]) if row else None
            return self.writer.alerts.ack(conn, alert_id, note,
                                          entry.state.last_cycle if entry else None, now())

        return await self._answer(self.writer.control(run))

    def accuracy(self, asset_id: str | None = None) -> dict:
        """RMSE, NASA score and interval coverage of the predictions whose truth is known
        (assets with a recorded failure, or just ``asset_id``), over every cycle and at each
        asset's last one."""
        from amnl.evaluate.metrics import nasa_score, rmse
        from amnl.inference.intervals import coverage_and_width

        rows = self.store.failed_predictions(asset_id)
        cap = self.predictor.config.data.rul_cap
        by_asset: dict[str, list[dict]] = {}
        for r in rows:
            by_asset.setdefault(r["asset_id"], []).append(r)

        def score(items: list[dict]) -> dict:
            true = np.array([min(r["failure_cycle"] - r["cycle"], cap) for r in items], float)
            pred = np.array([r["rul"] for r in items], float)
            out = {"n": len(items), "rmse": rmse(pred, true), "nasa": nasa_score(pred, true)}
            bounded = np.array([r["rul_lower"] is not None for r in items])
            if bounded.any():
                lo = np.array([r["rul_lower"] for r in items if r["rul_lower"] is not None], float)
                hi = np.array([r["rul_upper"] for r in items if r["rul_lower"] is not None], float)
                out["interval_coverage"] = coverage_and_width(lo, hi, true[bounded])["interval_coverage"]
            return out

        assets = {a: {**score(items), "failure_cycle": items[0]["failure_cycle"],
                      "last_cycle": items[-1]["cycle"]} for a, items in by_asset.items()}
        return {"rul_cap": cap, "assets_with_known_failure": len(by_asset),
                "all_cycles": score(rows) if rows else None,
                "last_cycle": score([items[-1] for items in by_asset.values()]) if rows else None,
                "assets": assets}

    def dead_threads(self) -> list[str]:
        """The service's threads that have died (``/readyz`` then answers 503 naming them);
        each survives any failure of a step, so this is a bug or an interpreter's exit."""
        threads = {"writer": self.writer.alive, "batcher": self.batcher.alive}
        if self.webhooks is not None:
            threads["webhooks"] = self.webhooks.alive  # its dispatcher and workers
        for name, alive in threads.items():
            self.metrics.thread_alive.labels(name).set(int(alive))
        return [name for name, alive in threads.items() if not alive]

    def refresh_gauges(self) -> None:
        """Gauges read at scrape time: queue depth, open alerts, drift, live threads."""
        self.dead_threads()
        self.metrics.windows_set_aside.set(self.batcher.set_aside)
        self.metrics.queue_depth.set(self.writer.backlog)
        open_alerts = self.store.open_alerts_by_severity()
        for severity in SEVERITIES:
            self.metrics.alerts_open.labels(severity).set(open_alerts.get(severity, 0))
        if self.drift is not None:
            report = self.drift.report()
            for cond in report["conditions"]:
                for name, v in cond["psi"].items():
                    if v is not None:
                        self.metrics.drift_psi.labels(str(cond["condition"]), name).set(v)
            self.metrics.unknown_share.set(report["unknown_condition_share"])

    def wait_predicted(self, timeout: float = 60.0) -> bool:
        """Block until every acknowledged reading has its prediction stored (tests, demos)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.writer.wait_idle(timeout)
            if self.batcher.depth == 0 and self.store.unpredicted(1) == []:
                return True
            time.sleep(0.01)
        return False

    # -- what the dashboard reads (amnl.serve.dashboard) -------------------------------------
    @property
    def writes_need_token(self) -> bool:
        """Whether writes (the dashboard's acknowledgements too) need the bearer token."""
        return self.settings.api_token is not None

    def fleet(self, **query) -> tuple[int | None, list[dict]]:
        """A page of the fleet (:meth:`amnl.serve.store.Store.fleet`'s arguments)."""
        total, rows = self.store.fleet(**query)
        return total, self.with_pending(rows)

    def fleet_chunks(self, **query):
        """The fleet in chunks (:meth:`amnl.serve.store.Store.fleet_chunks`)."""
        chunks = self.store.fleet_chunks(**query)
        try:
            for rows in chunks:
                yield self.with_pending(rows)
        finally:  # closed early: so is the query
            chunks.close()

    def fleet_counts(self) -> dict[str, int]:
        """Assets by health state, ``failed`` and ``pending`` included."""
        return self.store.fleet_counts()

    def open_alerts(self) -> dict[str, int]:
        """Open alerts by severity."""
        return self.store.open_alerts_by_severity()

    def asset(self, asset_id: str) -> dict | None:
        """An asset's row (its latest prediction included), or None."""
        row = self.store.asset(asset_id)
        return None if row is None else self.with_pending([row])[0]

    def predictions(self, asset_id: str, **query) -> list[dict]:
        """An asset's stored predictions, oldest first."""
        return self.store.predictions(asset_id, **query)

    def latest_readings(self, asset_id: str, n: int) -> list[dict]:
        """An asset's last ``n`` readings as received, newest first."""
        return self.store.latest_readings(asset_id, n)

    def alerts(self, **query) -> tuple[int, list[dict]]:
        """Alerts, newest first (:meth:`amnl.serve.store.Store.alerts`'s arguments)."""
        return self.store.alerts(**query)

    def failures(self, asset_ids) -> dict[str, int]:
        """The recorded failure cycle of each of ``asset_ids`` that has one."""
        return self.store.failures(asset_ids)

    def ping(self) -> None:
        """Raises when the database cannot be reached."""
        self.store.ping()

    def asset_count(self) -> int:
        """Assets the service knows (in memory or evicted to the database)."""
        return len(self.writer.entries)

    def drift_report(self) -> dict | None:
        """What ``GET /v1/drift`` answers, or None when the model has no drift reference."""
        return None if self.drift is None else self.drift.report()

    @property
    def drift_features(self) -> list[str]:
        """The model inputs the drift monitor follows."""
        return [] if self.drift is None else list(self.drift.ref.features)
