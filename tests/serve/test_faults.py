"""Faults injected into a real service (a store method that raises, a forward pass that fails, a
thread step that raises): every request gets an answer, the threads survive, what they could
not do is visible in /metrics and /readyz, and the work is done once the fault is gone."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from amnl.config import InferenceConfig
from amnl.data.cmapss import COLUMNS, load_subset
from amnl.features.online import READING_COLUMNS
from amnl.serve.settings import ServeSettings
from amnl.serve.writer import AssetReadings

from .conftest import reading

pytestmark = pytest.mark.needs_data

RAW = [COLUMNS.index(c) for c in READING_COLUMNS]
#: Seconds within which every answer must come (the writer's last-resort timeout is 30 s).
ANSWER_WITHIN = 10.0


@pytest.fixture(scope="module")
def engines(cmapss_dir) -> dict[str, np.ndarray]:
    test = load_subset(cmapss_dir, "FD001", train=False).test
    return {f"e{u}": test.values[test.unit == u] for u in (1, 2, 3)}


def settings(db, **kw) -> ServeSettings:
    return ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db, **kw)


def post(client: httpx.Client, asset: str, rows: np.ndarray) -> httpx.Response:
    return client.post(f"/v1/assets/{asset}/readings",
                       json={"readings": [reading(x) for x in rows]})


def parts(asset: str, rows: np.ndarray) -> list[AssetReadings]:
    return [AssetReadings(asset, rows[:, 1].astype(np.int64), rows[:, RAW],
                          [["body", "readings", i] for i in range(len(rows))])]


def locked(*_a, **_k):
    raise sa.exc.OperationalError("SELECT ...", {}, sqlite3.OperationalError("database is locked"))


def bug(*_a, **_k):
    raise RuntimeError("a bug in the service")


class HeldWriter:
    """Holds the writer thread in a transaction of its own until released, so that what is
    queued meanwhile is applied as one group."""

    def __init__(self, service) -> None:
        self.release, entered = threading.Event(), threading.Event()

        def hold(_conn):
            entered.set()
            return self.release.wait(ANSWER_WITHIN)

        self.future = service.writer.control(hold)
        assert entered.wait(ANSWER_WITHIN)  # what is queued from now on waits in the queue

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.future.result(ANSWER_WITHIN)


@pytest.mark.parametrize("fault,status,kind", [(bug, 500, "internal"),
                                               (locked, 503, "unavailable")])
def test_a_request_whose_write_raises_gets_an_answer_and_later_ones_work(
        live_server, db_url, engines, monkeypatch, fault, status, kind):
    server = live_server(settings(db_url))
    rows = engines["e1"]
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
        assert post(c, "e1", rows[:3]).status_code == 200
        # a re-sent cycle is compared with the stored one: that read raises
        monkeypatch.setattr(server.service.store, "stored_readings", fault)
        r = post(c, "e1", rows[2:4])
        assert r.status_code == status, r.text
        assert r.json()["detail"][0]["type"] == kind
        assert post(c, "e2", rows[:2]).status_code == 200  # the writer goes on
        monkeypatch.undo()
        r = post(c, "e1", rows[2:4])
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        metrics = c.get("/metrics").text
    assert f'amnl_readings_rejected_total{{reason="{kind}"}} 2.0' in metrics


def test_the_rest_of_a_group_is_committed_when_one_request_hits_a_bug(live_server, db_url,
                                                                       engines, monkeypatch):
    server = live_server(settings(db_url))
    service, rows = server.service, engines["e1"]
    assert service.writer.ingest(parts("e1", rows[:3])).result(ANSWER_WITHIN)
    monkeypatch.setattr(service.store, "stored_readings", bug)
    with HeldWriter(service):  # the three requests below are one group
        before = service.writer.ingest(parts("e2", rows[:5]))
        failing = service.writer.ingest(parts("e1", rows[2:4]))  # a duplicate: the read raises
        after = service.writer.ingest(parts("e3", rows[:5]))
    assert before.result(ANSWER_WITHIN)[0]["accepted"] == 5
    assert after.result(ANSWER_WITHIN)[0]["accepted"] == 5
    with pytest.raises(Exception) as err:
        failing.result(ANSWER_WITHIN)
    assert err.value.status == 500
    assert service.store.count("readings") == 3 + 5 + 5


def test_a_database_error_fails_the_whole_group_cleanly(live_server, db_url, engines,
                                                       monkeypatch):
    server = live_server(settings(db_url))
    service, rows = server.service, engines["e1"]
    assert service.writer.ingest(parts("e1", rows[:3])).result(ANSWER_WITHIN)
    monkeypatch.setattr(service.store, "stored_readings", locked)
    with HeldWriter(service):
        futures = [service.writer.ingest(parts("e2", rows[:5])),
                   service.writer.ingest(parts("e1", rows[2:4])),
                   service.writer.ingest(parts("e3", rows[:5]))]
    for f in futures:
        with pytest.raises(Exception) as err:
            f.result(ANSWER_WITHIN)
        assert err.value.status == 503
    assert service.store.count("readings") == 3  # nothing of the group
    monkeypatch.undo()
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
        assert post(c, "e2", rows[:5]).json()["accepted"] == 5
        assert c.get("/v1/assets/e2").json()["last_cycle"] == 5


def test_a_write_the_writer_does_not_answer_in_time_gets_a_503(live_server, tmp_path, engines):
    server = live_server(settings(str(tmp_path / "a.db")))
    server.service.answer_timeout = 0.5
    rows = engines["e1"]
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
        with HeldWriter(server.service):
            t0 = time.monotonic()
            r = post(c, "e1", rows[:2])
            assert time.monotonic() - t0 < ANSWER_WITHIN
            assert r.status_code == 503 and r.json()["detail"][0]["type"] == "timeout", r.text
        # the write was applied once the writer got to it: sending it again is a no-op
        r = post(c, "e1", rows[:2])
        assert r.status_code == 200 and r.json()["duplicates"] == 2, r.text
        with HeldWriter(server.service):  # a control write (a failure) is bounded alike
            r = c.post("/v1/assets/e1/failure", json={"cycle": 9})
            assert r.status_code == 503 and r.json()["detail"][0]["type"] == "timeout", r.text


class Killed(BaseException):
    """Not an Exception: what no step survives (a thread that dies must be seen)."""


def in_thread(name: str, fault, times: int, real=None):
    """A replacement that raises ``fault`` the first ``times`` calls from thread ``name``."""
    calls = {"n": 0}

    def replaced(*args, **kw):
        if threading.current_thread().name == name and calls["n"] < times:
            calls["n"] += 1
            fault()
        return real(*args, **kw) if real is not None else None

    replaced.calls = calls
    return replaced


def wait_for(condition, seconds: float = ANSWER_WITHIN) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_batcher_survives_a_catch_up_that_raises(live_server, db_url, engines, monkeypatch):
    from amnl.serve.store import Store

    flaky = in_thread("amnl-batcher", locked, 2, Store.unpredicted)
    monkeypatch.setattr(Store, "unpredicted", flaky)  # the first catch-up runs at start
    server = live_server(settings(db_url))
    wait_for(lambda: flaky.calls["n"] == 2)
    rows = engines["e1"][:20]
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
        assert post(c, "e1", rows).status_code == 200
        assert server.service.wait_predicted(30)
        assert len(c.get("/v1/assets/e1/predictions").json()["predictions"]) == 20
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
    assert 'amnl_background_errors_total{step="catch_up",thread="batcher"} 2.0' in metrics
    assert 'amnl_thread_alive{thread="batcher"} 1.0' in metrics


@pytest.mark.parametrize("step", ["alerts", "drift", "on_commit"])
def test_the_writer_survives_a_step_after_the_commit_that_raises(live_server, tmp_path, engines,
                                                                 monkeypatch, step):
    server = live_server(settings(str(tmp_path / "a.db")))
    w = server.service.writer
    owner, name = {"alerts": (w.alerts, "apply"), "drift": (w.drift, "observe"),
                   "on_commit": (w, "on_commit")}[step]
    if owner is None:
        pytest.skip("this model has no drift reference")
    monkeypatch.setattr(owner, name, in_thread("amnl-writer", bug, 1, getattr(owner, name)))
    rows = engines["e1"]
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
        assert post(c, "e1", rows[:10]).status_code == 200  # its step fails after the commit
        assert post(c, "e1", rows[10:20]).status_code == 200
        assert server.service.wait_predicted(30)
        assert [p["cycle"] for p in c.get("/v1/assets/e1/predictions").json()[
            "predictions"]] == list(range(1, 21))
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
    assert f'amnl_background_errors_total{{step="{step}",thread="writer"}} 1.0' in metrics


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("thread", ["batcher", "writer"])
def test_a_thread_that_dies_makes_readyz_answer_503_naming_it(live_server, tmp_path, engines,
                                                              monkeypatch, thread):
    from amnl.serve.store import Store

    def killed():
        raise Killed()

    if thread == "batcher":  # its first catch-up, at start
        monkeypatch.setattr(Store, "unpredicted", in_thread("amnl-batcher", killed, 1,
                                                            Store.unpredicted))
    server = live_server(settings(str(tmp_path / "a.db")))
    service = server.service
    service.answer_timeout = 1.0
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
        if thread == "writer":
            monkeypatch.setattr(service.writer.alerts, "apply",
                                in_thread("amnl-writer", killed, 1, service.writer.alerts.apply))
            # the writer dies after the commit, before answering: the last resort answers
            assert post(c, "e1", engines["e1"][:3]).status_code in (200, 503)
        wait_for(lambda: thread in service.dead_threads())
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["threads"] == [thread], r.text
        assert f'amnl_thread_alive{{thread="{thread}"}} 0.0' in c.get("/metrics").text


class Failing:
    """A runtime whose every forward pass fails (readings are stored, predictions are not)."""

    def __call__(self, x):
        raise RuntimeError("no")


def with_runtime(good, runtime):
    """The predictor ``good`` with another runtime."""
    return type(good)(good.config, good.preprocessor, runtime, good.model_id, good.inference)


class Gate:
    """A runtime that holds its first forward pass until ``go`` and counts the windows."""

    def __init__(self, runtime) -> None:
        self.runtime, self.windows = runtime, 0
        self.entered, self.go = threading.Event(), threading.Event()

    def __call__(self, x):
        self.entered.set()
        assert self.go.wait(ANSWER_WITHIN)
        self.windows += len(x)
        return self.runtime(x)


def unpredicted_at_restart(db: str, good, engines: dict[str, np.ndarray]) -> None:
    """Store ``engines`` with a runtime that fails: acknowledged, never predicted."""
    from amnl.serve.service import FleetService

    first = FleetService(settings(db), with_runtime(good, Failing()))
    first.start()
    for a, rows in engines.items():
        assert first.writer.ingest(parts(a, rows)).result(ANSWER_WITHIN)
    first.writer.wait_idle()
    assert first.store.count("predictions") == 0
    first.batcher.stop(0)  # as if killed: no clean shutdown of the pipeline
    first.engine.dispose()


def test_a_restart_predicts_each_unpredicted_reading_once(db_url, predictor, engines):
    """Readings committed while a catch-up waits for the writer are queued and also found
    unpredicted in the database: each must still get one forward pass."""
    from amnl.serve.service import FleetService

    good = predictor()
    stored = {a: engines[a][:40] for a in ("e1", "e2")}  # e1 has 31 cycles
    unpredicted_at_restart(db_url, good, stored)
    gate = Gate(good.runtime)
    second = FleetService(settings(db_url, max_batch=16, max_backlog=16),
                          with_runtime(good, gate))
    second.start()
    try:
        assert gate.entered.wait(ANSWER_WITHIN)  # the first catch-up's pass, held
        with HeldWriter(second):
            new = second.writer.ingest(parts("e3", engines["e3"][:10]))
            gate.go.set()  # the next catch-up now waits behind the held writer and e3
            wait_for(lambda: second.writer._queue.qsize() >= 3)  # e3, a batch, the barrier
        assert new.result(ANSWER_WITHIN)
        assert second.wait_predicted(30)
        total = sum(len(r) for r in stored.values()) + 10
        assert second.store.count("predictions") == total
        assert gate.windows == total  # one forward pass per reading
        assert second.metrics.predictions._value.get() == total
        second.writer.wait_idle()
        assert second.writer.alerts.buffers == {}
    finally:
        second.stop()


def test_a_repeated_prediction_is_not_kept_in_the_alert_buffers(live_server, tmp_path, engines):
    from amnl.serve.batcher import Batch, Job

    server = live_server(settings(str(tmp_path / "a.db")))
    service = server.service
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
        assert post(c, "e1", engines["e1"][:5]).status_code == 200
    assert service.wait_predicted(30)
    entry = service.writer.entries["e1"]
    service.writer.add_batch(Batch([Job("e1", entry.incarnation, 3, np.zeros((1, 1)))],
                                   np.array([50.0]), np.array([[1.0, 0.0, 0.0]]), "catch_up",
                                   0.0))
    service.writer.wait_idle()
    assert service.writer.alerts.buffers == {}


class Poisoned:
    """A runtime whose forward pass raises for every batch holding one given window."""

    def __init__(self, runtime, window_last_row: np.ndarray) -> None:
        self.runtime, self.row = runtime, window_last_row
        self.lock = threading.Lock()
        self.passes = 0

    def __call__(self, x):
        with self.lock:
            self.passes += 1
        if np.any(np.all(np.isclose(x[:, -1], self.row, rtol=0, atol=1e-6), axis=1)):
            raise RuntimeError("this window breaks the runtime")
        return self.runtime(x)


def test_a_window_whose_forward_pass_fails_is_set_aside_and_its_neighbours_predicted(
        live_server, db_url, predictor, engines, monkeypatch, caplog):
    import logging

    from amnl.features.online import OnlineFeatures
    from amnl.serve import batcher

    monkeypatch.setattr(batcher, "RETRY_SECONDS", 0.05)  # retried, then given up, quickly
    good = predictor()
    rows = {a: engines[a][:30] for a in ("e1", "e2", "e3")}
    online = OnlineFeatures(good.preprocessor)  # the poisoned window: e2's at cycle 10
    windows, _, _ = online.step(online.new_state(), rows["e2"][:, 1].astype(np.int64),
                                rows["e2"][:, RAW], label="e2")
    runtime = Poisoned(good.runtime, windows[9][-1])
    server = live_server(settings(db_url, max_batch=8, max_wait_ms=20.0))
    server.service.batcher.predict = runtime  # the thread reads it at every pass
    caplog.set_level(logging.WARNING, logger="amnl.serve.batcher")
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
        for k in range(30):  # a fleet's cycle at a time
            r = c.post("/v1/readings", json={"readings": [
                {"asset_id": a, **reading(rows[a][k])} for a in rows]})
            assert r.status_code == 200, r.text
        wait_for(lambda: server.service.store.count("predictions") == 89)
        wait_for(lambda: 'amnl_prediction_windows_failed_total{result="given_up"} 1.0'
                 in c.get("/metrics").text)
        got = [p["cycle"] for p in c.get("/v1/assets/e2/predictions").json()["predictions"]]
        metrics = c.get("/metrics").text
    assert got == [c for c in range(1, 31) if c != 10]
    assert "amnl_prediction_windows_set_aside 1.0" in metrics
    assert any("asset e2 cycle 10" in r.getMessage() and "given up" in r.getMessage()
               for r in caplog.records)


def queue_depth(metrics: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith("amnl_prediction_queue_depth "))
    return float(line.split()[1])


def test_a_restart_shows_the_readings_waiting_for_a_catch_up(db_url, predictor, engines):
    """kill -9 with predictions still queued: the newest cycles predicted, older ones not. The
    backlog is in pending and the queue depth at once, and shrinks as the catch-up runs."""
    from amnl.serve.app import create_app
    from amnl.serve.service import FleetService

    from .conftest import LiveServer

    good = predictor()
    rows = {a: engines[a][:25] for a in ("e1", "e2")}
    first = FleetService(settings(db_url), good)
    first.start()
    for a, r in rows.items():
        assert first.writer.ingest(parts(a, r)).result(ANSWER_WITHIN)
    assert first.wait_predicted(30)
    first.stop()
    engine = sa.create_engine(db_url)  # what a kill -9 under overload leaves
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM predictions WHERE cycle <= 20"))
    engine.dispose()

    gate = Gate(good.runtime)
    with LiveServer(create_app(settings(db_url), with_runtime(good, gate))) as server:
        assert gate.entered.wait(ANSWER_WITHIN)  # the catch-up's forward pass, held
        with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
            asset = c.get("/v1/assets/e1").json()
            assert asset["prediction"]["cycle"] == 25 and asset["pending"] == 20
            assert [a["pending"] for a in c.get("/v1/assets").json()["items"]] == [20, 20]
            assert queue_depth(c.get("/metrics").text) == 40
            r = c.post("/v1/assets/e1/readings", json={"readings": [
                reading(x) for x in engines["e1"][25:28]]})
            assert r.status_code == 200, r.text
            assert c.get("/v1/assets/e1").json()["pending"] == 23
            assert queue_depth(c.get("/metrics").text) == 43
            gate.go.set()
            wait_for(lambda: queue_depth(c.get("/metrics").text) == 0, 30)
            assert [a["pending"] for a in c.get("/v1/assets").json()["items"]] == [0, 0]
            assert server.service.store.unpredicted(1) == []


def test_a_failure_report_for_an_asset_deleted_meanwhile_is_a_404(live_server, tmp_path,
                                                                   engines):
    """A DELETE queued ahead of a failure report: the report finds no asset (it raised a
    KeyError in the writer before, answered as a 500 'internal' with a traceback)."""
    from concurrent.futures import ThreadPoolExecutor

    server = live_server(settings(str(tmp_path / "a.db")))
    with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN) as c:
        assert post(c, "e1", engines["e1"][:3]).status_code == 200
        assert server.service.wait_predicted()  # no prediction batch joins the queue below
        with ThreadPoolExecutor(2) as pool:
            with HeldWriter(server.service):
                gone = pool.submit(c.delete, "/v1/assets/e1")
                wait_for(lambda: server.service.writer._queue.qsize() >= 1)
                failed = pool.submit(c.post, "/v1/assets/e1/failure", json={"cycle": 3})
                wait_for(lambda: server.service.writer._queue.qsize() >= 2)
            assert gone.result().status_code == 204
            r = failed.result()
    assert r.status_code == 404 and r.json()["detail"][0]["type"] == "not_found", r.text
