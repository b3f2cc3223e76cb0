"""Webhooks: every alert transition, POSTed as JSON and signed, retried with backoff.

The writer stores each transition as an ``alert_events`` row and one ``webhook_deliveries`` row
per configured URL in the transaction that caused it (an outbox), so a delivery survives a
restart. This module sends what is due:

* body: the event's JSON (``event``, ``alert``, ``asset_id``, ``rule``, ``severity``, ``state``,
  ``cycle``, ``value``, ``at``, ``model_id``), UTF-8;
* headers: ``Content-Type: application/json``, ``X-Amnl-Event`` (the event id, the same on
  every retry: receivers deduplicate on it), ``X-Amnl-Signature: sha256=<hex>``, the
  HMAC-SHA256 of the exact body bytes under the shared secret;
* a 2xx answer is delivered; anything else is a failed attempt: another status, a redirect (a
  3xx is never followed: the event would go to a URL nobody configured, and its answer would
  not say whether the receiver got it; the attempt records the status and the ``Location``), no
  answer in :data:`TIMEOUT_SECONDS`. A failed attempt is retried after 1, 2, 4, ... seconds (at
  most :data:`MAX_BACKOFF_SECONDS`), :data:`MAX_ATTEMPTS` times in all, then the delivery is
  marked failed. Every attempt is a ``webhook_attempts`` row (status code or error, duration).

Concurrency and order: a dispatcher thread finds, for each URL, its oldest pending delivery and
hands it to a pool of :data:`WORKERS` threads when it is due. So one URL has one request in
flight at a time and gets its events in the order they happened (the next waits until this one
is delivered or given up), while a receiver that never answers holds only its own URL (and one
worker), not the others. Delivery is at least once: an attempt whose outcome could not be
recorded (the server stopped, the database refused) is made again.

The sender never opens a write transaction of its own: the outcome of each attempt goes to the
service's one writer (``control``, :meth:`amnl.serve.writer.Writer.control`), the outcomes that
finished meanwhile in one transaction. Reading what is due is a plain read.

A receiver checks a delivery with :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import func, select, update

from amnl.serve.db import alert_events, now, webhook_attempts, webhook_deliveries

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Amnl-Signature"
EVENT_HEADER = "X-Amnl-Event"
TIMEOUT_SECONDS = 5.0
MAX_ATTEMPTS = 8
MAX_BACKOFF_SECONDS = 60.0
#: How often the sender looks for due deliveries when nothing woke it.
POLL_SECONDS = 1.0
#: Requests in flight at once (to as many URLs): receivers that never answer hold a worker
#: each for :data:`TIMEOUT_SECONDS`, the other URLs go on while any worker is free.
WORKERS = 8
#: How long :meth:`WebhookSender.stop` waits for attempts in flight, seconds (one that is not
#: done by then is made again after a restart).
STOP_SECONDS = 2.0


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """A receiver's check: ``header`` is the signature of ``body`` under ``secret``."""
    return header is not None and hmac.compare_digest(header, sign(body, secret))


def backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1-based)."""
    return min(2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx answer stays an answer (urllib raises it as an HTTPError) instead of a new request."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


@dataclass
class Attempt:
    """One POST of one delivery, and what came of it."""

    delivery_id: int
    url: str
    attempt: int
    event_id: int
    body: bytes
    at: float = 0.0
    status: int | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def state(self) -> str:
        return "delivered" if self.ok else ("failed" if self.attempt >= MAX_ATTEMPTS else "pending")


class WebhookSender:
    """The dispatcher thread and its pool of workers (see the module docstring).

    Args:
        engine: the service's database (read only here).
        secret: the HMAC key.
        metrics: :class:`amnl.serve.metrics.ServeMetrics`.
        control: queues ``run(conn)`` in the writer's thread, in a transaction of its own, and
            returns a future (:meth:`amnl.serve.writer.Writer.control`).
        workers: requests in flight at once.
    """

    def __init__(self, engine, secret: str, metrics, control: Callable[..., Future], *,
                 workers: int = WORKERS) -> None:
        self.engine, self.secret, self.metrics, self.control = engine, secret, metrics, control
        self._wake = threading.Event()
        self._stop = False
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # URLs with an attempt in flight or not yet recorded
        self._hold: dict[str, float] = {}  # URL -> no attempt before (an unrecorded outcome)
        self._done: list[Attempt] = []  # finished attempts waiting for the writer
        self._recording = False  # a control of the writer is queued for some of them
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="amnl-webhooks", daemon=True)
        self._workers = [threading.Thread(target=self._work, name=f"amnl-webhooks-{i}",
                                          daemon=True) for i in range(workers)]

    def start(self) -> None:
        for t in self._workers:
            t.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching; wait up to :data:`STOP_SECONDS` for attempts in flight. Stop the
        sender before the writer, so that those outcomes can still be recorded."""
        self._stop = True
        self._wake.set()
        deadline = time.monotonic() + STOP_SECONDS
        self._thread.join(STOP_SECONDS)
        for _ in self._workers:
            self._todo.put(None)
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        """Whether the dispatcher and every worker run (``/readyz``)."""
        return self._thread.is_alive() and all(t.is_alive() for t in self._workers)

    def wake(self) -> None:
        """New deliveries were committed (or an outcome was recorded)."""
        self._wake.set()

    # -- the dispatcher -----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            try:
                self.dispatch_due()
            except Exception:
                logger.exception("webhook dispatch round failed")
                self.metrics.background_errors.labels("webhooks", "dispatch").inc()
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()  # before reading: a wake after this finds its rows committed

    def dispatch_due(self) -> int:
        """Hand each idle URL's oldest pending delivery to the workers, if it is due; returns
        how many were handed."""
        with self._lock:  # a URL busy now may have an outcome committed after the read below
            skip = self._busy | {u for u, t in self._hold.items() if t > time.monotonic()}
        d, e = webhook_deliveries, alert_events
        # deliveries are inserted with their event, so a URL's lowest id is its oldest event
        oldest = (select(func.min(d.c.id).label("id")).where(d.c.state == "pending")
                  .group_by(d.c.url).subquery())
        with self.engine.connect() as conn:
            due = conn.execute(
                select(d.c.id, d.c.url, d.c.attempts, d.c.event_id, e.c.body)
                .join(oldest, oldest.c.id == d.c.id).join(e, e.c.id == d.c.event_id)
                .where(d.c.next_attempt_at <= now()).order_by(d.c.id)).all()
        handed = 0
        for delivery_id, url, attempts, event_id, body in due:
            if url in skip or self._stop:
                continue
            with self._lock:
                self._busy.add(url)
            self._todo.put(Attempt(delivery_id, url, attempts + 1, event_id, body.encode()))
            handed += 1
        return handed

    # -- the workers --------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            a = self._todo.get()
            if a is None:
                return
            if self._stop:
                continue
            try:
                self._post(a)
            except Exception as exc:  # a bug: counted as a failed attempt, not a dead worker
                logger.exception("webhook attempt to %s failed unexpectedly", a.url)
                self.metrics.background_errors.labels("webhooks", "attempt").inc()
                a.error = f"{type(exc).__name__}: {exc}"[:500]
            self._finished(a)

    def _post(self, a: Attempt) -> None:
        request = urllib.request.Request(a.url, data=a.body, method="POST", headers={
            "Content-Type": "application/json", EVENT_HEADER: str(a.event_id),
            SIGNATURE_HEADER: sign(a.body, self.secret), "User-Agent": "amnl-webhooks"})
        a.at, t0 = now(), time.perf_counter()
        try:
            with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as r:
                a.status = r.status
        except urllib.error.HTTPError as exc:  # any status but 2xx, a 3xx included
            a.status, location = exc.code, exc.headers.get("Location")
            a.error = (f"redirect to {location} not followed" if 300 <= exc.code < 400
                       else str(exc.reason))[:500]
            exc.close()
        except (urllib.error.URLError, OSError) as exc:  # no answer (refused, timed out, ...)
            a.error = str(getattr(exc, "reason", exc))[:500]
        a.seconds = time.perf_counter() - t0

    def _finished(self, a: Attempt) -> None:
        """Queue the outcome for the writer; the outcomes that finish before the writer gets
        to it go in the same transaction."""
        with self._lock:
            self._done.append(a)
            if self._recording:
                return
            self._recording = True
        taken: dict = {}  # what this transaction writes, once the writer runs it
        self.control(lambda conn: self._record(conn, taken)).add_done_callback(
            lambda fut: self._recorded(fut, taken))

    def _record(self, conn, taken: dict) -> None:
        """In the writer's thread: every finished attempt's row and its delivery's new state."""
        with self._lock:
            batch, self._done, self._recording = self._done, [], False
        taken["batch"] = batch
        if not batch:
            return
        conn.execute(webhook_attempts.insert(), [
            {"delivery_id": a.delivery_id, "attempt": a.attempt, "at": a.at,
             "status_code": a.status, "error": a.error, "seconds": a.seconds} for a in batch])
        for a in batch:
            conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == a.delivery_id)
                         .values(state=a.state, attempts=a.attempt,
                                 next_attempt_at=now() + backoff(a.attempt)))

    def _recorded(self, fut: Future, taken: dict) -> None:
        """Once the writer's transaction is over: free the URLs, count, log. Attempts it could
        not record stay pending as they were: made again after their backoff."""
        failed = fut.exception()
        with self._lock:
            if "batch" not in taken:  # the writer failed before it ran _record
                taken["batch"], self._done, self._recording = self._done, [], False
            batch = taken["batch"]
            self._busy.difference_update(a.url for a in batch)
            if failed is not None:
                self._hold.update((a.url, time.monotonic() + backoff(a.attempt)) for a in batch)
        if failed is not None:
            logger.error("could not record %d webhook attempts (each is made again): %s",
                         len(batch), failed)
            self.metrics.background_errors.labels("webhooks", "record").inc()
        else:
            for a in batch:
                self.metrics.webhook_attempts.labels("delivered" if a.ok else "failed").inc()
                if not a.ok:
                    logger.warning("webhook %s: attempt %d of event %d failed (%s)%s", a.url,
                                   a.attempt, a.event_id,
                                   " ".join(str(x) for x in (a.status, a.error) if x),
                                   "; giving up" if a.state == "failed" else "")
        self._wake.set()
