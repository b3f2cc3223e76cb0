"""The one writer: every change to the database goes through its thread, in group commits.

Requests that arrive while a commit is under way are validated against the per-asset state in
order, applied together and committed in **one transaction**: their readings, the new state
snapshot of every asset they touched, and the predictions finished meanwhile. Only then are
they acknowledged. A rejected request (a 409 or 422, see :meth:`Writer._apply`) changes
nothing; a failed commit fails every request of its group and leaves the in-memory state as it
was, so memory never runs ahead of the database.

Every request the writer takes gets an answer, whatever happens: a refusal (4xx), 503 when the
database failed (nothing of the group was stored), 500 ``internal`` when the service itself
failed on that request (logged with its traceback; the rest of its group is still committed).
"""

from __future__ import annotations

import json
import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from amnl.errors import DataError
from amnl.features.online import READING_COLUMNS, AssetState, OnlineFeatures
from amnl.inference.checks import StreamChecks
from amnl.inference.drift import DriftMonitor
from amnl.inference.intervals import RulIntervals
from amnl.serve.alert_book import AlertBook, Staged
from amnl.serve.batcher import Batch, Job
from amnl.serve.db import PROBABILITY_COLUMNS, now
from amnl.serve.errors import ApiError
from amnl.serve.settings import MAX_GROUP_READINGS
from amnl.serve.store import Store, reading_row

logger = logging.getLogger(__name__)


@dataclass
class AssetReadings:
    """Consecutive readings of one asset from one request.

    Attributes:
        cycles: int64 (n,), raw: float64 (n, 24) in READING_COLUMNS order (NaN: not sent).
        loc: each reading's location in the request body (for error messages).
    """

    asset_id: str
    cycles: np.ndarray
    raw: np.ndarray
    loc: list[list]


@dataclass
class Entry:
    """An asset as the writer knows it (committed state only)."""

    state: AssetState
    first_cycle: int
    incarnation: int


class Entries:
    """The assets' committed states in memory, at most ``capacity`` of them (least recently
    used first out); an asset that is not in memory is loaded from its database row (the
    assets table holds every asset's state snapshot) when it is next used.

    Only the writer thread puts loaded entries in memory (it is the only one that commits,
    so what it loads is the latest state); another thread gets a copy it cannot keep. Assets
    that ``pinned`` names (readings waiting for a prediction, whose jobs carry the entry's
    incarnation) are never evicted.

    Args:
        entries: the assets loaded at start.
        total: how many assets the database holds (``len`` is this count, kept up to date).
        load: ``asset_id`` -> :class:`Entry` or None, from the database.
        capacity: entries in memory at most (None: no bound).
        pinned: whether an asset must stay in memory.
        on_evict: called with each evicted asset id.
    """

    def __init__(self, entries: dict[str, Entry], total: int,
                 load: Callable[[str], Entry | None], capacity: int | None = None,
                 pinned: Callable[[str], bool] = lambda _a: False,
                 on_evict: Callable[[str], None] = lambda _a: None) -> None:
        self._d: OrderedDict[str, Entry] = OrderedDict(entries)
        self.total, self._load, self.capacity = total, load, capacity
        self.pinned, self.on_evict = pinned, on_evict
        self.owner: threading.Thread | None = None
        """The thread that may keep what it loads (the writer's)."""
        self._lock = threading.Lock()

    @property
    def in_memory(self) -> int:
        return len(self._d)

    def __len__(self) -> int:
        return self.total

    def __contains__(self, asset_id: str) -> bool:
        return self.get(asset_id) is not None

    def __getitem__(self, asset_id: str) -> Entry:
        entry = self.get(asset_id)
        if entry is None:
            raise KeyError(asset_id)
        return entry

    def get(self, asset_id: str, default=None) -> Entry | None:
        with self._lock:
            entry = self._d.get(asset_id)
            if entry is not None:
                self._d.move_to_end(asset_id)
                return entry
        entry = self._load(asset_id)
        if entry is None:
            return default
        if threading.current_thread() is self.owner:
            self.update({asset_id: entry})
        return entry

    def update(self, changed: dict[str, Entry]) -> None:
        with self._lock:
            for a, e in changed.items():
                self._d[a] = e
                self._d.move_to_end(a)
        self.evict()

    def pop(self, asset_id: str, default=None) -> Entry | None:
        with self._lock:
            return self._d.pop(asset_id, default)

    def evict(self) -> None:
        """Down to ``capacity``, least recently used first (pinned ones stay)."""
        if self.capacity is None:
            return
        out = []
        with self._lock:
            extra = len(self._d) - self.capacity
            for a in list(itertools.islice(self._d, max(extra, 0) * 2 + 16)):
                if extra <= 0:
                    break
                if not self.pinned(a):
                    del self._d[a]
                    out.append(a)
                    extra -= 1
        for a in out:
            self.on_evict(a)


@dataclass
class Ingest:
    parts: list[AssetReadings]
    future: Future
    result: list[dict] = field(default_factory=list)


@dataclass
class Control:
    """A rare change in a transaction of its own, in order with the readings (delete an asset,
    record a failure, acknowledge an alert).

    Attributes:
        run: does the change on the connection; raises :class:`ApiError` to refuse it.
        after: applies the result to memory once committed (in the writer's thread).
    """

    run: Callable
    future: Future
    after: Callable | None = None


@dataclass
class Barrier:
    done: threading.Event


class Writer:
    """The writer thread (see the module docstring).

    Args:
        store: the database.
        online: the model's streaming preprocessing.
        model_id: stored with every prediction.
        entries: the assets loaded at start (:meth:`amnl.serve.store.Store.iter_assets`), as
            :class:`Entries` (a bound on memory; the others are loaded when used) or a dict
            (all of them, no bound).
        on_commit: called after each commit with the prediction jobs of the new readings, and
            with None after a failed one (its predictions are then caught up).
        metrics: :class:`amnl.serve.metrics.ServeMetrics`.
        alerts: the alert bookkeeping (:class:`amnl.serve.alert_book.AlertBook`).
        intervals: the model's RUL interval calibration, when it has one.
        drift: fed with every accepted reading's condition and z-scores.
        failed: assets with a recorded failure cycle.
        on_events: called after a commit that may have stored webhook events.
        unpredicted: each asset's stored readings without a prediction, at start
            (:meth:`amnl.serve.store.Store.unpredicted_by_asset`).
        checks: flags each reading and gives each prediction its input warnings
            (:class:`amnl.inference.checks.StreamChecks`; None: no warnings).
    """

    def __init__(self, store: Store, online: OnlineFeatures, model_id: str,
                 entries: Entries | dict[str, Entry],
                 on_commit: Callable[[list[Job]], None],
                 metrics, *, alerts: AlertBook, intervals: RulIntervals | None = None,
                 drift: DriftMonitor | None = None, failed: dict[str, int] | None = None,
                 on_events: Callable[[], None] = lambda: None,
                 unpredicted: dict[str, int] | None = None,
                 checks: StreamChecks | None = None) -> None:
        self.store, self.online, self.model_id = store, online, model_id
        self.checks = checks
        if not isinstance(entries, Entries):
            entries = Entries(entries, len(entries), self._load_entry)
        self.entries = entries
        self._loaded = itertools.count(-1, -1)  # incarnations of reloaded entries
        self.on_commit, self.metrics = on_commit, metrics
        self.alerts, self.intervals, self.drift = alerts, intervals, drift
        self.failed = dict(failed or {})
        """Assets with a recorded failure: their failure cycle (no more readings)."""
        self.on_events = on_events
        self._incarnations = len(entries)
        self.unpredicted = {a: n for a, n in (unpredicted or {}).items() if n}
        """Stored readings without a prediction, by asset (queued, or left to a catch-up);
        kept up to date with every commit (assets without any are absent)."""
        self.backlog = sum(self.unpredicted.values())
        """Their total: every acknowledged reading still waiting for its prediction."""
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="amnl-writer", daemon=True)
        entries.owner = self._thread
        entries.pinned = self.unpredicted.__contains__  # jobs hold their incarnation
        entries.on_evict = self.alerts.evict

    def start(self) -> None:
        self._thread.start()

    def _load_entry(self, asset_id: str) -> Entry | None:
        """An asset's committed state from its database row (an entry not in memory)."""
        row = self.store.load_asset(asset_id)
        if row is None:
            return None
        return Entry(AssetState.from_bytes(row.state), row.first_cycle, next(self._loaded))

    @property
    def alive(self) -> bool:
        """False once the thread has died (it survives any Exception of a group)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    # -- what the API calls (any thread) -------------------------------------------------------
    def ingest(self, parts: list[AssetReadings]) -> Future:
        """Queue a request; the future gets one summary per asset, or an :class:`ApiError`."""
        fut: Future = Future()
        self._queue.put(Ingest(parts, fut))
        return fut

    def control(self, run: Callable, after: Callable | None = None) -> Future:
        """Queue ``run(conn)`` for its own transaction; the future gets its result."""
        fut: Future = Future()
        self._queue.put(Control(run, fut, after))
        return fut

    def delete(self, asset_id: str) -> Future:
        """Forget an asset: its rows, state and alerts; the future gets whether it existed."""
        def gone(found: bool) -> None:
            self.entries.total -= int(found)
            self.backlog -= self.unpredicted.pop(asset_id, 0)
            self.entries.pop(asset_id, None)
            self.alerts.forget(asset_id)
            self.failed.pop(asset_id, None)

        return self.control(lambda conn: self.store.delete_asset(conn, asset_id), gone)

    def add_batch(self, batch: Batch) -> None:
        """Finished predictions, stored with the next commit."""
        self._queue.put(batch)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until everything queued before this call is committed."""
        done = threading.Event()
        self._queue.put(Barrier(done))
        return done.wait(timeout)

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items, n = [first], _size(first)
            while n < MAX_GROUP_READINGS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                items.append(item)
                n += _size(item)
            try:
                self._handle(items)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
                logger.exception("the writer failed on a group of %d items", len(items))
                self.metrics.background_errors.labels("writer", "group").inc()
                for item in items:  # whoever is still waiting gets an answer
                    if isinstance(item, (Ingest, Control)):
                        answer(item.future, exc=failure_error(exc))
                    elif isinstance(item, Barrier):
                        item.done.set()
                try:  # predictions of the group, if any, are caught up
                    self.on_commit(None)
                except Exception:  # noqa: BLE001
                    logger.exception("the writer could not mark the predictions behind")

    def _handle(self, items: list) -> None:
        group: list = []
        for item in items:
            if isinstance(item, (Control, Barrier)):
                self._commit(group)
                group = []
                self._control(item) if isinstance(item, Control) else item.done.set()
            else:
                group.append(item)
        self._commit(group)

    def _commit(self, items: list) -> None:
        if not items:
            return
        t0 = time.perf_counter()
        changed: dict[str, Entry] = {}
        new_assets: set[str] = set()
        pending: dict[tuple[str, int], np.ndarray] = {}
        reading_rows: list[dict] = []
        jobs: list[Job] = []
        accepted: list[Ingest] = []
        batches = [i for i in items if isinstance(i, Batch)]
        stamp = now()
        seen: list[tuple] = []  # (settings, conditions, z-scores) of accepted readings
        try:
            with self.store.engine.begin() as conn:
                for item in items:
                    if isinstance(item, Ingest) and self._apply(
                            conn, item, changed, new_assets, pending, reading_rows, jobs, stamp,
                            seen):
                        accepted.append(item)
                staged = self._write(conn, changed, new_assets, reading_rows, batches, stamp)
        except Exception as exc:  # nothing was stored
            waiting = [i for i in items if isinstance(i, Ingest) and not i.future.done()]
            logger.exception("commit of %d requests failed", len(waiting))
            err = failure_error(exc)
            for item in waiting:
                answer(item.future, exc=err)
            self.metrics.rejected.labels(err.detail[0]["type"]).inc(
                sum(len(p.cycles) for i in waiting for p in i.parts))
            if batches:  # their readings stay unpredicted: caught up later
                self.metrics.failed_predictions.inc(len(batches))
            self.on_commit(None)  # let the batcher know it is behind
            return
        self.entries.total += len(new_assets)
        self._count_readings(reading_rows)  # first: an asset with readings waiting stays
        self.entries.update(changed)
        self.metrics.commit_seconds.observe(time.perf_counter() - t0)
        acked = time.monotonic()
        for job in jobs:
            job.acked_at = acked
        for item in accepted:  # durable: answered before anything else can fail
            answer(item.future, item.result)
        self.metrics.acknowledged.inc(len(reading_rows))
        # what follows the commit: a failure is logged and counted, and the thread goes on
        self._step("alerts", self.alerts.apply, staged)
        if self.drift is not None and seen:  # one pass for the whole group
            self._step("drift", self._observe, seen)
        self._step("metrics", self._count_predictions, batches, acked)
        self._step("backlog", self._count_predicted, batches)
        if batches:  # assets whose readings are all predicted may leave memory now
            self._step("evict", self.entries.evict)
        if not self._step("on_commit", self.on_commit, jobs):
            self._step("on_commit", self.on_commit, None)  # caught up from the database
        if staged.events:
            self.metrics.alert_events.inc(staged.events)
            self._step("on_events", self.on_events)

    def _step(self, name: str, fn: Callable, *args) -> bool:
        """Run a step that follows a commit; False (logged, counted) when it raised."""
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - the commit stands; the thread must go on
            logger.exception("the writer's %s step failed after a commit", name)
            self.metrics.background_errors.labels("writer", name).inc()
            return False
        return True

    def _observe(self, seen: list[tuple]) -> None:
        self.metrics.unknown_conditions.inc(self.drift.observe(
            np.concatenate([s for s, _, _ in seen]), np.concatenate([c for _, c, _ in seen]),
            np.concatenate([z for _, _, z in seen])))

    def _count_readings(self, reading_rows: list[tuple]) -> None:
        """Readings in: waiting for their prediction."""
        counts = self.unpredicted
        for r in reading_rows:  # (asset_id, cycle, ...)
            counts[r[0]] = counts.get(r[0], 0) + 1
        self.backlog += len(reading_rows)

    def _count_predicted(self, batches: list[Batch]) -> None:
        """Predictions out (those :meth:`_prediction_rows` stored)."""
        counts = self.unpredicted
        for b in batches:
            for j in b.jobs:
                entry = self.entries.get(j.asset_id)
                n = counts.get(j.asset_id, 0)
                if entry is None or entry.incarnation != j.incarnation or not n:
                    continue
                self.backlog -= 1
                if n == 1:
                    del counts[j.asset_id]
                else:
                    counts[j.asset_id] = n - 1

    def _count_predictions(self, batches: list[Batch], t: float) -> None:
        for b in batches:
            self.metrics.predictions.inc(len(b.jobs))
            for j in b.jobs:
                if j.acked_at is not None:
                    self.metrics.ack_to_prediction.observe(t - j.acked_at)

    def _apply(self, conn, item: Ingest, changed: dict, new_assets: set, pending: dict,
               reading_rows: list, jobs: list, stamp: float, seen: list) -> bool:
        """Validate one request against the state so far and stage it; False (and the future
        failed) when it is refused, with nothing staged."""
        local: dict[str, Entry] = {}
        rows, new_jobs, summary, created = [], [], [], set()
        single: list[tuple[str, Entry, int, np.ndarray, list]] = []  # one new cycle each
        observed = []
        try:
            for part in item.parts:
                a = part.asset_id
                entry = local.get(a) or changed.get(a) or self.entries.get(a)
                last = entry.state.last_cycle if entry else 0
                dup = part.cycles <= last
                if dup.any():
                    self._check_duplicates(conn, part, dup, pending)
                fresh = ~dup
                cycles, raw = part.cycles[fresh], part.raw[fresh]
                summary.append({"asset_id": a, "accepted": int(fresh.sum()),
                                "duplicates": int(dup.sum()),
                                "last_cycle": int(max(last, int(part.cycles.max())))})
                if not len(cycles):
                    continue
                locs = [loc for loc, f in zip(part.loc, fresh) if f]
                if a in self.failed:
                    raise ApiError(409, locs[0] + ["cycle"], f"asset {a} failed (or was removed) "
                                   f"at cycle {self.failed[a]}; its history is closed: DELETE "
                                   "it, or give the replacement a new id", "failed")
                if entry is not None and cycles[0] != last + 1:
                    raise ApiError(422, locs[0] + ["cycle"],
                                   f"asset {a}: expected cycle {last + 1} (the last stored is "
                                   f"{last}), got {int(cycles[0])}", "cycle_order",
                                   expected_cycle=int(last + 1))
                if entry is None:
                    self._incarnations += 1  # never reused, even when the request is refused
                    entry = Entry(self.online.new_state(), int(cycles[0]), self._incarnations)
                    created.add(a)
                else:
                    entry = Entry(entry.state.copy(), entry.first_cycle, entry.incarnation)
                local[a] = entry
                if len(cycles) == 1:
                    single.append((a, entry, int(cycles[0]), raw[0], locs[0]))
                    continue
                before = self.online.recent_flags(entry.state)
                try:
                    windows, cond, z = self.online.step(entry.state, cycles, raw,
                                                        label=f"asset {a}")
                except DataError as exc:
                    raise ApiError(422, locs[0], str(exc), "value_error") from None
                observed.append((raw[:, self.online.settings], cond, z))
                warned = ([()] * len(cycles) if self.checks is None else
                          self.checks.consecutive(self.online, entry.state, entry.first_cycle,
                                                  before, raw[:, self.online.settings], cond, z,
                                                  cycles, windows))
                for c, r, w, ws in zip(cycles, raw, windows, warned):
                    rows.append(reading_row(a, int(c), r, w[-1], stamp))  # w[-1]: its own row
                    new_jobs.append(Job(a, entry.incarnation, int(c), w.copy(),  # not a view
                                        warnings=ws))
            if single:  # a fleet's cycle: every asset stepped at once
                try:
                    windows, cond, z = self.online.step_many(
                        [e.state for _, e, _, _, _ in single],
                        np.array([c for _, _, c, _, _ in single]),
                        np.stack([r for _, _, _, r, _ in single]),
                        [f"asset {a}" for a, _, _, _, _ in single])
                except DataError as exc:  # exc.row: the asset's place in the fleet step
                    raise ApiError(422, single[exc.row][4], str(exc), "value_error") from None
                settings = np.stack([r for _, _, _, r, _ in single])[:, self.online.settings]
                observed.append((settings, cond, z))
                warned = ([()] * len(single) if self.checks is None else
                          self.checks.fleet_step(self.online, [e.state for _, e, _, _, _ in single],
                                                 [e.first_cycle for _, e, _, _, _ in single],
                                                 settings, cond, z,
                                                 [c for _, _, c, _, _ in single], windows))
                for (a, e, c, r, _), w, ws in zip(single, windows, warned):
                    rows.append(reading_row(a, c, r, w[-1], stamp))
                    new_jobs.append(Job(a, e.incarnation, c, w.copy(), warnings=ws))  # own 3.5 kB
        except ApiError as exc:
            self.metrics.rejected.labels(exc.detail[0]["type"]).inc(
                sum(len(p.cycles) for p in item.parts))
            answer(item.future, exc=exc)
            return False
        except SQLAlchemyError:
            raise  # the transaction is lost: the whole group fails (503)
        except Exception as exc:  # a bug of the service, on this request only
            logger.exception("a request of %d readings failed in the writer",
                             sum(len(p.cycles) for p in item.parts))
            err = failure_error(exc)
            self.metrics.rejected.labels(err.detail[0]["type"]).inc(
                sum(len(p.cycles) for p in item.parts))
            answer(item.future, exc=err)
            return False
        changed.update(local)
        new_assets |= created
        for part in item.parts:
            for c, r in zip(part.cycles.tolist(), part.raw):
                pending[(part.asset_id, c)] = r
        reading_rows.extend(rows)
        jobs.extend(new_jobs)
        seen.extend(observed)
        item.result = summary
        return True

    def _check_duplicates(self, conn, part: AssetReadings, dup: np.ndarray, pending: dict) -> None:
        """Re-sent cycles must equal what is stored (a 409 names the first difference)."""
        cycles = part.cycles[dup]
        stored = {c: pending[(part.asset_id, int(c))] for c in cycles
                  if (part.asset_id, int(c)) in pending}
        missing = [int(c) for c in cycles if int(c) not in stored]
        if missing:
            stored.update(self.store.stored_readings(conn, part.asset_id, min(missing),
                                                     max(missing)))
        for loc, c, raw in zip([lc for lc, d in zip(part.loc, dup) if d], cycles, part.raw[dup]):
            have = stored.get(int(c))
            if have is None:  # before the asset's first stored cycle
                raise ApiError(422, loc + ["cycle"], f"asset {part.asset_id}: cycle {int(c)} is "
                               "before its first stored cycle", "cycle_order")
            if not np.array_equal(have, raw, equal_nan=True):
                j = int(np.flatnonzero(~((have == raw) | (np.isnan(have) & np.isnan(raw))))[0])
                name = READING_COLUMNS[j]
                raise ApiError(409, loc + [name], f"asset {part.asset_id} cycle {int(c)} is "
                               f"stored with {name} = {_show(have[j])}; this request has "
                               f"{_show(raw[j])}", "conflict")

    def _write(self, conn, changed: dict[str, Entry], new_assets: set, reading_rows: list,
               batches: list[Batch], stamp: float) -> Staged:
        inserts, updates = [], []
        for a, entry in changed.items():
            s = entry.state
            if a in new_assets:
                inserts.append({"asset_id": a, "created_at": stamp, "updated_at": stamp,
                                "first_cycle": entry.first_cycle, "last_cycle": s.last_cycle,
                                "n_readings": s.rows, "state": s.to_bytes()})
            else:
                updates.append((s.last_cycle, s.rows, s.to_bytes(), stamp, a))
        self.store.insert_assets(conn, inserts)
        self.store.update_states(conn, updates)
        self.store.insert_readings(conn, reading_rows)
        rows = self._prediction_rows(batches, stamp)
        self.store.insert_predictions(conn, rows)
        first = {a: (changed.get(a) or self.entries[a]).first_cycle
                 for a in {r["asset_id"] for r in rows}}
        return self.alerts.stage(conn, rows, first, stamp)

    def _prediction_rows(self, batches: list[Batch], stamp: float) -> list[dict]:
        from amnl.features.labels import HEALTH_CLASSES

        rows = []
        for b in batches:
            health = b.probabilities.argmax(1)
            if self.intervals is not None:
                lower, upper = self.intervals.bounds(b.rul)
            else:
                lower = upper = [None] * len(b.jobs)
            for j, rul, prob, h, lo, hi in zip(b.jobs, b.rul, b.probabilities, health, lower,
                                               upper):
                entry = self.entries.get(j.asset_id)
                if entry is None or entry.incarnation != j.incarnation:
                    continue  # deleted (and maybe created again) since
                rows.append({"asset_id": j.asset_id, "cycle": j.cycle, "rul": float(rul),
                             "rul_lower": None if lo is None else float(lo),
                             "rul_upper": None if hi is None else float(hi),
                             "health": HEALTH_CLASSES[int(h)],
                             **{c: float(p) for c, p in zip(PROBABILITY_COLUMNS, prob)},
                             "model_id": self.model_id, "predicted_at": stamp,
                             "warnings": json.dumps(list(j.warnings)) if j.warnings else None})
        return rows

    def _control(self, item: Control) -> None:
        try:
            with self.store.engine.begin() as conn:
                result = item.run(conn)
        except ApiError as exc:
            answer(item.future, exc=exc)
            return
        except Exception as exc:
            logger.exception("a control write failed")
            answer(item.future, exc=failure_error(exc))
            return
        try:
            if item.after is not None:
                item.after(result)
        finally:  # committed: the answer is the result, even if memory could not follow
            answer(item.future, result)
        self.on_events()


def failure_error(exc: BaseException) -> ApiError:
    """What a client is told when its write failed: 503 when the database refused it (retry
    later), 500 when the service failed (a bug, logged)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SQLAlchemyError):
        return ApiError(503, [], f"the database did not take the write: {exc}"[:1000],
                        "unavailable")
    return ApiError(500, [], "internal error: the service failed on this request (see its "
                    "log); nothing of it was stored", "internal")


def answer(fut: Future, result=None, exc: BaseException | None = None) -> None:
    """Answer a request once (a second answer, or one to a request given up, is dropped)."""
    if fut.done():
        return
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except Exception:  # noqa: BLE001 - cancelled or answered meanwhile
        pass


def _size(item) -> int:
    if isinstance(item, Ingest):
        return sum(len(p.cycles) for p in item.parts)
    return 1


def _show(v: float) -> str:
    return "(not sent)" if np.isnan(v) else f"{v:g}"
