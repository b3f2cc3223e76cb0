"""Dynamic batching across assets: windows that arrive together share one forward pass.

A batch is released when it holds ``max_batch`` windows (reason ``full``), when ``max_wait_ms``
have passed since its first window arrived (``timeout``), or at once when nothing more is
queued and the wait is 0 (``drained``). Batches of recovered predictions (after a restart or an
overflow) are released as ``catch_up``. The queue holds at most ``max_backlog`` windows; the
service keeps acknowledging beyond that, and the windows that did not fit are rebuilt from
the database once the queue is empty (:meth:`DynamicBatcher.mark_behind`). Order does not
matter: predictions are keyed by (asset, cycle) and an asset's latest prediction only moves
forward.

Each window is predicted once: a catch-up skips the windows queued (and those the last one
took), and a window submitted while a catch-up has it is not queued again. A forward pass that
fails is bisected, so that the windows that fail alone are set aside and their neighbours are
predicted at once; a window set aside is tried again after a doubling pause
(:data:`RETRY_SECONDS`), and given up (logged, counted, left unpredicted in the database until
the service restarts) after :data:`GIVE_UP_ATTEMPTS` failures beside neighbours that passed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

RELEASE_REASONS = ("full", "timeout", "drained", "catch_up")
#: Batches recovered from the database at a time (bounds the memory of a catch-up), and at
#: least this many windows (each catch-up scans the readings for unpredicted ones).
CATCH_UP_BATCHES = 8
CATCH_UP_MIN = 512
#: Pause after a failed forward pass before its windows are tried again (from the database),
#: or after a failed step of the thread (a catch-up, a hand-over); it doubles with each failure
#: in a row, up to :data:`MAX_RETRY_SECONDS`.
RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
#: Failures of a window alone, while other windows passed, before it is given up.
GIVE_UP_ATTEMPTS = 5
#: Windows set aside at most (keys only); beyond, failed windows are simply caught up again.
MAX_SET_ASIDE = 10_000


def job_key(job: Job) -> tuple[str, int, int]:
    """What identifies a window: (asset, incarnation, cycle)."""
    return job.asset_id, job.incarnation, job.cycle


@dataclass
class Job:
    """One window to predict.

    Attributes:
        asset_id, incarnation: whose (an asset deleted and created again is another one).
        cycle: the cycle the window ends at.
        window: float32 (W, F).
        acked_at: ``time.monotonic()`` of the acknowledgement (None for recovered work).
        warnings: the input warnings of its prediction (:mod:`amnl.inference.checks`),
            stored with it.
    """

    asset_id: str
    incarnation: int
    cycle: int
    window: np.ndarray
    acked_at: float | None = None
    warnings: tuple[str, ...] = ()


@dataclass
class Batch:
    """A released batch and what the model said of it."""

    jobs: list[Job]
    rul: np.ndarray
    probabilities: np.ndarray
    reason: str
    seconds: float


class _HandOverFailed(Exception):
    """``on_batch`` raised (its cause): not a failure of the forward pass."""


class DynamicBatcher:
    """A thread that coalesces :class:`Job` s into forward passes.

    Args:
        predict: scaled windows (N, W, F) -> (RUL (N,), probabilities (N, 3)).
        on_batch: called with every finished :class:`Batch` (from the batcher's thread).
        max_batch: windows per forward pass at most (1: no batching).
        max_wait_ms: how long a batch waits for more windows after its first.
        max_backlog: windows queued at most; :meth:`submit` takes what fits.
        catch_up: called when behind and idle, returns up to ``n`` recovered jobs (oldest
            first; fewer than ``n`` means there are no more).
        on_error: called with the exception when a forward pass fails; its jobs stay
            unpredicted in the database and are caught up, after :data:`RETRY_SECONDS`.
        nice: raise the batcher thread's nice value by this much (Linux), so that
            acknowledgements keep the CPU when predictions cannot keep up; the runtime should
            then run in this thread (one intra-op thread).
        on_fault: called with the step's name (``catch_up``, ``hand_over``) and the exception
            when a step of the thread fails; the thread logs it, waits (see
            :data:`RETRY_SECONDS`) and carries on, its windows caught up from the database.
        on_window: called with ``"set_aside"`` or ``"given_up"`` and the :class:`Job` of a
            window whose forward pass failed alone.
    """

    def __init__(self, predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                 on_batch: Callable[[Batch], None], *, max_batch: int, max_wait_ms: float,
                 max_backlog: int, catch_up: Callable[[int], list[Job]] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 nice: int = 0,
                 on_fault: Callable[[str, BaseException], None] | None = None,
                 on_window: Callable[[str, Job], None] | None = None) -> None:
        self.predict, self.on_batch = predict, on_batch
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.max_backlog, self.catch_up, self.on_error = max_backlog, catch_up, on_error
        self.nice, self.on_fault = nice, on_fault
        self._failures = 0  # failed steps in a row (the backoff's exponent)
        self.on_window = on_window
        self._queue: deque[Job] = deque()
        self._keys: set[tuple] = set()  # of the queued jobs
        self._caught: set[tuple] = set()  # of the last catch-up's jobs
        self._aside: dict[tuple, tuple[int, float]] = {}  # failed alone: (attempts, retry at)
        self._passes = self._passes_at_failure = 0  # forward passes that went through
        self._cond = threading.Condition()
        self._behind = catch_up is not None  # a start may find unpredicted readings
        self._stop = False
        self.dropped = 0
        """Windows that did not fit in the queue since the last catch-up (in the database)."""
        self._thread = threading.Thread(target=self._run, name="amnl-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the thread has died (it survives any Exception of a step)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        """Windows waiting: queued plus those left to the database."""
        return len(self._queue) + self.dropped

    def submit(self, jobs: list[Job]) -> int:
        """Queue what fits of ``jobs``; the rest is marked to be caught up. Returns how many
        were queued."""
        with self._cond:
            jobs = [j for j in jobs if job_key(j) not in self._caught
                    and job_key(j) not in self._keys]  # already being predicted
            room = max(self.max_backlog - len(self._queue), 0)
            taken = jobs[:room]
            self._queue.extend(taken)
            self._keys.update(job_key(j) for j in taken)
            if len(taken) < len(jobs):
                self.dropped += len(jobs) - len(taken)
                self._behind = self.catch_up is not None
            self._cond.notify()
        return len(taken)

    def mark_behind(self) -> None:
        with self._cond:
            self._behind = self.catch_up is not None
            self._cond.notify()

    def skipped(self) -> set[tuple]:
        """Keys (:func:`job_key`) a catch-up should leave: queued, or set aside and not due."""
        t = time.monotonic()
        with self._cond:
            return self._keys | {k for k, (_, at) in self._aside.items() if at > t}

    @property
    def set_aside(self) -> int:
        """Windows whose forward pass failed alone, waiting for a retry or given up."""
        return len(self._aside)

    def _next_retry(self) -> float | None:
        """Seconds until the next window set aside is due (None: none is)."""
        due = [at for _, at in self._aside.values() if at != float("inf")]
        return None if not due else max(min(due) - time.monotonic(), 0.0)

    def _take(self) -> tuple[list[Job], str] | None:
        with self._cond:
            while not self._queue and not self._stop:
                if self._behind:
                    break
                left = self._next_retry()
                if left == 0.0:  # a window set aside is due: from the database
                    self._behind = self.catch_up is not None
                    if self._behind:
                        break
                    left = None
                self._cond.wait(left)
            if self._stop:
                return None
            if not self._queue:  # behind and idle: catch up from the database
                self._behind = False
                self.dropped = 0
                reason = "catch_up"
            else:
                reason = ""
        if reason:
            n = min(self.max_backlog, max(CATCH_UP_BATCHES * self.max_batch, CATCH_UP_MIN))
            t = time.monotonic()  # what was due then is in the catch-up, if unpredicted
            jobs = self.catch_up(n) if self.catch_up else []
            if len(jobs) >= n:
                self.mark_behind()
            with self._cond:  # queued meanwhile, or set aside: not twice
                jobs = [j for j in jobs if job_key(j) not in self._keys
                        and self._aside.get(job_key(j), (0, 0.0))[1] <= t]
                self._caught = {job_key(j) for j in jobs}
                complete = not self._behind  # the catch-up saw every unpredicted reading
                for k, (attempts, at) in list(self._aside.items()):
                    if at <= t and k not in self._caught:  # due, but not in this catch-up
                        if complete:  # predicted, or deleted, since
                            del self._aside[k]
                        else:
                            self._aside[k] = (attempts, t + RETRY_SECONDS)
            return jobs, reason
        with self._cond:
            deadline = time.monotonic() + self.max_wait
            while len(self._queue) < self.max_batch and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(len(self._queue), self.max_batch)
            jobs = [self._queue.popleft() for _ in range(n)]
            self._keys.difference_update(job_key(j) for j in jobs)
        if n == self.max_batch:
            return jobs, "full"
        return jobs, "timeout" if self.max_wait > 0 else "drained"

    def _run(self) -> None:
        if self.nice:
            try:  # Linux: a thread's own nice value; ingestion keeps the CPU under overload
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError) as exc:
                logger.warning("cannot lower the batcher's priority: %s", exc)
        while True:
            try:
                taken = self._take()
            except Exception as exc:  # noqa: BLE001 - e.g. the database, in a catch-up
                self._fault("catch_up", exc)
                continue
            if taken is None:
                return
            jobs, reason = taken
            for b in range(0, len(jobs), self.max_batch):
                part = jobs[b: b + self.max_batch]
                failed: list[Job] = []
                try:
                    done = self._forward(part, reason, failed, top=True)
                except _HandOverFailed as exc:
                    self._fault("hand_over", exc.__cause__)
                    continue
                if failed:
                    # no window of several passed: the runtime fails, not a window (the
                    # thread waits); windows that fail alone while the runtime works (a pass
                    # went through since it last failed) count towards their giving up
                    if not done and len(part) > 1:
                        self._passes_at_failure = self._passes
                    works = done > 0 or self._passes > self._passes_at_failure
                    self._set_aside(failed, counts=works)
                    if not works:
                        self._pause()
                    self.mark_behind()
                    continue
                self._failures = 0

    def _forward(self, part: list[Job], reason: str, failed: list[Job], top: bool = False
                 ) -> int:
        """Predict ``part``, bisecting it when the pass fails; the windows that fail alone
        go to ``failed``. Returns how many were predicted."""
        t0 = time.perf_counter()
        try:
            rul, prob = self.predict(np.stack([j.window for j in part]))
        except Exception as exc:
            if top:  # one traceback a chunk; the windows that fail alone are named below
                logger.exception("a forward pass of %d windows failed%s", len(part),
                                 "; bisecting it" if len(part) > 1 else "")
            if self.on_error:
                self.on_error(exc)
            if len(part) == 1:
                failed.append(part[0])
                return 0
            mid = len(part) // 2
            return (self._forward(part[:mid], reason, failed)
                    + self._forward(part[mid:], reason, failed))
        try:
            self.on_batch(Batch(part, rul, prob, reason, time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001
            raise _HandOverFailed() from exc
        self._passes += 1
        if self._aside:  # predicted now: no longer set aside
            with self._cond:
                for j in part:
                    self._aside.pop(job_key(j), None)
        return len(part)

    def _set_aside(self, failed: list[Job], counts: bool) -> None:
        """Windows that failed alone wait for a retry (from the database); a window that
        failed :data:`GIVE_UP_ATTEMPTS` times while the runtime worked (``counts``) is given
        up."""
        t = time.monotonic()
        with self._cond:
            for j in failed:
                k = job_key(j)
                if k not in self._aside and len(self._aside) >= MAX_SET_ASIDE:
                    continue  # not tracked: caught up again like any unpredicted reading
                attempts = self._aside.get(k, (0, 0.0))[0] + int(counts)
                if attempts >= GIVE_UP_ATTEMPTS:
                    self._aside[k] = (attempts, float("inf"))
                    kind = "given_up"
                    logger.error("asset %s cycle %d: its forward pass failed %d times while "
                                 "other windows passed; given up (it stays unpredicted until "
                                 "the service restarts)", j.asset_id, j.cycle, attempts)
                else:
                    pause = min(RETRY_SECONDS * 2 ** attempts, MAX_RETRY_SECONDS)
                    self._aside[k] = (attempts, t + pause)
                    kind = "set_aside"
                    logger.warning("asset %s cycle %d: its forward pass failed alone; set aside,"
                                   " retried in %g s", j.asset_id, j.cycle, pause)
                if self.on_window is not None:
                    self.on_window(kind, j)

    def _fault(self, step: str, exc: BaseException) -> None:
        """A step failed: log, count, wait, and catch its windows up from the database."""
        logger.exception("the batcher's %s failed; retrying", step)
        if self.on_fault is not None:
            try:
                self.on_fault(step, exc)
            except Exception:  # noqa: BLE001
                logger.exception("on_fault failed")
        self._pause()
        self.mark_behind()

    def _pause(self) -> None:
        """Wait :data:`RETRY_SECONDS`, doubled for each failure in a row (a stop ends it)."""
        seconds = min(RETRY_SECONDS * 2 ** self._failures, MAX_RETRY_SECONDS)
        self._failures += 1
        deadline = time.monotonic() + seconds
        with self._cond:  # woken by submits too: wait out the whole pause
            while not self._stop and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
