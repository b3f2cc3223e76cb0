"""Webhook delivery against real receivers on loopback: a redirect is a failed attempt and is not
followed; a receiver that never answers does not delay another; one URL gets its events in order;
the sender's writes go through the one writer, and an outcome the database refused is made
again."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa

from amnl.config import InferenceConfig
from amnl.data.cmapss import load_subset
from amnl.serve.settings import ServeSettings
from amnl.serve.webhooks import EVENT_HEADER, SIGNATURE_HEADER, verify

from .conftest import reading

SECRET = "webhook-test-secret"
#: Every asset's first prediction raises an alert: one event per asset.
ALWAYS = [{"name": "any", "kind": "rul_below", "threshold": 10000, "raise_after": 1}]


@pytest.fixture(scope="module")
def first_rows(cmapss_dir):
    """The first cycle of FD001's first test engines."""
    test = load_subset(cmapss_dir, "FD001", train=False).test
    return [test.values[test.unit == u][0] for u in test.units[:5]]


@pytest.fixture
def serve(live_server, tmp_path):
    """``serve(db_url, webhooks)``: a live server raising an alert at every asset's first
    prediction."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(ALWAYS))

    def start(db: str, webhooks: list[str]):
        return live_server(ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db,
                                         alert_rules=str(rules), webhooks=webhooks,
                                         webhook_secret=SECRET))

    return start


class Receiver:
    """A real HTTP server on loopback; records every request (method, path, headers, body, time)
    and answers ``answer(calls)`` -> (status, headers)."""

    def __init__(self, answer=lambda calls: (204, {})) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.requests.append({"method": self.command, "path": self.path,
                                       "headers": dict(self.headers), "body": body,
                                       "at": time.monotonic()})
                status, headers = answer(len(outer.requests))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = do_PUT = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base + "/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[int]:
        return [int(r["headers"][EVENT_HEADER]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(answer=lambda calls: (204, {})) -> Receiver:
        made.append(Receiver(answer))
        return made[-1]

    yield make
    for r in made:
        r.close()


def post_first_cycles(server, rows, n: int) -> None:
    body = {"readings": [{"asset_id": f"e{i}", **reading(r)} for i, r in enumerate(rows[:n])]}
    assert httpx.post(server.url + "/v1/readings", json=body).status_code == 200
    assert server.service.wait_predicted(30)


def wait_for(what, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.needs_data
def test_a_redirect_is_a_failed_attempt_and_is_not_followed(db_url, serve, receivers,
                                                           first_rows):
    target = receivers()  # where a redirect would send the event (an internal admin page)
    redirector = receivers(lambda calls: (302, {"Location": target.base + "/internal-admin"}))
    server = serve(db_url, [redirector.url])
    post_first_cycles(server, first_rows, 1)
    store = server.service.store
    assert wait_for(lambda: len(store.deliveries()[0]["attempts_log"]) >= 2, 10)  # the retry too
    (delivery,) = store.deliveries()
    assert delivery["state"] == "pending"  # failed attempts, retried: not delivered
    for attempt in delivery["attempts_log"][:2]:
        assert attempt["status_code"] == 302
        assert attempt["error"] == f"redirect to {target.base}/internal-admin not followed"
    assert len(redirector.requests) >= 2 and target.requests == []
    metrics = httpx.get(server.url + "/metrics").text
    assert 'amnl_webhook_attempts_total{result="failed"}' in metrics


@pytest.mark.needs_data
def test_a_receiver_that_never_answers_does_not_delay_another(db_url, serve, receivers,
                                                            first_rows):
    dead = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    dead.bind(("127.0.0.1", 0))
    dead.listen(16)
    good = receivers()
    try:
        server = serve(db_url, [f"http://127.0.0.1:{dead.getsockname()[1]}/hook", good.url])
        t0 = time.monotonic()
        post_first_cycles(server, first_rows, 5)
        assert wait_for(lambda: len(good.requests) == 5, 10)
        # sequential sending gave the good receiver its first event after the dead one's 5 s
        # timeout and the fifth after 25 s
        assert good.requests[-1]["at"] - t0 < 1.5, good.requests[-1]["at"] - t0
        assert good.events() == sorted(good.events())  # in the order they happened
        for r in good.requests:
            assert verify(r["body"], r["headers"][SIGNATURE_HEADER], SECRET)
    finally:
        dead.close()


@pytest.mark.needs_data
def test_one_url_gets_its_events_in_order_and_the_writer_records_them(db_url, serve, receivers,
                                                                     first_rows):
    hook = receivers(lambda calls: (500, {}) if calls == 1 else (204, {}))
    server = serve(db_url, [hook.url])
    writes: list[str] = []  # the thread of every write to the webhook tables

    @sa.event.listens_for(server.service.engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(("INSERT INTO WEBHOOK_ATTEMPTS",
                                                  "UPDATE WEBHOOK_DELIVERIES")):
            writes.append(threading.current_thread().name)

    post_first_cycles(server, first_rows, 3)
    store = server.service.store
    assert wait_for(lambda: all(d["state"] == "delivered" for d in store.deliveries()), 10)
    # the first event failed once (500) and was retried after 1 s: the others waited for it
    first, second, third = sorted(set(hook.events()))
    assert hook.events() == [first, first, second, third]
    assert [len(d["attempts_log"]) for d in store.deliveries()] == [2, 1, 1]
    assert set(writes) == {"amnl-writer"}, writes


@pytest.mark.needs_data
def test_an_outcome_the_database_refused_is_made_again(serve, receivers, first_rows, tmp_path):
    hook = receivers()
    server = serve(str(tmp_path / "a.db"), [hook.url])
    refused = []

    @sa.event.listens_for(server.service.engine, "before_cursor_execute")
    def _refuse_once(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO WEBHOOK_ATTEMPTS") and not refused:
            refused.append(statement)
            raise sa.exc.OperationalError(statement, {}, Exception("disk I/O error (injected)"))

    post_first_cycles(server, first_rows, 1)
    store = server.service.store
    assert wait_for(lambda: store.deliveries()[0]["state"] == "delivered", 10)
    assert refused and hook.events() == [hook.events()[0]] * 2  # at least once: sent again
    assert [a["attempt"] for a in store.deliveries()[0]["attempts_log"]] == [1]
    metrics = httpx.get(server.url + "/metrics").text
    assert 'amnl_background_errors_total{step="record",thread="webhooks"} 1.0' in metrics
