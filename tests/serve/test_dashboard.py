"""The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver)
through Selenium, against a real server on loopback.

With ``AMNL_SCREENSHOTS=DIR`` each page is also saved there at 1280x800 (``docs/screenshots``
holds the published ones).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from amnl.config import InferenceConfig
from amnl.data.cmapss import load_subset
from amnl.serve.settings import ServeSettings

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

    visit(browser, server.url + "/", "fleet")
    rows = browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
    assert len(rows) == len(engines)
    lows = [float(r.find_elements(By.TAG_NAME, "td")[2].text) for r in rows]
    assert lows == sorted(lows)  # ranked by the RUL lower bound
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
    assert len(browser.find_elements(By.CSS_SELECTOR, "#inputs tbody tr")) == 10
    assert "RMSE" in browser.find_element(By.ID, "asset-accuracy").text  # its failure is known

    visit(browser, server.url + "/ui/alerts", "alerts")
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
