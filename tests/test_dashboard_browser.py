"""A real browser on a real server: log into the admin and see the dashboard's charts drawn with data, and
every admin page and the API docs render under the strict Content-Security-Policy with no violation logged.

Runs headless Chromium through chromedriver (Debian: ``apt-get install chromium chromium-driver``; `.ci/run`
installs them) against gunicorn serving a SQLite database with a synthetic history and the fake engine.
The screenshot lands in the test's tmp folder and in ``benchmarks/out/dashboard.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.servers import ROOT, Server, manage, server_env

pytestmark = pytest.mark.server

CHROMIUM = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
CHROMEDRIVER = shutil.which("chromedriver")
PASSWORD = "dashboard-test-password"
CHARTS = ["chart-requests-daily", "chart-tokens-daily", "chart-requests-hourly", "chart-tokens-hourly",
          "chart-top-accounts", "chart-top-keys", "chart-latency", "chart-error-rates", "chart-moderation"]

# For every chart: its labels, each dataset's sum, and how many bars Chart.js laid out on the canvas.
READ_CHARTS = """
const out = {};
for (const [id, chart] of Object.entries(window.sluiceCharts || {})) {
  out[id] = {
    labels: chart.data.labels.length,
    sums: chart.data.datasets.map(d => d.data.reduce((a, b) => a + (b || 0), 0)),
    drawn: chart.data.datasets.map((d, i) => chart.getDatasetMeta(i).data.filter(e => e.height > 0 || e.width > 0).length),
    width: chart.width,
  };
}
return {charts: out, instances: Object.keys(Chart.instances).length,
        page: JSON.parse(document.getElementById("sluice-dashboard-data").textContent)};
"""


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    folder = tmp_path_factory.mktemp("dashboard")
    env = server_env(
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", CACHE_URL="locmem://", SLUICE_ENGINE="fake",
        SLUICE_VAR_DIR=str(folder / "var"), DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    manage(env, "migrate", "--noinput")
    manage(env, "load_synthetic_usage", "--rows", "20000", "--days", "35", "--accounts", "12", "--seed", "3")
    manage(env, "createsuperuser", "--noinput", "--username", "operator", "--email", "ops@example.com")
    server = Server(env, log_path=folder / "server.log").start(timeout=120)
    yield server, folder
    server.stop()


@pytest.fixture(scope="module")
def browser(dashboard_server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1600,1200", "--force-device-scale-factor=1"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, CSP violations included
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def log_in(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys("operator")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def wait_for_charts(driver, count: int) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return window.sluiceCharts && Object.keys(window.sluiceCharts).length") == count
    )
    return driver.execute_script(READ_CHARTS)


def test_the_dashboard_draws_every_chart_with_data_points(dashboard_server, browser, tmp_path):
    server, _ = dashboard_server
    log_in(browser, server.url)
    state = wait_for_charts(browser, len(CHARTS))
    charts, page = state["charts"], state["page"]
    assert sorted(charts) == sorted(CHARTS) and state["instances"] == len(CHARTS)
    for name in CHARTS:
        chart = charts[name]
        assert chart["labels"] > 0 and sum(chart["sums"]) > 0 and sum(chart["drawn"]) > 0, (name, chart)
    assert charts["chart-requests-daily"]["labels"] == 30 and charts["chart-requests-hourly"]["labels"] == 48
    # The bars add up to the figures the server computed: served + errors + 429s = every request.
    assert sum(charts["chart-requests-daily"]["sums"]) == page["totals"]["requests"] > 10_000
    assert charts["chart-tokens-daily"]["sums"] == [page["totals"]["prompt_tokens"], page["totals"]["completion_tokens"]]
    assert page["engine"]["status"] == "ready"
    assert "ready" in browser.find_element("id", "sluice-engine").text

    browser.set_window_size(1600, browser.execute_script("return document.documentElement.scrollHeight") + 40)
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 50_000
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out / "dashboard.png")


def test_the_account_filter_redraws_the_charts_for_one_account(dashboard_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, _ = dashboard_server
    if "/admin/login/" in browser.current_url or not browser.current_url.startswith(server.url):
        log_in(browser, server.url)
    everyone = wait_for_charts(browser, len(CHARTS))["page"]["totals"]["requests"]
    Select(browser.find_element(By.NAME, "account")).select_by_visible_text("globex")
    browser.find_element(By.CSS_SELECTOR, "#sluice-filters input[type=submit]").click()
    state = wait_for_charts(browser, len(CHARTS) - 1)  # no "top accounts" for a single account
    assert state["page"]["account"] == "globex"
    assert 0 < sum(state["charts"]["chart-requests-daily"]["sums"]) == state["page"]["totals"]["requests"] < everyone


def csp_violations(driver) -> list[str]:
    """The console messages since the last call that report a Content-Security-Policy refusal."""
    return [
        entry["message"] for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
    ]


def test_every_admin_page_and_the_api_docs_render_with_no_content_security_policy_violation(dashboard_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, _ = dashboard_server
    browser.delete_all_cookies()
    csp_violations(browser)  # drop what earlier tests logged
    log_in(browser, server.url)  # the login page, then the dashboard
    wait_for_charts(browser, len(CHARTS))
    assert csp_violations(browser) == []

    # Every model's list, its add form and one change form (the user: password and permission widgets).
    browser.get(f"{server.url}/admin/auth/user/")
    lists = sorted({link.get_attribute("href") for link in browser.find_elements(By.CSS_SELECTOR, "#nav-sidebar th a")})
    assert len(lists) >= 6, lists
    pages = [*lists, f"{server.url}/admin/auth/user/add/", f"{server.url}/admin/auth/user/1/change/"]
    for url in lists:
        browser.get(url)
        pages += [link.get_attribute("href") for link in browser.find_elements(By.CSS_SELECTOR, "a.addlink")]
    seen = {}
    for url in dict.fromkeys(pages):
        browser.get(url)
        assert browser.find_elements(By.ID, "content"), url
        seen[url] = csp_violations(browser)
    assert seen and all(messages == [] for messages in seen.values()), {u: m for u, m in seen.items() if m}

    # Swagger UI: its bundle, its start-up script (/docs?script) and the schema it fetches; operations drawn.
    browser.get(f"{server.url}/docs")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10)
    assert "Sluice API" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
    assert csp_violations(browser) == []

    # The check can fail: inline code added to the page is refused, and the refusal is what it reads.
    browser.execute_script("const s = document.createElement('script'); s.textContent = 'window.x = 1'; document.body.append(s)")
    assert browser.execute_script("return window.x") is None
    assert any("script" in message for message in csp_violations(browser))
