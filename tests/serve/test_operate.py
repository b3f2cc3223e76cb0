"""Operating a fleet through the API: intervals, alerts and their lifecycle, webhooks, drift,
online accuracy."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from amnl.config import InferenceConfig
from amnl.data.cmapss import load_subset
from amnl.evaluate.evaluate import evaluate_test
from amnl.serve.app import create_app
from amnl.serve.settings import ServeSettings
from amnl.serve.webhooks import EVENT_HEADER, SIGNATURE_HEADER, verify

from .conftest import LiveServer, reading
from .test_parity import stream_engines

SECRET = "webhook-test-secret"


@pytest.fixture(scope="module")
def fd001(cmapss_dir):
    return load_subset(cmapss_dir, "FD001", train=False)


def closest_to_failure(subset, n: int) -> dict[str, np.ndarray]:
    """The ``n`` test engines whose histories end nearest their failure."""
    units = subset.test.units[np.argsort(subset.rul)[:n]]
    return {f"e{int(u)}": subset.test.values[subset.test.unit == u] for u in units}


def settings(db, **kw) -> ServeSettings:
    return ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db, **kw)


class Receiver:
    """A real HTTP server on loopback that takes webhooks; it answers 500 to the first."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, bytes]] = []
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls += 1
                if outer.calls == 1:
                    self.send_response(500)
                else:
                    outer.received.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.needs_data
@pytest.mark.slow
def test_alerts_raise_ack_clear_survive_a_restart_and_reach_the_webhook(db_url, predictor,
                                                                       fd001, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([
        {"name": "low_rul", "kind": "rul_lower_below", "threshold": 30, "severity": "critical"},
        {"name": "degrading", "kind": "p_degrading_above", "threshold": 0.5,
         "severity": "minor", "raise_after": 2, "clear_after": 2}]))
    hook = Receiver()
    engines = closest_to_failure(fd001, 3)
    cfg = settings(db_url, alert_rules=str(rules), webhooks=[hook.url], webhook_secret=SECRET)
    try:
        server = LiveServer(create_app(cfg, predictor())).__enter__()
        stream_engines(server.url, engines)
        assert server.service.wait_predicted()
        with httpx.Client(base_url=server.url) as c:
            open_ = c.get("/v1/alerts", params={"state": "open"}).json()
            low = [a for a in open_["items"] if a["rule"] == "low_rul"]
            assert {a["asset_id"] for a in low} == set(engines)  # one per asset and rule
            for a in low:  # raised once the lower bound was under 30 for 3 cycles in a row
                preds = c.get(f"/v1/assets/{a['asset_id']}/predictions").json()["predictions"]
                below = [p["rul_lower"] < 30 for p in preds]
                first = next(i for i in range(2, len(below)) if all(below[i - 2: i + 1]))
                assert a["raised"]["cycle"] == preds[first]["cycle"]
                assert a["state"] == "active_unacknowledged" and a["severity"] == "critical"
                assert all(p["rul_lower"] <= p["rul"] <= p["rul_upper"] for p in preds)
            degrading = c.get("/v1/alerts", params={"state": "cleared_unacknowledged"}).json()
            assert {a["rule"] for a in degrading["items"]} == {"degrading"}  # went critical
            assert all(a["cleared"]["cycle"] > a["raised"]["cycle"] for a in degrading["items"])

            target = low[0]
            r = c.post(f"/v1/alerts/{target['id']}/ack", json={"note": "borescope booked"})
            assert r.status_code == 200 and r.json()["state"] == "active_acknowledged"
            assert r.json()["acknowledged"]["note"] == "borescope booked"
            assert c.post(f"/v1/alerts/{target['id']}/ack", json={}).status_code == 409
            assert c.post("/v1/alerts/99999/ack", json={}).status_code == 404
            events = len(low) + 2 * len(degrading["items"]) + 1  # raised, raised+cleared, ack
        server.__exit__()

        # a restart keeps every alert and its state, and the hysteresis: nothing new is raised
        server = LiveServer(create_app(cfg, predictor())).__enter__()
        with httpx.Client(base_url=server.url) as c:
            again = c.get("/v1/alerts").json()
            assert again["total"] == len(low) + len(degrading["items"])
            assert {a["id"]: a["state"] for a in again["items"]}[target["id"]] == \
                "active_acknowledged"
            deadline = time.monotonic() + 30
            while len(hook.received) < events and time.monotonic() < deadline:
                time.sleep(0.1)
        server.__exit__()
        assert len(hook.received) == events  # every transition, the failed first one retried
        kinds = []
        for headers, body in hook.received:
            assert verify(body, headers[SIGNATURE_HEADER], SECRET)
            assert not verify(body, headers[SIGNATURE_HEADER], "another secret")
            event = json.loads(body)
            kinds.append(event["event"])
            assert int(headers[EVENT_HEADER]) >= 1 and event["asset_id"] in engines
        assert sorted(kinds) == sorted(["raised"] * (len(low) + len(degrading["items"]))
                                       + ["cleared"] * len(degrading["items"])
                                       + ["acknowledged"])
        attempts = [d["attempts_log"] for d in server.service.store.deliveries()]
        assert sum(len(a) for a in attempts) == events + 1
        assert any([x["status_code"] for x in a] == [500, 204] for a in attempts)
    finally:
        hook.close()


@pytest.mark.needs_data
@pytest.mark.slow
def test_replayed_test_engines_with_their_failures_score_as_amnl_evaluate(live_server, tmp_path,
                                                                         predictor, fd001):
    server = live_server(settings(str(tmp_path / "a.db")))
    test = fd001.test
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for u, rul in zip(test.units, fd001.rul):
            rows = test.values[test.unit == u]
            assert c.post(f"/v1/assets/e{int(u)}/readings",
                          json={"readings": [reading(r) for r in rows]}).status_code == 200
        assert server.service.wait_predicted(120)
        for u, rul in zip(test.units, fd001.rul):
            last = int(test.cycle[test.unit == u][-1])
            r = c.post(f"/v1/assets/e{int(u)}/failure", json={"cycle": last + int(rul)})
            assert r.status_code == 200, r.text
        assert c.post("/v1/assets/e1/failure", json={"cycle": 1}).status_code == 422  # < last
        recorded = int(test.cycle[test.unit == 1][-1]) + int(fd001.rul[0])
        assert c.post("/v1/assets/e1/failure", json={"cycle": recorded}).status_code == 200
        assert c.post("/v1/assets/e1/failure", json={"cycle": recorded + 5}).status_code == 409
        more = dict(reading(test.values[test.unit == 1][-1]), cycle=recorded)
        assert c.post("/v1/assets/e1/readings", json={"readings": [more]}).status_code in (409, 422)
        closed = c.post("/v1/assets/e1/readings", json={"readings": [reading(test.values[0])]})
        assert closed.status_code == 200  # a re-sent stored cycle is still a no-op
        acc = c.get("/v1/accuracy").json()
    report = evaluate_test(predictor(), predictor().preprocessor, fd001,
                           intervals=predictor().intervals)
    assert acc["assets_with_known_failure"] == 100
    assert abs(acc["last_cycle"]["rmse"] - report.metrics["rmse"]) < 1e-3
    assert abs(acc["last_cycle"]["nasa"] - report.metrics["nasa"]) < 1e-2
    assert abs(acc["last_cycle"]["interval_coverage"] - report.metrics["interval_coverage"]) < 1e-9
    assert acc["all_cycles"]["n"] == len(test)


@pytest.mark.needs_data
@pytest.mark.slow
def test_fd002_readings_drift_from_an_fd001_model_and_fd001_readings_do_not(live_server,
                                                                          tmp_path, cmapss_dir):
    def drift_after(name: str) -> dict:
        server = live_server(settings(str(tmp_path / f"{name}.db")))
        test = load_subset(cmapss_dir, name, train=False).test
        engines = {f"e{int(u)}": test.values[test.unit == u] for u in test.units[:12]}
        stream_engines(server.url, engines)
        with httpx.Client(base_url=server.url) as c:
            report = c.get("/v1/drift").json()
            metrics = c.get("/metrics").text
        return report, metrics

    same, _ = drift_after("FD001")
    assert same["status"] == "stable" and same["unknown_condition_share"] == 0
    assert max(c["max_psi"] for c in same["conditions"]) < same["psi_drift_threshold"]
    other, metrics = drift_after("FD002")
    assert other["status"] == "drift" and other["unknown_condition_share"] > 0.5
    assert "amnl_unknown_condition_readings_total" in metrics
    assert "amnl_drift_psi{" in metrics or other["conditions"][0]["max_psi"] is None
