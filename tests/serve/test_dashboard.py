"""The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver)
through Selenium, against a real server on loopback.

With ``AMNL_SCREENSHOTS=DIR`` the pages are also saved there at 1280x800: the fleet and the
alerts with a failed asset and an input warning, an asset with its failure known, the drift
(``docs/screenshots`` holds the published ones).
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from amnl.config import InferenceConfig
from amnl.data.cmapss import load_subset
from amnl.serve import db
from amnl.serve.dashboard import RenderThread, rul_chart
from amnl.serve.settings import ServeSettings
from amnl.serve.store import Store, fleet_rank

from .test_operate import closest_to_failure
from .test_parity import stream_engines

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        reason = "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # the page is 1280 x 800
        "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


def visit(browser, url: str, shot: str | None = None) -> None:
    """Open a page; fail on any console error; save a screenshot when asked."""
    browser.get(url)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    folder = os.environ.get("AMNL_SCREENSHOTS")
    if shot and folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{shot}.png"))


@pytest.mark.needs_data
@pytest.mark.slow
def test_pages_load_draw_the_asset_and_acknowledge_an_alert(browser, live_server, tmp_path,
                                                            cmapss_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    fd001 = load_subset(cmapss_dir, "FD001", train=False)
    engines = closest_to_failure(fd001, 5)
    server = live_server(ServeSettings(inference=InferenceConfig(runtime="onnx"),
                                       db=str(tmp_path / "a.db")))
    stream_engines(server.url, engines)
    assert server.service.wait_predicted()
    first = next(iter(engines))
    with httpx.Client(base_url=server.url) as c:  # one asset's failure is known: accuracy
        n = len(engines[first])
        c.post(f"/v1/assets/{first}/failure", json={"cycle": n + 10})

    visit(browser, server.url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
    assert len(rows) == len(engines)
    lows = [float(r.find_elements(By.TAG_NAME, "td")[2].text) for r in rows[:-1]]
    assert lows == sorted(lows)  # the live assets ranked by the RUL lower bound
    assert rows[-1].find_element(By.TAG_NAME, "a").text == first  # the failed one last
    assert browser.find_element(By.CSS_SELECTOR, "#fleet .chip.critical")
    assert "RMSE" in browser.find_element(By.ID, "accuracy-panel").text
    assert "stable" in browser.find_element(By.ID, "drift-panel").text

    search = browser.find_element(By.NAME, "q")
    search.send_keys(first)
    search.submit()
    WebDriverWait(browser, 10).until(ec.url_contains("q="))  # the new page, not the old one
    WebDriverWait(browser, 10).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")) == 1)
    assert [r.find_element(By.TAG_NAME, "a").text
            for r in browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")] == [first]

    visit(browser, f"{server.url}/ui/assets/{first}", "asset")
    points = browser.find_element(By.CSS_SELECTOR, "#rul-chart polyline.rul").get_attribute("points")
    predictions = httpx.get(f"{server.url}/v1/assets/{first}/predictions").json()["predictions"]
    assert len(points.split()) == len(predictions)  # drawn from the asset's data
    assert browser.find_element(By.CSS_SELECTOR, "#rul-chart polygon.band")
    assert browser.find_element(By.CSS_SELECTOR, "#rul-chart polyline.truth")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#inputs thead th")) == 1 + 10  # cycles
    assert len(browser.find_elements(By.CSS_SELECTOR, "#inputs tbody tr")) == len(
        server.service.required_columns)  # one row per model input
    assert "RMSE" in browser.find_element(By.ID, "asset-accuracy").text  # its failure is known

    visit(browser, server.url + "/ui/alerts")
    form = browser.find_element(By.CSS_SELECTOR, "form.ack")
    alert_id = form.get_attribute("data-alert")
    form.find_element(By.NAME, "note").send_keys("checked from the dashboard")
    form.find_element(By.TAG_NAME, "button").click()
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element(
        (By.ID, f"state-{alert_id}"), "active_acknowledged"))
    alert = httpx.get(f"{server.url}/v1/alerts", params={"state": "active_acknowledged"}).json()
    acked = {a["id"]: a for a in alert["items"]}[int(alert_id)]
    assert acked["acknowledged"]["note"] == "checked from the dashboard"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]

    visit(browser, server.url + "/ui/drift", "drift")
    assert browser.find_elements(By.CSS_SELECTOR, "#drift tbody tr")
    csv = httpx.get(f"{server.url}/ui/fleet.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.strip().splitlines()) == len(engines) + 1


#: Room for a classic (not overlay) vertical scrollbar at the page's right edge, pixels.
SCROLLBAR = 16
#: What a stored input warning looks like (the text is the writer's; any list of strings).
WARNING = "s_2 = 64300 is far above the training range (641.2-644.5)"


@pytest.mark.needs_data
@pytest.mark.slow
def test_pages_fit_1280x800_and_say_what_they_show(browser, live_server, tmp_path, cmapss_dir):
    """At 1280 x 800: the Acknowledge buttons inside the page and their cells, no token box on
    a server without a token, the inputs table inside the page, both charts on one x range with
    legends, a failed asset shown as failed (last), times in UTC, no "-0.0", a badge for
    input warnings on the fleet, asset and alerts pages."""
    from selenium.webdriver.common.by import By

    engines = closest_to_failure(load_subset(cmapss_dir, "FD001", train=False), 4)
    server = live_server(ServeSettings(inference=InferenceConfig(runtime="onnx"),
                                       db=str(tmp_path / "a.db")))
    stream_engines(server.url, engines)
    assert server.service.wait_predicted()
    failed, flagged = sorted(engines)[:2]
    with httpx.Client(base_url=server.url) as c:
        assert c.post(f"/v1/assets/{failed}/failure",
                      json={"cycle": len(engines[failed]) + 3}).status_code == 200
    with sqlite3.connect(tmp_path / "a.db") as conn:  # as the writer stores them (#26 item 5)
        conn.execute("UPDATE assets SET warnings = ? WHERE asset_id = ?", (f'["{WARNING}"]',
                                                                            flagged))
        conn.execute("UPDATE alerts SET warnings = ? WHERE asset_id = ?", (f'["{WARNING}"]',
                                                                            flagged))
    width = 1280 - SCROLLBAR

    def inside_page(element) -> None:
        """Inside the page's width, beside a vertical scrollbar, and the page not wider."""
        box = element.rect
        assert 0 <= box["x"] and box["x"] + box["width"] <= width, (box, width)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280

    visit(browser, server.url + "/", "fleet")
    rows = browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
    assert rows[-1].find_element(By.TAG_NAME, "a").text == failed
    assert rows[-1].find_element(By.CSS_SELECTOR, ".chip").text == "failed"
    assert all(r.find_element(By.CSS_SELECTOR, ".chip").text != "failed" for r in rows[:-1])
    assert "(cycles)" in browser.find_element(By.CSS_SELECTOR, "#fleet thead").text
    badge = browser.find_element(By.CSS_SELECTOR, "#fleet .badge")
    assert badge.text == "input warning" and WARNING in badge.get_attribute("title")
    assert badge.find_element(By.XPATH, "./ancestor::tr//a").text == flagged
    inside_page(browser.find_element(By.ID, "fleet"))

    visit(browser, f"{server.url}/ui/assets/{failed}")
    rul = browser.find_element(By.ID, "rul-chart")
    health = browser.find_element(By.ID, "health-chart")
    assert rul.get_attribute("data-cycles") == health.get_attribute("data-cycles")
    assert rul.get_attribute("data-cycles").split()[1] == str(len(engines[failed]) + 3)
    xs = [[p.split(",")[0] for p in el.get_attribute("points").split()] for el in (
        rul.find_element(By.CSS_SELECTOR, "polyline.rul"),
        health.find_element(By.CSS_SELECTOR, "polyline.p-critical"))]
    assert xs[0] == xs[1]  # the same cycle at the same x in both charts
    legend = browser.find_element(By.ID, "rul-legend").text
    assert "true RUL (failure at cycle" in legend and "interval" in legend
    assert "degrading below 80, critical at or below 30" in legend  # the model's thresholds
    assert "P(critical)" in browser.find_element(By.ID, "health-legend").text
    assert "failed at cycle" in browser.find_element(By.TAG_NAME, "h1").text
    inputs = browser.find_element(By.ID, "inputs")
    inside_page(inputs)
    assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth",
                                  inputs)

    visit(browser, f"{server.url}/ui/assets/{flagged}")
    assert WARNING in browser.find_element(By.ID, "warnings").text  # in full
    assert browser.find_element(By.CSS_SELECTOR, "h1 .badge").text == "input warning"

    visit(browser, server.url + "/ui/alerts", "alerts")
    assert not browser.find_elements(By.ID, "token-form")  # the server has no token
    buttons = browser.find_elements(By.CSS_SELECTOR, "form.ack button")
    assert buttons
    for b in buttons:
        cell = b.find_element(By.XPATH, "./ancestor::td")
        inside_page(cell)
        box, c = b.rect, cell.rect
        assert c["x"] <= box["x"] and box["x"] + box["width"] <= c["x"] + c["width"]
    table = browser.find_element(By.ID, "alerts")
    times = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( UTC)?", table.text)
    assert times and all(times), table.text  # every time says UTC
    flagged_rows = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
                    if r.find_element(By.TAG_NAME, "a").text == flagged]
    assert flagged_rows and all(WARNING in r.find_element(By.CSS_SELECTOR, ".badge")
                                .get_attribute("title") for r in flagged_rows)
    assert any("failed at cycle" in r.text for r in table.find_elements(
        By.CSS_SELECTOR, "tbody tr") if r.find_element(By.TAG_NAME, "a").text == failed)

    visit(browser, server.url + "/ui/drift")
    text = browser.find_element(By.ID, "drift").text
    assert not re.search(r"(?<![\d.])-0(\.0+)?(?![\d.])", text), text


def test_a_server_with_a_token_shows_the_token_box(live_server, tmp_path):
    server = live_server(ServeSettings(inference=InferenceConfig(runtime="onnx"),
                                       db=str(tmp_path / "a.db"), api_token="s3cret"))
    page = httpx.get(server.url + "/ui/alerts").text
    assert 'id="token-form"' in page


def test_the_rul_chart_draws_the_model_s_thresholds():
    preds = [{"cycle": c, "rul": 100.0 - c, "rul_lower": None} for c in range(1, 11)]
    svg = rul_chart(preds, None, cap=125.0, thresholds=(70.0, 20.0))
    labels = re.findall(r"<text x=\"4\"[^>]*>([^<]+)</text>", svg)
    assert labels == ["0", "20", "70", "125"]
    assert "degrading below 70, critical at or below 20" in svg


def test_bad_offsets_are_a_422_not_a_500(live_server, tmp_path):
    server = live_server(ServeSettings(inference=InferenceConfig(runtime="onnx"),
                                       db=str(tmp_path / "a.db")))
    for path in ("/", "/ui/fleet.csv"):
        for offset in ("abc", "-1", str(2**63)):
            r = httpx.get(server.url + path, params={"offset": offset})
            assert r.status_code == 422, (path, offset, r.text)
            assert "offset must be an integer" in r.json()["detail"][0]["msg"]


def test_a_page_of_the_fleet_reads_an_index_not_the_whole_table(tmp_path):
    """SQLite's plan for the dashboard's ranking, whole and by state: no sort of the table."""
    engine = db.create_db_engine(f"sqlite:///{tmp_path / 'a.db'}")
    db.migrate(engine)
    from sqlalchemy import select

    with engine.connect() as conn:
        for health in (None, "critical", "failed"):
            where = Store._fleet_where(health, None, True)
            q = (select(db.assets.c.asset_id).where(*where).order_by(*fleet_rank(health))
                 .limit(50))
            sql = str(q.compile(engine, compile_kwargs={"literal_binds": True}))
            plan = " ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert re.search(r"USING (COVERING )?INDEX assets_by", plan), plan
            assert "SCAN assets USING" in plan or "SEARCH assets USING" in plan, plan
            assert "TEMP B-TREE" not in plan, (health, plan)  # read in order, not sorted
    engine.dispose()


def test_the_ranking_puts_failed_assets_last_and_filters_by_state(db_url):
    engine = db.create_db_engine(db_url)
    db.migrate(engine)
    row = {"created_at": 0.0, "updated_at": 0.0, "first_cycle": 1, "last_cycle": 5,
           "n_readings": 5, "state": b"-", "predicted_cycle": 5, "model_id": "m",
           "predicted_at": 0.0, "p_healthy": 0.0, "p_degrading": 0.0, "p_critical": 1.0,
           "rul_lower": None, "failure_cycle": None}
    with engine.begin() as conn:
        conn.execute(db.assets.insert(), [
            {**row, "asset_id": "dead", "rul": 1.0, "rul_lower": 0.0, "health": "critical",
             "failure_cycle": 6},
            {**row, "asset_id": "low", "rul": 10.0, "rul_lower": 5.0, "health": "critical"},
            {**row, "asset_id": "mid", "rul": 50.0, "rul_lower": None, "health": "degrading"},
            {**row, "asset_id": "new", "predicted_cycle": None, "rul": None, "health": None,
             "p_healthy": None, "p_degrading": None, "p_critical": None}])
    store = Store(engine)

    def ids(**kw):
        total, rows = store.fleet(limit=10, offset=0, by_lower_bound=True, **kw)
        assert total == len(rows)
        return [r["asset_id"] for r in rows]

    assert ids(health=None) == ["low", "mid", "new", "dead"]
    assert ids(health="critical") == ["low"]
    assert ids(health="failed") == ["dead"]
    assert store.fleet_counts() == {"critical": 1, "degrading": 1, "pending": 1, "failed": 1}
    assert [[r["asset_id"] for r in c] for c in store.fleet_chunks(
        health=None, search=None, offset=1, chunk=2)] == [["mid", "new"], ["dead"]]
    engine.dispose()


def test_the_render_thread_works_at_most_its_share_of_the_time():
    thread = RenderThread(share=0.5, burst=0.05)

    def work():  # 20 ms of CPU
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.02:
            pass

    async def main():
        t0 = time.monotonic()
        await asyncio.gather(*(thread.run(work) for _ in range(20)))
        return time.monotonic() - t0

    elapsed = asyncio.run(main())
    thread.close()
    busy = thread.busy_seconds
    assert busy >= 0.4
    # work <= burst + share * elapsed + one job (the last may overdraw); 20 jobs at once
    # would take 0.4 s without the pacing
    assert elapsed >= (busy - 0.05 - 0.025) / 0.5


@pytest.mark.needs_data
def test_readings_in_the_wrong_units_get_the_badge_on_every_page(live_server, tmp_path,
                                                                  cmapss_dir):
    """End to end: the service's own warnings (Celsius and kPa readings), not stored ones."""
    from amnl.data.cmapss import in_celsius_and_kpa

    from .test_warnings import post

    engines = closest_to_failure(load_subset(cmapss_dir, "FD001", train=False), 2)
    (bad, bad_rows), (good, good_rows) = engines.items()
    server = live_server(ServeSettings(inference=InferenceConfig(runtime="onnx"),
                                       db=str(tmp_path / "a.db")))
    with httpx.Client(base_url=server.url) as c:
        post(c, bad, in_celsius_and_kpa(bad_rows))
        post(c, good, good_rows)
        assert server.service.wait_predicted()
        said = c.get(f"/v1/assets/{bad}").json()["prediction"]["warnings"]
        assert said
        pages = [c.get(p).text for p in ("/", f"/ui/assets/{bad}", "/ui/alerts?state=")]
    badge = re.compile(r'<a href="/ui/assets/([^"]+)">[^<]*</a>( <span class="chip[^>]*>[^<]*'
                       r'</span>)? <span class="badge" title="([^"]*)">input warning')
    fleet = {m.group(1): m.group(3) for m in badge.finditer(pages[0])}
    assert list(fleet) == [bad] and html.unescape(fleet[bad]).split("\n") == said
    listed = re.search(r'id="warnings">(.*?)</ul>', pages[1], re.S).group(1)
    assert re.findall(r"<li>(.*?)</li>", html.unescape(listed)) == said  # in full on its page
    alerts = [m.group(1) for m in badge.finditer(pages[2])]
    assert alerts and set(alerts) == {bad}


def test_a_nul_in_a_page_s_query_is_not_a_500(live_server, db_url):
    """PostgreSQL refuses NUL in text: the search drops it, an id that no asset can have is
    the 404 page, an unknown alert filter shows the open alerts (all were 500s there)."""
    server = live_server(ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db_url))
    for path, params, status in (("/", {"q": "a\x00b"}, 200),
                                 ("/ui/fleet.csv", {"q": "\x00"}, 200),
                                 ("/ui/assets/a%00b", None, 404),
                                 ("/ui/alerts", {"state": "\x00"}, 200)):
        r = httpx.get(server.url + path, params=params)
        assert r.status_code == status, (path, r.text[:300])
    lines = httpx.get(server.url + "/ui/fleet.csv", params={"q": "\x00"}).text.splitlines()
    assert lines and lines[0].startswith("asset_id,")
