"""The API's contract on a real server: what it takes (JSON numbers only, bounded integers), the
shape of every error, the OpenAPI document, the Host check and security headers, timeouts."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from amnl.config import InferenceConfig
from amnl.data.cmapss import load_subset
from amnl.data.paths import sample_dir
from amnl.errors import ConfigError
from amnl.serve.errors import ApiError
from amnl.serve.schemas import MAX_PREDICT_ASSETS
from amnl.serve.settings import MAX_FAILURE_GAP, ServeSettings

from .conftest import reading
from .test_dashboard import browser, visit  # noqa: F401 - the browser fixture


@pytest.fixture(scope="module")
def rows():
    """FD001 test engine 1 (the sample shipped with amnl: no data folder needed)."""
    test = load_subset(sample_dir(), "FD001", train=False).test
    return test.values[test.unit == test.units[0]]


def settings(db_url, **kw) -> ServeSettings:
    return ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db_url, **kw)


@pytest.fixture
def service(predictor, tmp_path):
    """A started FleetService without HTTP."""
    from amnl.serve.service import FleetService

    s = FleetService(settings(f"sqlite:///{tmp_path / 'a.db'}"), predictor())
    s.start()
    yield s
    s.stop()


def test_validate_is_the_entry_point_for_every_caller(service, rows):
    good = [reading(r) for r in rows[:3]]
    parts = service.validate([{"asset_id": "a", **good[0]}, {"asset_id": "b", **good[0]},
                              {"asset_id": "a", **good[1]}], ["demo"])
    assert [(p.asset_id, p.cycles.tolist()) for p in parts] == [("a", [1, 2]), ("b", [1])]
    assert parts[0].loc == [["demo", 0], ["demo", 2]] and parts[0].raw.dtype == np.float64
    # the checks the HTTP layer's models made are the service's own, for a caller without them
    # (the demo, an embedding application)
    for change, field, kind in (({"s_2": "641.82"}, "s_2", "finite_number"),
                                ({"s_2": True}, "s_2", "finite_number"),
                                ({"s_2": math.nan}, "s_2", "finite_number"),
                                ({"s_2": None}, "s_2", "missing"),
                                ({"cycle": 1.0}, "cycle", "int_type"),
                                ({"cycle": True}, "cycle", "int_type"),
                                ({"cycle": 0}, "cycle", "int_type"),
                                ({"cycle": 2**63}, "cycle", "int_type")):
        with pytest.raises(ApiError) as caught:
            service.validate([good[0], good[1] | change], ["body", "readings"], "a")
        assert caught.value.status == 422
        assert caught.value.detail[0]["loc"] == ["body", "readings", 1, field], change
        assert caught.value.detail[0]["type"] == kind
    with pytest.raises(ApiError) as caught:
        service.validate([good[0], good[2]], ["body", "readings"], "a")
    assert caught.value.detail[0]["expected_cycle"] == 2
    assert service.store.count("readings") == 0


def test_json_numbers_only_and_integer_cycles_everywhere(live_server, tmp_path, rows):
    server = live_server(settings(f"sqlite:///{tmp_path / 'a.db'}"))
    first = reading(rows[0])
    with httpx.Client(base_url=server.url) as c:
        for change in ({"s_2": True}, {"s_2": False}, {"s_2": "641.82"}, {"s_2": " 641.82 "},
                       {"s_2": "6_41.82"}, {"cycle": "1"}, {"cycle": 1.0}, {"cycle": True}):
            (field, _), = change.items()
            bad = first | change
            for url, body, loc in (
                    ("/v1/assets/e1/readings", {"readings": [bad]}, ["body", "readings", 0]),
                    ("/v1/readings", {"readings": [{"asset_id": "e1", **bad}]},
                     ["body", "readings", 0]),
                    ("/v1/predict", {"assets": [{"asset_id": "e1", "readings": [bad]}]},
                     ["body", "assets", 0, "readings", 0])):
                r = c.post(url, json=body)
                assert r.status_code == 422, (url, change)
                assert r.json()["detail"][0]["loc"] == [*loc, field], (url, change)
        assert server.service.store.count("readings") == 0
        # a JSON integer is a number: a float sensor takes 392
        assert c.post("/v1/assets/e1/readings", json={"readings": [first | {"s_2": 642}]}
                      ).status_code == 200
        for body in ({"cycle": "200"}, {"cycle": 200.0}):
            assert c.post("/v1/assets/e1/failure", json=body).status_code == 422
        assert c.post("/v1/alerts/1/ack", json={"note": 5}).status_code == 422


def test_integers_are_bounded_and_a_failure_is_near_the_last_cycle(live_server, db_url, rows):
    server = live_server(settings(db_url))
    huge = str(2**63)
    with httpx.Client(base_url=server.url) as c:
        assert c.post("/v1/assets/e1/readings",
                      json={"readings": [reading(r) for r in rows[:5]]}).status_code == 200
        for url in (f"/v1/assets?offset={huge}", f"/v1/assets?limit={huge}",
                    f"/v1/alerts?offset={huge}", f"/v1/assets/e1/predictions?to_cycle={huge}",
                    f"/v1/assets/e1/predictions?from_cycle={huge}",
                    f"/v1/assets/e1/predictions?limit={huge}", "/?offset=abc",
                    f"/?offset={huge}", "/?offset=-1", "/?offset=%C2%B2",
                    "/ui/fleet.csv?offset=abc"):
            r = c.get(url)
            assert r.status_code == 422, url
            assert r.json()["detail"][0]["loc"][0] == "query", url
        assert c.get("/?offset=50").status_code == 200
        r = c.post(f"/v1/alerts/{huge}/ack", json={})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "alert_id"]
        assert c.post(f"/v1/alerts/{2**31 - 1}/ack", json={}).status_code == 404
        r = c.post("/v1/assets/e1/readings", json={"readings": [reading(rows[5]) | {
            "cycle": 2**63}]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "cycle"
        for cycle in (2**63, 10**9 + 1, 5 + MAX_FAILURE_GAP + 1):
            r = c.post("/v1/assets/e1/failure", json={"cycle": cycle})
            assert r.status_code == 422, cycle
            assert r.json()["detail"][0]["loc"] == ["body", "cycle"]
        # /v1/predict's work is bounded too: one forward pass per history
        many = {"assets": [{"asset_id": f"a{k}", "readings": [reading(rows[0])]}
                           for k in range(MAX_PREDICT_ASSETS + 1)]}
        r = c.post("/v1/predict", json=many)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "assets"]
        # nothing was closed: the asset still takes its next reading
        assert c.post("/v1/assets/e1/readings",
                      json={"readings": [reading(rows[5])]}).status_code == 200
        r = c.post("/v1/assets/e1/failure", json={"cycle": 6 + MAX_FAILURE_GAP})
        assert r.status_code == 200 and r.json()["failure_cycle"] == 6 + MAX_FAILURE_GAP


def test_every_error_has_the_documented_shape_and_is_in_the_openapi(live_server, tmp_path, rows,
                                                                    monkeypatch):
    server = live_server(settings(f"sqlite:///{tmp_path / 'a.db'}", max_body_bytes=4_000))

    def shaped(r, status):
        assert r.status_code == status, r.text
        (item,) = r.json()["detail"]
        assert set(item) >= {"loc", "msg", "type"} and isinstance(item["msg"], str)
        return item

    with httpx.Client(base_url=server.url) as c:
        json_type = {"content-type": "application/json"}
        shaped(c.post("/v1/assets/e1/readings", content=b'{"readings": [', headers=json_type),
               422)
        assert shaped(c.get("/no/such/route"), 404)["type"] == "not_found"
        r = c.put("/v1/assets")
        assert shaped(r, 405)["type"] == "method_not_allowed"
        assert r.headers["allow"] == "GET, OPTIONS"
        r = c.options("/v1/assets/e1")  # GET and DELETE are two routes: both are named
        assert r.status_code == 204 and r.headers["allow"] == "DELETE, GET, OPTIONS"
        assert c.patch("/v1/assets/e1").headers["allow"] == "DELETE, GET, OPTIONS"

        def chunked():  # no Content-Length: the limit is found while reading
            yield b'{"readings": ['
            for _ in range(400):
                yield b'{"cycle": 1},'
            yield b'{"cycle": 1}]}'

        item = shaped(c.post("/v1/assets/e1/readings", content=chunked(), headers=json_type),
                      413)
        assert item["type"] == "too_large"
        # a bug (a store method that raises) is a 500 in the same shape, without a traceback
        monkeypatch.setattr(server.service.store, "fleet", _raise)
        item = shaped(c.get("/v1/assets"), 500)
        assert item["type"] == "internal" and "Traceback" not in item["msg"]

        metrics = c.get("/metrics")
        assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        spec = c.get("/openapi.json").json()
    assert list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [
        "text/plain; version=0.0.4; charset=utf-8"]
    error_ref = {"$ref": "#/components/schemas/ErrorOut"}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status in ("413", "422", "500"):
                assert op["responses"][status]["content"]["application/json"]["schema"] == \
                    error_ref, (method, path, status)
            if method in ("post", "delete"):
                assert {"401", "503"} <= set(op["responses"]), (method, path)
    # the model's inputs are required, the sensors it does not read are optional
    reading = spec["components"]["schemas"]["Reading"]
    required = set(server.service.required_columns)
    assert set(reading["required"]) == required | {"cycle"}
    assert reading["properties"]["s_2"]["type"] == "number"  # FD001 reads s_2: not nullable
    assert {"type": "null"} in reading["properties"]["s_1"]["anyOf"]  # nor s_1


def _raise(*_a, **_k):
    raise RuntimeError("injected")


def test_the_host_header_is_checked(live_server, tmp_path):
    loopback = live_server(settings(f"sqlite:///{tmp_path / 'a.db'}",
                                    allowed_hosts=["plant-gw.local"]))
    for host, status in (("evil.example", 400), ("evil.example:80", 400),
                         ("127.0.0.1.evil.example", 400), ("[::2]", 400),
                         (f"127.0.0.1:{loopback.port}", 200), ("localhost", 200),
                         ("LOCALHOST:1", 200), ("[::1]:8000", 200), ("plant-gw.local", 200)):
        for path in ("/", "/v1/assets", "/healthz"):
            r = httpx.get(loopback.url + path, headers={"Host": host})
            assert r.status_code == status, (host, path)
            if status == 400:
                assert r.json()["detail"][0]["loc"] == ["header", "host"]
                assert r.json()["detail"][0]["type"] == "host_not_allowed"
    # a wildcard bind needs a token, and without --allowed-host it answers every Host
    assert ServeSettings(host="0.0.0.0", api_token="t").host_allowed() is None
    assert "gw.example" in ServeSettings(host="0.0.0.0", api_token="t",
                                         allowed_hosts=["gw.example"]).host_allowed()
    assert ServeSettings(allowed_hosts=["*"]).host_allowed() is None
    for bad in ("gw.example:8000", "http://gw.example", "", "a b"):
        with pytest.raises(ConfigError):
            ServeSettings(allowed_hosts=[bad])


def test_security_headers_and_docs_without_a_network(live_server, tmp_path):
    server = live_server(settings(f"sqlite:///{tmp_path / 'a.db'}"))
    with httpx.Client(base_url=server.url) as c:
        for path in ("/", "/ui/alerts", "/v1/assets", "/docs", "/no/such", "/static/amnl.js"):
            r = c.get(path)
            assert r.headers["x-frame-options"] == "DENY", path
            assert r.headers["x-content-type-options"] == "nosniff", path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        page = c.get("/docs").text
        assert "cdn" not in page and "http" not in page  # nothing from elsewhere
        for asset in ("/static/swagger-ui-bundle.js", "/static/swagger-ui.css",
                      "/static/swagger-init.js"):
            assert asset in page and c.get(asset).status_code == 200
        assert c.get("/redoc").status_code == 404  # ReDoc would come from a CDN


def test_docs_render_under_the_csp(browser, live_server, tmp_path):
    """Swagger UI draws the operations from the vendored files, with no console error (a
    CSP violation or a failed load is one)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    server = live_server(settings(f"sqlite:///{tmp_path / 'a.db'}"))
    visit(browser, server.url + "/docs")
    WebDriverWait(browser, 30).until(ec.presence_of_element_located(
        (By.CSS_SELECTOR, ".opblock-summary-path")))
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(
        By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/v1/assets/{asset_id}/readings" in paths
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


#: Open files the server of the slow-connection test may have (a lowered ``ulimit -n``), and
#: how many connections trickle their headers at it: more than it can hold open.
SLOW_NOFILE, SLOW_CONNECTIONS = 160, 250


def test_slow_headers_do_not_starve_the_server(exported, tmp_path):
    """Connections sending one header line a second (slowloris) under a lowered open-file limit:
    with a header timeout they are closed and /healthz answers; without, it never would."""
    import resource
    import socket
    import subprocess
    import sys
    import threading
    import time

    from . import pg

    port = pg.free_port()
    url = f"http://127.0.0.1:{port}"

    def limited():
        resource.setrlimit(resource.RLIMIT_NOFILE, (SLOW_NOFILE, SLOW_NOFILE))

    log = (tmp_path / "server.log").open("wb")  # not a pipe: a full one would block the server
    server = subprocess.Popen(
        [sys.executable, "-m", "amnl", "serve", "--model", str(exported("FD001")),
         "--db", str(tmp_path / "a.db"), "--port", str(port), "--threads", "1",
         "--header-timeout", "1", "--log-level", "error"],
        preexec_fn=limited, stdout=subprocess.DEVNULL, stderr=log)
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.2)

        def trickle(sock):
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while not stop.wait(1.0):
                    sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass  # the server closed it: what the timeout is for
            finally:
                sock.close()

        threads = []
        for _ in range(SLOW_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            threads.append(threading.Thread(target=trickle, args=(sock,), daemon=True))
            threads[-1].start()
        time.sleep(1.0)
        t0 = time.monotonic()
        r = httpx.get(url + "/healthz", timeout=20)
        assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < 20
    finally:
        stop.set()
        server.terminate()
        server.wait(30)
        log.close()


def test_a_body_that_does_not_arrive_gets_a_408(live_server, tmp_path):
    import socket
    import time

    server = live_server(settings(f"sqlite:///{tmp_path / 'a.db'}", body_timeout_s=0.5))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        t0 = time.monotonic()  # before the send: the server's deadline cannot start earlier
        sock.sendall(b"POST /v1/readings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 100\r\n\r\n{\"readings\": [")
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408")
    assert 0.5 <= time.monotonic() - t0 < 5
    assert '"type":"timeout"' in answer and "connection: close" in answer.lower()
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_the_shipped_haproxy_config_fronts_a_live_server(live_server, tmp_path, rows):
    """deploy/haproxy.cfg, run by Debian's HAProxy against a real server: requests pass, a
    body over the limit is refused at the proxy."""
    import os
    import shutil
    import subprocess
    import time
    from pathlib import Path

    from . import pg

    haproxy = shutil.which("haproxy")
    if haproxy is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("haproxy is not installed (apt-get install haproxy)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    config = Path(__file__).parents[2] / "deploy" / "haproxy.cfg"
    # the server would take 8 MB: a 413 for 4 MB and a byte is the proxy's
    server = live_server(settings(f"sqlite:///{tmp_path / 'a.db'}", max_body_bytes=8_000_000))
    port = pg.free_port()
    env = {**os.environ, "AMNL_PROXY_BIND": f"127.0.0.1:{port}",
           "AMNL_BACKEND": f"127.0.0.1:{server.port}"}
    check = subprocess.run([haproxy, "-c", "-f", str(config)], env=env, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proxy = subprocess.Popen([haproxy, "-db", "-f", str(config)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(url + "/healthz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proxy.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        with httpx.Client(base_url=url) as c:
            r = c.post("/v1/assets/e1/readings", json={"readings": [reading(rows[0])]})
            assert r.status_code == 200 and r.json()["accepted"] == 1
            assert r.headers["content-security-policy"]  # the server's headers pass through
            big = c.post("/v1/assets/e1/readings", content=b" " * 4_000_001,
                         headers={"content-type": "application/json"})
            assert big.status_code == 413 and "detail" not in big.text
        assert server.service.store.count("readings") == 1
    finally:
        proxy.terminate()
        proxy.wait(10)
