"""The console in a real browser (headless Chromium) on a real gunicorn server with the fake engine:
invitations, sign-in, a key created, copied and used through the ``openai`` client, a playground reply
streamed in pieces, a viewer kept off the keys page, another account's pages not found, and every page
under the strict Content-Security-Policy the console's pages carry (no refusals logged)."""

from __future__ import annotations

import pytest

from tests.console_site import (
    CHROMEDRIVER,
    CHROMIUM,
    account_create,
    browser,
    console_server,
    csp_violations,
    invite,
    set_password,
    sign_in,
)

pytestmark = pytest.mark.server
MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    server, env = console_server(tmp_path_factory.mktemp("console"))
    ids = {"acme": account_create(env, "acme"), "globex": account_create(env, "globex")}
    links = {
        "owner": invite(env, "acme", "owner@acme.test", "owner"),
        "developer": invite(env, "acme", "dev@acme.test", "developer"),
        "viewer": invite(env, "acme", "viewer@acme.test", "viewer"),
    }
    server.start(timeout=180)
    yield server, ids, links
    server.stop()


@pytest.fixture(scope="module")
def driver(site):
    chrome = browser()
    yield chrome
    chrome.quit()


def test_an_owner_signs_in_creates_and_copies_a_key_and_its_request_shows_on_the_usage_page(site, driver):
    from openai import OpenAI
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, ids, links = site
    set_password(driver, links["owner"])
    WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith(f"/console/a/{ids['acme']}/usage/"))
    driver.find_element(By.CSS_SELECTOR, ".signout button").click()
    WebDriverWait(driver, 20).until(lambda d: "/console/login/" in d.current_url)
    sign_in(driver, server.url, "owner@acme.test")
    WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/usage/"))

    driver.find_element(By.LINK_TEXT, "Keys").click()
    driver.find_element(By.NAME, "name").send_keys("ci")
    driver.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]").click()
    target = driver.find_element(By.ID, driver.find_element(By.ID, "copy-key").get_attribute("data-copy-target"))
    plaintext = target.get_attribute("value")
    assert plaintext.startswith("sk-sluice-")
    driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": server.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    driver.find_element(By.ID, "copy-key").click()
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "copy-key").text == "Copied")
    clipboard = driver.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('refused: ' + e));")
    assert clipboard == plaintext

    client = OpenAI(base_url=f"{server.url}/v1", api_key=clipboard, max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello?"}])
    assert reply.choices[0].message.content == "Hello from the fake engine."

    driver.get(f"{server.url}/console/a/{ids['acme']}/keys/")
    assert plaintext not in driver.page_source  # shown once, never again
    driver.find_element(By.LINK_TEXT, "Usage").click()
    lookup_id = plaintext[len("sk-sluice-"):][:12]
    row = driver.find_element(By.CSS_SELECTOR, f"#usage-by-key tr[data-key='{lookup_id}']")
    assert row.find_element(By.CSS_SELECTOR, "[data-col=requests]").text == "1"
    assert row.find_element(By.CSS_SELECTOR, "[data-col=prompt_tokens]").text == f"{reply.usage.prompt_tokens:,}"
    assert row.find_element(By.CSS_SELECTOR, "[data-col=completion_tokens]").text == str(reply.usage.completion_tokens)
    charts = driver.execute_script(
        "return Object.fromEntries(Object.entries(window.consoleCharts).map(([k, c]) => "
        "[k, c.data.datasets.map(d => d.data.reduce((a, b) => a + b, 0))]));")
    assert sum(charts["tokens"]) >= reply.usage.total_tokens and sum(charts["requests"]) >= 1
    assert csp_violations(driver) == []

    # Another account's pages are not found, whatever the URL (the test client checks the status codes).
    for name in ["usage", "keys", "quotas", "playground", "moderation", "members"]:
        driver.get(f"{server.url}/console/a/{ids['globex']}/{name}/")
        assert driver.find_element(By.TAG_NAME, "h1").text == "Not found", name


def test_a_developer_sees_a_playground_reply_arrive_in_pieces_with_its_usage(site, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, ids, links = site
    set_password(driver, links["developer"])
    WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/usage/"))
    driver.find_element(By.LINK_TEXT, "Playground").click()
    # Record the reply's text each time the page changes it (a MutationObserver: no timed polling).
    driver.execute_script("""
      window.seen = [];
      new MutationObserver(() => {
        const body = document.querySelector('.turn.assistant .body');
        if (body && body.textContent !== window.seen[window.seen.length - 1]) { window.seen.push(body.textContent); }
      }).observe(document.getElementById('pg-conversation'), {subtree: true, childList: true, characterData: true});
    """)
    driver.find_element(By.ID, "pg-prompt").send_keys("Say hello")
    driver.find_element(By.ID, "pg-send").click()
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, ".turn.assistant").get_attribute("data-state") == "done")
    seen = [text for text in driver.execute_script("return window.seen") if text]
    final = "Hello from the fake engine."
    assert seen[-1] == final
    assert len(seen) >= 3, seen  # several pieces, each one growing the last
    assert all(final.startswith(piece) for piece in seen) and len(set(seen)) == len(seen)
    meta = driver.find_element(By.CSS_SELECTOR, ".turn.assistant .meta").text
    assert f"{len(final)} completion tokens" in meta and "finish: stop" in meta and "nothing flagged" in meta
    assert csp_violations(driver) == []
    # The strict policy is in force: a script injected into the page is refused.
    injected = driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
        "document.body.appendChild(s); return window.injected || null;")
    assert injected is None


def test_a_viewer_cannot_reach_the_keys_page(site, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, ids, links = site
    set_password(driver, links["viewer"])
    WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/usage/"))
    assert [a.text for a in driver.find_elements(By.CSS_SELECTOR, "nav.pages a")] == ["Usage"]
    driver.get(f"{server.url}/console/a/{ids['acme']}/keys/")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Not for your role"
    assert not driver.find_elements(By.ID, "create-key")
