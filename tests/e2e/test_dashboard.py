"""The dashboard in a real headless Chromium, reading the real PostgreSQL, refreshing itself."""

import datetime as dt
import shutil
import sys
import uuid

import pytest

from ecom.runtime.process import ManagedProcess, port_open, wait_until
from serving import db
from serving.queries import overview_kpis

pytestmark = pytest.mark.e2e

COLUMNS = (
    "event_id",
    "transaction_id",
    "event_time",
    "customer_id",
    "amount",
    "currency",
    "payment_method",
    "channel",
    "item_count",
    "processed_time",
)


def add_orders(dsn: str, n: int) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [(str(uuid.uuid4()), "t", now, f"C{i}", "12.34", "USD", "paypal", "web", 1, now) for i in range(n)]
    conn = db.connect(dsn)
    try:
        db.commit_batch(conn, f"dash-test-{uuid.uuid4()}", 0, "transactions", COLUMNS, ("event_id",), rows)
    finally:
        conn.close()


def text_of(browser, element_id: str) -> str:
    """The element's text, or "" while the page has not rendered it yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.ID, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


@pytest.fixture
def dashboard(stack, tmp_path):
    settings = stack
    proc = ManagedProcess("dashboard-test", tmp_path)
    proc.start([sys.executable, "-m", "ecom.cli", "--profile", "test", "dashboard"])
    d = settings.dashboard
    assert wait_until(lambda: port_open(d.host, d.port), 60), proc.log_tail()
    yield f"http://{d.host}:{d.port}/"
    proc.stop()


@pytest.fixture
def browser():
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
    ):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    yield browser
    browser.quit()


def test_dashboard_shows_live_growing_numbers(stack, dashboard, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from dashboard import ids

    dsn = stack.postgres.dsn
    add_orders(dsn, 5)
    browser.get(dashboard)

    def shown() -> str:
        return text_of(browser, ids.OVERVIEW_TX_COUNT)

    expected = f"{int(overview_kpis(dsn)['transactions']):,}"
    assert wait_until(lambda: shown() == expected, 30), f"dashboard shows {shown()!r}, database has {expected}"

    add_orders(dsn, 7)  # new data arrives: the page refreshes by itself
    expected = f"{int(overview_kpis(dsn)['transactions']):,}"
    assert wait_until(lambda: shown() == expected, 30), f"dashboard shows {shown()!r}, database has {expected}"
    assert browser.find_elements(
        By.CSS_SELECTOR, f"#{ids.OVERVIEW_TIMESERIES} .bars, #{ids.OVERVIEW_TIMESERIES} .trace"
    )
    browser.save_screenshot(str(tmp_path / "dashboard.png"))


def test_fraud_page_lists_alerts_with_reasons(stack, dashboard, browser):

    from dashboard import ids
    from serving.queries import fraud_summary

    dsn = stack.postgres.dsn
    event_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC)
    reason = f"amount 14x the customer's average ({event_id[:8]})"
    row = (f"a-{event_id}", event_id, "t-fraud", "C-fraud", "999.00", 97.5, [reason], "7", now, now)
    cols = (
        "alert_id",
        "event_id",
        "transaction_id",
        "customer_id",
        "amount",
        "fraud_score",
        "reasons",
        "model_version",
        "event_time",
        "created_at",
    )
    conn = db.connect(dsn)
    try:
        db.commit_batch(conn, f"dash-alert-{event_id}", 0, "fraud_alerts", cols, ("event_id",), [row])
    finally:
        conn.close()
    browser.get(dashboard + "fraud")
    expected = f"{int(fraud_summary(dsn)['alerts']):,}"
    assert wait_until(lambda: text_of(browser, ids.FRAUD_ALERT_COUNT) == expected, 30)
    assert wait_until(lambda: reason in text_of(browser, ids.FRAUD_ALERTS_TABLE), 30)
