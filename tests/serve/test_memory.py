"""A bound on the asset states in memory: the least recently used are evicted and loaded from
their database row when they next send a reading, with the same predictions, checks and
alert state as if they had stayed."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from amnl.config import InferenceConfig
from amnl.data.cmapss import load_subset
from amnl.serve.settings import ServeSettings

from .conftest import reading
from .test_parity import TOLERANCE, offline

pytestmark = pytest.mark.needs_data

#: Asset states in memory at most, in these tests (of 6 assets).
CAP = 2


@pytest.fixture(scope="module")
def engines(cmapss_dir) -> dict[str, np.ndarray]:
    test = load_subset(cmapss_dir, "FD001", train=False).test
    return {f"e{u}": test.values[test.unit == u][:30] for u in range(1, 7)}


def settings(db, **kw) -> ServeSettings:
    return ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db, **kw)


def post_cycles(url: str, engines: dict[str, np.ndarray], lo: int, hi: int) -> None:
    """Cycles lo..hi-1 of every asset, one asset at a time (each evicts another)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        for k in range(lo, hi):
            for a, rows in engines.items():
                r = c.post(f"/v1/assets/{a}/readings", json={"readings": [reading(rows[k])]})
                assert r.status_code == 200, r.text


def test_evicted_assets_resume_from_their_row_with_the_same_predictions(
        live_server, db_url, predictor, engines):
    server = live_server(settings(db_url, max_assets_in_memory=CAP))
    service = server.service
    post_cycles(server.url, engines, 0, 15)
    assert service.wait_predicted(60)
    service.writer.wait_idle()
    entries = service.writer.entries
    assert entries.in_memory <= CAP and len(entries) == len(engines)
    assert len(service.writer.alerts.states) <= CAP
    with httpx.Client(base_url=server.url, timeout=30) as c:
        # an evicted asset still refuses a gap and takes a re-sent cycle as a duplicate
        r = c.post("/v1/assets/e1/readings", json={"readings": [reading(engines["e1"][16])]})
        assert r.status_code == 422 and r.json()["detail"][0]["expected_cycle"] == 16, r.text
        r = c.post("/v1/assets/e2/readings", json={"readings": [reading(engines["e2"][14])]})
        assert r.status_code == 200 and r.json()["duplicates"] == 1, r.text
        assert c.get("/readyz").json()["assets"] == len(engines)
    post_cycles(server.url, engines, 15, 30)
    assert service.wait_predicted(60)
    assert service.writer.entries.in_memory <= CAP
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for a, rows in engines.items():
            got = c.get(f"/v1/assets/{a}/predictions").json()["predictions"]
            assert [p["cycle"] for p in got] == list(range(1, 31)), a
            diff = np.abs(np.array([p["rul"] for p in got]) - offline(predictor(), rows))
            assert diff.max() <= TOLERANCE, a


def test_a_restart_loads_at_most_the_bound_and_the_waiting_assets(live_server, tmp_path,
                                                                   engines):
    from amnl.serve.service import FleetService

    db = str(tmp_path / "a.db")
    first = live_server(settings(db))
    post_cycles(first.url, engines, 0, 10)
    assert first.service.wait_predicted(60)
    first.__exit__()

    second = FleetService(settings(db, max_assets_in_memory=CAP), first.service.predictor)
    second.start()
    try:
        assert second.writer.entries.in_memory == CAP
        assert len(second.writer.alerts.states) <= CAP
        assert len(second.writer.entries) == len(engines)
        assert second.known("e6") and second.last_cycle("e6") == 10
    finally:
        second.stop()
