"""The dashboard in a real headless Chromium, signed in, on a stack with real data from the stream and the daily batch.

One isolated shop for the module (own topics, lake, database, MLflow registry):
backfilled history streamed into silver, a fraud model trained on it, live
orders scored by the stream (alerts), then ``ecom batch daily`` (gold and the
minute metrics). The dashboard runs as ``ecom dashboard`` (gunicorn) with a
user from the environment and reads as the ``ecom_reader`` role.

Screenshots of every page (desktop and 390 px) are saved under
``<data_dir>/artifacts/e2e-dashboard/`` (data/test/...), and copied to
``docs/screenshots/`` when ``ECOM_UPDATE_SCREENSHOTS=1``. The amount of data:
``ECOM_E2E_BACKFILL`` orders (default 3,000), ``ECOM_E2E_LIVE`` live orders
(default 600) at ``ECOM_E2E_RATE`` per second (default 200).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from dashboard import ids
from ecom.runtime.process import ManagedProcess, port_open, wait_until
from ecom.settings import ROOT
from serving.db import connection
from tests.conftest import run_ecom as ecom
from tests.conftest import shop_environment as env_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]  # the shop is streamed, trained and batched first

PAGES = {"overview": "/", "fraud": "/fraud", "customers": "/customers", "products": "/products", "health": "/health"}
USER, PASSWORD = "analyst", "e2e-" + uuid.uuid4().hex[:12]
BACKFILL = int(os.environ.get("ECOM_E2E_BACKFILL", "3000"))
LIVE = int(os.environ.get("ECOM_E2E_LIVE", "600"))
RATE = os.environ.get("ECOM_E2E_RATE", "200")


def sql(settings, query: str, params=()) -> list[tuple]:
    with connection(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_orders(settings, count: int) -> None:
    """Live orders (event time now), through the stream (scored, alerts), then the minute metrics."""
    ecom(settings, "generate", "--count", str(count), "--rate", RATE, "--no-progress")
    ecom(settings, "stream", "all", "--once")


@pytest.fixture(scope="module")
def shop(stack, tmp_path_factory):
    """Isolated settings holding history, a trained model, scored live orders and gold."""
    from ecom.runtime.kafka import ensure_topics
    from serving.db import drop_database, recreate_database
    from tests.conftest import isolated_settings, with_registry, with_topic

    root = tmp_path_factory.mktemp("e2e-dashboard")
    name = "dash" + uuid.uuid4().hex[:8]
    settings = with_registry(isolated_settings(stack, root, name), root)
    settings = with_topic(settings, "labels", name)
    recreate_database(settings.postgres.dsn)
    ensure_topics(settings)
    ecom(settings, "generate", "--backfill-days", "20", "--count", str(BACKFILL), "--seed", "11", "--no-progress")
    ecom(settings, "stream", "all", "--once")
    ecom(settings, "train")
    live_orders(settings, LIVE)
    ecom(settings, "batch", "daily")
    yield settings
    drop_database(settings.postgres.dsn)


@pytest.fixture(scope="module")
def dashboard(shop, tmp_path_factory):
    """``ecom dashboard`` (gunicorn) for the shop, with one user given as a hash in the environment."""
    from werkzeug.security import generate_password_hash

    port = free_port()
    proc = ManagedProcess("dashboard-e2e", tmp_path_factory.mktemp("dash-run"))
    env = env_of(shop, ECOM_DASHBOARD__PORT=str(port), ECOM_DASHBOARD__REFRESH_MS="2000",
                 ECOM_DASHBOARD_USERS=f"{USER}:{generate_password_hash(PASSWORD)}")  # fmt: skip
    proc.start([sys.executable, "-m", "ecom.cli", "dashboard"], env=env)
    assert wait_until(lambda: port_open("127.0.0.1", port) or not proc.is_running(), 120), proc.log_tail()
    assert proc.is_running(), proc.log_tail()
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture(scope="module")
def browser(dashboard):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromedriver are required (the test set-up installs them: bin/setup --browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver), options=options)
    sign_in(browser, dashboard)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def artefacts(shop) -> Path:
    folder = Path(shop.data_dir) / "artifacts" / "e2e-dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(browser, base: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(base + "/login")
    browser.find_element(By.ID, "username").send_keys(USER)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    assert wait_until(lambda: "/login" not in browser.current_url, 30), browser.page_source[:500]


def text_of(browser, element_id: str) -> str:
    """The element's text, or "" while the page has not rendered it yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.ID, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def console_errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(browser, base: str, path: str, ready_id: str) -> None:
    browser.get(base + path)
    assert wait_until(lambda: text_of(browser, ready_id) not in ("", "loading…"), 60), f"{path} never rendered"


def full_screenshot(browser, path: Path, width: int) -> None:
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(max(height + 40, 800), 6000))
    time.sleep(1.5)  # let Plotly redraw at the new size
    browser.save_screenshot(str(path))


# -- the tests ---------------------------------------------------------------------------------------
def test_an_unauthenticated_request_is_refused(dashboard):
    page = requests.get(dashboard + "/fraud", headers={"Accept": "text/html"}, allow_redirects=False, timeout=10)
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    data = requests.post(dashboard + "/_dash-update-component", json={}, timeout=10)
    assert data.status_code == 401
    layout = requests.get(dashboard + "/_dash-layout", timeout=10)
    assert layout.status_code == 401 and "fraud" not in layout.text.lower()
    wrong = requests.Session()
    token = re.search(r'name="token" value="([^"]+)"', wrong.get(dashboard + "/login", timeout=10).text).group(1)
    refused = wrong.post(dashboard + "/login", data={"username": USER, "password": "guess", "token": token}, timeout=10)
    assert refused.status_code == 401
    assert wrong.post(dashboard + "/_dash-update-component", json={}, timeout=10).status_code == 401


READY = {
    "overview": ids.OVERVIEW_DATA_UNTIL,
    "fraud": ids.FRAUD_MATCHING,
    "customers": ids.CUSTOMERS_AS_OF,
    "products": ids.PRODUCTS_PAIRS_TITLE,
    "health": "health-champion",
}


def test_every_page_loads_without_console_errors_and_is_saved_as_a_screenshot(browser, dashboard, artefacts):
    from selenium.webdriver.common.by import By

    browser.get_log("browser")  # drop what came before
    for name, path in PAGES.items():
        open_page(browser, dashboard, path, READY[name])
        if name == "overview":  # the history, not only the last hour
            browser.find_element(By.CSS_SELECTOR, f"#{ids.OVERVIEW_RANGE} input[value='7d']").click()
        time.sleep(3)  # every callback of the page has answered at least once
        assert not console_errors(browser), f"{name}: {console_errors(browser)}"
        assert "refresh-failure" not in browser.page_source, f"{name} shows a failed refresh"
        full_screenshot(browser, artefacts / f"{name}.png", 1400)
        browser.set_window_size(1400, 1000)
    if os.environ.get("ECOM_UPDATE_SCREENSHOTS"):
        target = ROOT / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        for name in PAGES:
            shutil.copy(artefacts / f"{name}.png", target / f"{name}.png")


def settled(action, timeout: float = 15):
    """``action()``'s result, retried while a refresh replaces the elements it touches."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _window_end(browser) -> dt.datetime | None:
    from selenium.webdriver.common.by import By

    def read() -> dt.datetime | None:
        spans = browser.find_elements(By.CSS_SELECTOR, f"#{ids.OVERVIEW_DATA_UNTIL} span[data-window-end]")
        return dt.datetime.fromisoformat(spans[0].get_attribute("data-window-end")) if spans else None

    return settled(read)


def _orders_and_revenue(shop, end: dt.datetime) -> tuple[str, str]:
    """The last-24-h cards as the page formats them, from a direct query of the orders themselves."""
    ((orders, revenue),) = sql(
        shop,
        "SELECT count(*), coalesce(sum(t.amount / fx.units_per_reporting_unit), 0) FROM transactions t"
        " JOIN fx_rates fx ON fx.currency = t.currency WHERE t.event_time >= %s AND t.event_time < %s",
        (end - dt.timedelta(days=1), end),
    )
    return f"{orders:,}", f"{revenue:,.2f}"


def _shown_day_cards(browser) -> tuple[dt.datetime, int, float] | None:
    """The cards' window end, the last-24-h orders and revenue as shown; None while a refresh re-renders them."""
    end = _window_end(browser)
    orders = text_of(browser, ids.card_value("orders", "day")).replace(",", "")
    revenue = text_of(browser, ids.card_value("revenue", "day")).replace(",", "")
    if end is None or not orders.isdigit() or not re.fullmatch(r"\d+\.\d\d", revenue):
        return None
    return end, int(orders), float(revenue)


def _cards_match_sql(browser, shop, at_least: int = 0) -> bool:
    shown = _shown_day_cards(browser)
    if shown is None:
        return False
    end, orders, revenue = shown
    expected_orders, expected_revenue = _orders_and_revenue(shop, end)
    return (
        f"{orders:,}" == expected_orders
        and abs(revenue - float(expected_revenue.replace(",", ""))) <= 0.011
        and orders >= at_least
    )


def test_cards_equal_a_direct_sql_query_and_update_after_new_orders(browser, dashboard, shop):
    open_page(browser, dashboard, "/", ids.OVERVIEW_DATA_UNTIL)
    assert wait_until(lambda: _cards_match_sql(browser, shop), 90), (
        f"cards {_shown_day_cards(browser)} vs SQL {_orders_and_revenue(shop, _window_end(browser))}"
    )
    before = _shown_day_cards(browser)[1]
    live_orders(shop, 120)
    ecom(shop, "batch", "minutes")  # the new minutes, as the live metrics stage would write them
    # the cards count complete minutes: the new orders show once their minute is over
    assert wait_until(lambda: _cards_match_sql(browser, shop, at_least=before + 120), 150), (
        f"the page shows {_shown_day_cards(browser)} (was {before:,})"
    )


def _matching(browser) -> int | None:
    match = re.match(r"([\d,]+) alerts match", text_of(browser, ids.FRAUD_MATCHING))
    return int(match.group(1).replace(",", "")) if match else None


def test_a_filter_changes_the_alert_table(browser, dashboard, shop):
    from selenium.webdriver.common.by import By

    total = sql(shop, "SELECT count(*) FROM fraud_alerts WHERE created_at >= now() - interval '1 day'")[0][0]
    assert total >= 2, "the live orders raised too few alerts to filter"
    ((reason, _),) = sql(
        shop, "SELECT r, count(*) FROM fraud_alerts, unnest(reasons) r GROUP BY r ORDER BY 2, 1 LIMIT 1"
    )
    fragment = reason[:18]
    expected = sql(
        shop,
        "SELECT count(*) FROM fraud_alerts a WHERE created_at >= now() - interval '1 day'"
        " AND EXISTS (SELECT 1 FROM unnest(a.reasons) r WHERE strpos(lower(r), lower(%s)) > 0)",
        (fragment,),
    )[0][0]
    open_page(browser, dashboard, "/fraud", ids.FRAUD_MATCHING)
    assert wait_until(lambda: _matching(browser) == total, 30), text_of(browser, ids.FRAUD_MATCHING)
    box = browser.find_element(By.ID, ids.FRAUD_REASON)
    box.send_keys(fragment + "\n")
    assert wait_until(lambda: _matching(browser) == expected, 30), (text_of(browser, ids.FRAUD_MATCHING), expected)
    reasons = settled(
        lambda: [
            td.text
            for td in browser.find_elements(
                By.CSS_SELECTOR, f"#{ids.FRAUD_ALERTS_TABLE} td[data-dash-column='reasons']"
            )
        ]
    )
    assert reasons and all(fragment.lower() in text.lower() for text in reasons)
    time.sleep(5)  # two refreshes later the filter is still there, and so is its result
    assert box.get_attribute("value") == fragment and _matching(browser) == expected
    box.clear()
    box.send_keys("\n")
    assert wait_until(lambda: _matching(browser) == total, 30)


def _labels(settings) -> list[dict]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers.split(","), enable_auto_commit=False)
    try:
        tps = [TopicPartition(settings.kafka.labels_topic, p) for p in consumer.partitions_for_topic(
            settings.kafka.labels_topic) or ()]  # fmt: skip
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        found = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                found.extend(json.loads(r.value) for r in batch)
        return found
    finally:
        consumer.close()


def test_a_triage_decision_changes_the_status_and_publishes_a_label(browser, dashboard, shop):
    from selenium.webdriver.common.by import By

    ((alert_id, event_id, transaction_id),) = sql(
        shop,
        "SELECT alert_id, event_id, transaction_id FROM fraud_alerts ORDER BY created_at DESC, alert_id DESC LIMIT 1",
    )
    open_page(browser, dashboard, "/fraud", ids.FRAUD_MATCHING)
    assert wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, f"#{ids.FRAUD_ALERTS_TABLE} input[type=radio]"), 30
    )
    settled(lambda: browser.find_elements(By.CSS_SELECTOR, f"#{ids.FRAUD_ALERTS_TABLE} input[type=radio]")[0].click())
    assert wait_until(lambda: browser.find_element(By.ID, ids.FRAUD_TRIAGE_CONFIRM).is_enabled(), 15)
    note = "stolen card, customer called"
    browser.find_element(By.ID, ids.FRAUD_TRIAGE_NOTE).send_keys(note)
    browser.find_element(By.ID, ids.FRAUD_TRIAGE_CONFIRM).click()
    assert wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".triage-saved"), 30), text_of(
        browser, ids.FRAUD_TRIAGE_RESULT
    )
    ((status, stored_note, reviewer),) = sql(
        shop, "SELECT status, note, reviewed_by FROM fraud_alerts WHERE alert_id = %s", (alert_id,)
    )
    assert (status, stored_note, reviewer) == ("confirmed_fraud", note, USER)
    assert wait_until(lambda: "confirmed fraud" in text_of(browser, ids.FRAUD_ALERTS_TABLE), 15)
    labels = [m for m in _labels(shop) if m["event_id"] == event_id]
    analyst = [m for m in labels if m["fraud_pattern"] == "analyst_confirmed"]
    assert len(analyst) == 1 and labels[-1] == analyst[0]  # after the simulator's own label, if it sent one
    label = analyst[0]
    assert set(label) == {"event_id", "transaction_id", "is_fraud", "fraud_pattern", "label_time"}
    assert (label["transaction_id"], label["is_fraud"]) == (transaction_id, True)
    from ml.train import load_labels

    trained_on = load_labels(shop).set_index("event_id")  # what the next `ecom train` reads
    assert trained_on.loc[event_id, "fraud_pattern"] == "analyst_confirmed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", label["label_time"])


def test_the_layout_holds_at_390_px_and_a_refresh_keeps_the_scroll(browser, dashboard, artefacts):
    browser.set_window_size(390, 844)
    try:
        for name, path in PAGES.items():
            open_page(browser, dashboard, path, READY[name])
            time.sleep(2)
            inner, scroll = browser.execute_script(
                "return [window.innerWidth, document.documentElement.scrollWidth]"
            )  # fmt: skip
            assert scroll <= inner + 1, f"{name} is {scroll} px wide in a {inner} px window"
            full_screenshot(browser, artefacts / f"{name}-390.png", 390)
            browser.set_window_size(390, 844)
        open_page(browser, dashboard, "/customers", READY["customers"])
        browser.execute_script("window.scrollTo(0, 900)")
        time.sleep(5)  # two refreshes
        assert browser.execute_script("return window.scrollY") == 900
    finally:
        browser.set_window_size(1400, 1000)
    if os.environ.get("ECOM_UPDATE_SCREENSHOTS"):
        shutil.copy(artefacts / "overview-390.png", ROOT / "docs" / "screenshots" / "overview-390.png")
