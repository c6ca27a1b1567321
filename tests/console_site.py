"""A console site for real-browser tests and the screenshot script: a gunicorn server on SQLite with the fake
engine (paced, so a reply streams in pieces), two accounts, and headless Chromium to drive it."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.servers import Server, manage, server_env

CHROMIUM = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
CHROMEDRIVER = shutil.which("chromedriver")
PASSWORD = "console-browser-password-7"
TOKEN_DELAY_S = "0.04"  # the fake engine's pace: 27 tokens in about a second


def console_server(folder: Path) -> tuple[Server, dict]:
    env = server_env(
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", CACHE_URL="locmem://", SLUICE_ENGINE="fake",
        SLUICE_VAR_DIR=str(folder / "var"), SLUICE_FAKE_TOKEN_DELAY_S=TOKEN_DELAY_S,
    )
    manage(env, "migrate", "--noinput")
    server = Server(env, log_path=folder / "server.log")
    env["SLUICE_CONSOLE_BASE_URL"] = server.url
    server.env["SLUICE_CONSOLE_BASE_URL"] = server.url
    return server, env


def account_create(env: dict, name: str) -> int:
    """An account (made by the operator's key command) and its id."""
    manage(env, "create_api_key", "--account", name, "--name", f"{name} ops")
    return int(manage(env, "shell", "-c",
                      f"from accounts.models import Account; print(Account.objects.get(name={name!r}).pk)").split()[-1])


def invite(env: dict, account: str, email: str, role: str) -> str:
    """The operator's invitation (the command); returns the one-time set-password link it printed."""
    return manage(env, "invite_member", "--account", account, "--email", email, "--role", role).strip().splitlines()[-1]


def browser(*, width: int = 1280, height: int = 900):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--force-device-scale-factor=1"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def set_password(driver, link: str) -> None:
    """Open an invitation link and choose the password; Django then signs the person in."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(link)
    driver.find_element(By.NAME, "new_password1").send_keys(PASSWORD)
    driver.find_element(By.NAME, "new_password2").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def sign_in(driver, url: str, email: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{url}/console/login/")
    driver.find_element(By.NAME, "username").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def csp_violations(driver) -> list[str]:
    """Console messages about a refused script or style (the browser logs those of a CSP header)."""
    return [entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]
