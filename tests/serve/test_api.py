"""The HTTP API on a real server, on SQLite and PostgreSQL: ingestion rules, reads, security."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from amnl.config import InferenceConfig
from amnl.data.cmapss import load_subset
from amnl.errors import ConfigError
from amnl.serve.settings import ServeSettings

from .conftest import reading


@pytest.fixture(scope="module")
def engine_rows(cmapss_dir):
    """The rows of FD001's test engines 1 and 2."""
    test = load_subset(cmapss_dir, "FD001", train=False).test
    return {u: test.values[test.unit == u] for u in (1, 2)}


def settings(db_url, **kw) -> ServeSettings:
    return ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db_url, **kw)


def post(client, asset, rows, **kw):
    return client.post(f"/v1/assets/{asset}/readings",
                       json={"readings": [reading(r) for r in rows]}, **kw)


@pytest.mark.needs_data
def test_retries_conflicts_gaps_and_atomicity(live_server, db_url, engine_rows):
    server = live_server(settings(db_url))
    rows = engine_rows[1]
    with httpx.Client(base_url=server.url) as c:
        assert post(c, "e1", rows[:10]).json()["accepted"] == 10
        again = post(c, "e1", rows[5:10])  # a retry: identical values are a no-op 200
        assert again.status_code == 200
        assert again.json()["assets"][0] == {"asset_id": "e1", "accepted": 0, "duplicates": 5,
                                             "last_cycle": 10}
        overlap = post(c, "e1", rows[8:12])  # stored cycles re-sent with new ones after them
        assert overlap.json()["accepted"] == 2 and overlap.json()["duplicates"] == 2

        changed = reading(rows[3]) | {"s_7": 1.5}
        r = c.post("/v1/assets/e1/readings", json={"readings": [changed]})
        assert r.status_code == 409
        assert r.json()["detail"][0]["loc"] == ["body", "readings", 0, "s_7"]
        assert "cycle 4 is stored with s_7" in r.json()["detail"][0]["msg"]

        gap = post(c, "e1", rows[13:15])  # cycle 13 is missing
        assert gap.status_code == 422
        assert gap.json()["detail"][0]["expected_cycle"] == 13
        unordered = c.post("/v1/assets/e1/readings", json={"readings": [
            reading(rows[12]), reading(rows[14])]})
        assert unordered.status_code == 422 and unordered.json()["detail"][0]["loc"] == [
            "body", "readings", 1, "cycle"]

        # one bad reading refuses its whole request: the good cycle before it is not stored
        bad = [reading(rows[12]), reading(rows[13]) | {"s_2": "hot"}]
        r = c.post("/v1/assets/e1/readings", json={"readings": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-2:] == [1, "s_2"]
        missing = reading(rows[12])
        del missing["s_11"]
        r = c.post("/v1/assets/e1/readings", json={"readings": [missing]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == [
            "body", "readings", 0, "s_11"]
        r = c.post("/v1/assets/e1/readings", content=b'{"readings": [{"cycle": 13, "s_2": NaN}]}',
                   headers={"content-type": "application/json"})
        assert r.status_code == 422
        huge = reading(rows[12]) | {"s_2": 1e308}  # finite, but not once scaled
        r = c.post("/v1/assets/e1/readings", json={"readings": [huge]})
        assert r.status_code == 422 and "s_2" in r.json()["detail"][0]["msg"]
        assert c.get("/v1/assets/e1").json()["last_cycle"] == 12

        # a fleet post is atomic too: asset e9's bad cycle refuses e2's good one
        fleet = [{"asset_id": "e2", **reading(engine_rows[2][0])},
                 {"asset_id": "e1", **reading(rows[20])}]
        r = c.post("/v1/readings", json={"readings": fleet})
        assert r.status_code == 422 and r.json()["detail"][0]["expected_cycle"] == 13
        assert c.get("/v1/assets/e2").status_code == 404
        fleet[1] = {"asset_id": "e1", **reading(rows[12])}
        assert c.post("/v1/readings", json={"readings": fleet}).json()["accepted"] == 2

        assert server.service.wait_predicted()
        metrics = c.get("/metrics").text
        assert 'amnl_readings_rejected_total{reason="conflict"} 1.0' in metrics
        assert 'amnl_readings_rejected_total{reason="cycle_order"}' in metrics
    store = server.service.store
    assert store.count("readings") == 14 and store.count("predictions") == 14


@pytest.mark.needs_data
def test_reads_fleet_asset_history_csv_delete_and_stateless_predict(live_server, db_url,
                                                                     engine_rows, predictor):
    server = live_server(settings(db_url))
    with httpx.Client(base_url=server.url) as c:
        for u, rows in engine_rows.items():
            assert post(c, f"e{u}", rows).status_code == 200
        assert server.service.wait_predicted()
        fleet = c.get("/v1/assets").json()
        assert fleet["total"] == 2
        ruls = [a["prediction"]["rul"] for a in fleet["items"]]
        assert ruls == sorted(ruls)  # most urgent first
        page = c.get("/v1/assets", params={"limit": 1, "offset": 1}).json()
        assert [a["asset_id"] for a in page["items"]] == [fleet["items"][1]["asset_id"]]
        health = fleet["items"][0]["prediction"]["health"]
        assert {a["asset_id"] for a in c.get("/v1/assets", params={"health": health}).json()[
            "items"]} >= {fleet["items"][0]["asset_id"]}
        assert c.get("/v1/assets", params={"health": "broken"}).status_code == 422

        one = c.get("/v1/assets/e1").json()
        n = len(engine_rows[1])
        assert one["last_cycle"] == n and one["pending"] == 0
        p = one["prediction"]
        assert p["cycle"] == n and p["model_id"] == predictor().model_id
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-5

        history = c.get("/v1/assets/e1/predictions").json()["predictions"]
        assert [h["cycle"] for h in history] == list(range(1, n + 1))
        csv = c.get("/v1/assets/e1/predictions", params={"format": "csv", "from_cycle": 5,
                                                          "to_cycle": 7})
        assert csv.headers["content-type"].startswith("text/csv")
        lines = csv.text.strip().splitlines()
        assert lines[0].startswith("asset_id,cycle,rul,rul_lower,rul_upper,health") and len(lines) == 4

        # stateless: the same history gives the stored prediction at its last cycle
        body = {"assets": [{"asset_id": "e1", "readings": [reading(r) for r in engine_rows[1]]}]}
        out = c.post("/v1/predict", json=body).json()["predictions"][0]
        assert out["cycle"] == n and abs(out["rul"] - p["rul"]) <= 1e-3
        assert server.service.store.count("readings") == n + len(engine_rows[2])  # stores nothing

        assert c.delete("/v1/assets/e1").status_code == 204
        assert c.get("/v1/assets/e1").status_code == 404
        assert c.delete("/v1/assets/e1").status_code == 404
        assert c.get("/v1/assets").json()["total"] == 1
        # the id is free again, for a new history from cycle 1
        assert post(c, "e1", engine_rows[1][:3]).json()["accepted"] == 3


@pytest.mark.needs_data
def test_operations_endpoints_and_openapi(live_server, tmp_path):
    server = live_server(settings(f"sqlite:///{tmp_path / 'a.db'}"))
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz").json()
        assert ready["status"] == "ready" and ready["runtime"] == "onnx"
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
        assert {"/v1/assets/{asset_id}/readings", "/v1/readings", "/v1/assets", "/v1/predict",
                "/v1/assets/{asset_id}/predictions", "/healthz", "/readyz", "/metrics"} <= set(
            spec["paths"])
        metrics = c.get("/metrics").text
        for name in ("amnl_request_duration_seconds_bucket", "amnl_batch_size_bucket",
                     "amnl_prediction_queue_depth", "amnl_predictions_total",
                     "amnl_model_info{", "amnl_readings_acknowledged_total"):
            assert name in metrics
        assert 'route="/healthz"' in metrics


@pytest.mark.needs_data
def test_token_body_limit_and_asset_ids(live_server, db_url, engine_rows):
    with pytest.raises(ConfigError, match="without an API token"):
        settings("x.db", host="0.0.0.0")
    assert settings("x.db", host="0.0.0.0", api_token="s3cret").api_token == "s3cret"
    server = live_server(settings(db_url, api_token="s3cret", max_body_bytes=4_000))
    rows = engine_rows[1][:2]
    with httpx.Client(base_url=server.url) as c:
        r = post(c, "e1", rows)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert post(c, "e1", rows, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert post(c, "e1", rows, headers=ok).status_code == 200
        assert c.get("/v1/assets/e1").status_code == 200  # reads need no token
        assert c.delete("/v1/assets/e1").status_code == 401

        big = post(c, "e2", engine_rows[1][:20], headers=ok)  # about 8 kB
        assert big.status_code == 413 and big.json()["detail"][0]["type"] == "too_large"
        for bad in ("a" * 65, "semi;colon", "sp ace", "%2e%2e", "-x", "caf%C3%A9"):
            assert post(c, bad, rows, headers=ok).status_code in (404, 422), bad
        assert post(c, "A-z_0.9", rows, headers=ok).status_code == 200
        assert post(c, "b" * 64, rows, headers=ok).status_code == 200
    assert server.service.store.count("readings") == 6


def test_settings_refuse_bad_values():
    for kw in ({"durability": "maybe"}, {"max_batch": 0}, {"max_wait_ms": -1}, {"port": 0}):
        with pytest.raises(ConfigError):
            ServeSettings(**kw)
    assert np.isclose(ServeSettings().max_wait_ms, 5.0)
