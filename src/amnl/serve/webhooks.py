"""Webhooks: every alert transition, POSTed as JSON and signed, retried with backoff.

The writer stores each transition as an ``alert_events`` row and one ``webhook_deliveries`` row
per configured URL in the transaction that caused it (an outbox), so a delivery survives a
restart. This thread sends what is due:

* body: the event's JSON (``event``, ``alert``, ``asset_id``, ``rule``, ``severity``, ``state``,
  ``cycle``, ``value``, ``at``, ``model_id``), UTF-8;
* headers: ``Content-Type: application/json``, ``X-Amnl-Event`` (the event id, the same on
  every retry: receivers deduplicate on it), ``X-Amnl-Signature: sha256=<hex>``, the
  HMAC-SHA256 of the exact body bytes under the shared secret;
* a 2xx answer is delivered; anything else (or no answer in :data:`TIMEOUT_SECONDS`) is retried
  after 1, 2, 4, ... seconds (at most :data:`MAX_BACKOFF_SECONDS`), :data:`MAX_ATTEMPTS` times
  in all, then marked failed. Every attempt is a ``webhook_attempts`` row (status code or error,
  duration).

A receiver checks a delivery with :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import urllib.error
import urllib.request

from sqlalchemy import select, update

from amnl.serve.db import alert_events, now, webhook_attempts, webhook_deliveries

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Amnl-Signature"
EVENT_HEADER = "X-Amnl-Event"
TIMEOUT_SECONDS = 5.0
MAX_ATTEMPTS = 8
MAX_BACKOFF_SECONDS = 60.0
#: How often the sender looks for due deliveries when nothing woke it.
POLL_SECONDS = 1.0


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """A receiver's check: ``header`` is the signature of ``body`` under ``secret``."""
    return header is not None and hmac.compare_digest(header, sign(body, secret))


def backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1-based)."""
    return min(2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)


class WebhookSender:
    """The delivery thread.

    Args:
        engine: the service's database.
        secret: the HMAC key.
        metrics: :class:`amnl.serve.metrics.ServeMetrics`.
    """

    def __init__(self, engine, secret: str, metrics) -> None:
        self.engine, self.secret, self.metrics = engine, secret, metrics
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="amnl-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(TIMEOUT_SECONDS + 5)

    def wake(self) -> None:
        """New deliveries were committed."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            try:
                sent = self.send_due()
            except Exception:
                logger.exception("webhook delivery round failed")
                sent = 0
            if not sent:
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()

    def send_due(self, limit: int = 50) -> int:
        """Attempt every delivery that is due; returns how many were attempted."""
        t = now()
        d, e = webhook_deliveries, alert_events
        with self.engine.connect() as conn:
            due = conn.execute(
                select(d.c.id, d.c.url, d.c.attempts, d.c.event_id, e.c.body)
                .join(e, e.c.id == d.c.event_id)
                .where(d.c.state == "pending", d.c.next_attempt_at <= t)
                .order_by(d.c.event_id, d.c.id).limit(limit)).all()
        for delivery_id, url, attempts, event_id, body in due:
            if self._stop:
                break
            self._attempt(delivery_id, url, attempts + 1, event_id, body.encode())
        return len(due)

    def _attempt(self, delivery_id: int, url: str, attempt: int, event_id: int,
                 body: bytes) -> None:
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", EVENT_HEADER: str(event_id),
            SIGNATURE_HEADER: sign(body, self.secret), "User-Agent": "amnl-webhooks"})
        t0 = time.perf_counter()
        status, error = None, None
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as r:
                status = r.status
        except urllib.error.HTTPError as exc:
            status, error = exc.code, str(exc.reason)[:500]
        except (urllib.error.URLError, OSError) as exc:
            error = str(getattr(exc, "reason", exc))[:500]
        ok = status is not None and 200 <= status < 300
        state = "delivered" if ok else ("failed" if attempt >= MAX_ATTEMPTS else "pending")
        with self.engine.begin() as conn:
            conn.execute(webhook_attempts.insert().values(
                delivery_id=delivery_id, attempt=attempt, at=now(), status_code=status,
                error=error, seconds=time.perf_counter() - t0))
            conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
                         .values(state=state, attempts=attempt,
                                 next_attempt_at=now() + backoff(attempt)))
        self.metrics.webhook_attempts.labels("delivered" if ok else "failed").inc()
        if not ok:
            logger.warning("webhook %s: attempt %d of event %d failed (%s)%s", url, attempt,
                           event_id, status or error,
                           "; giving up" if state == "failed" else "")
