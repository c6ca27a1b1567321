"""Screenshots of every console page at desktop and phone widths, into benchmarks/out/console/.

Starts a real server (gunicorn, SQLite in a temporary folder, the fake engine), writes a synthetic usage
history, invites an owner of one account by the operator's command, then drives headless Chromium through
the pages as that owner: usage, quotas, keys (with a new key shown once), the playground after a streamed
reply, moderation events, members; and the sign-in page.

    .venv/bin/python benchmarks/console_screenshots.py [--out benchmarks/out/console] [--docs docs/console-usage.png]

Needs Chromium and chromedriver (``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.console_site import (  # noqa: E402
    CHROMEDRIVER,
    CHROMIUM,

    browser,
    console_server,
    csp_violations,
    invite,
    set_password,
    sign_in,
)
from tests.servers import manage  # noqa: E402

WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
ACCOUNT = "northwind"
SETUP = f"""
from accounts.models import Account
from accounts.members import member_invite
account = Account.objects.get(name={ACCOUNT!r})
account.daily_token_quota, account.monthly_token_quota = 400000, 9000000
account.save()
for email, role in (("dev@northwind.test", "developer"), ("analyst@northwind.test", "viewer")):
    member_invite(account=account, email=email, role=role)
print(account.pk)
"""

def full_page(driver, path: Path, width: int) -> None:
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    driver.set_window_size(width, min(max(height, 600), 4000) + chrome)
    driver.save_screenshot(str(path))

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "console")
    parser.add_argument("--docs", type=Path, default=None,
                        help="Also save the first screen of the desktop usage page here (for the README).")
    args = parser.parse_args()
    if not (CHROMIUM and CHROMEDRIVER):
        sys.exit("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server, env = console_server(Path(tmp))
        manage(env, "load_synthetic_usage", "--rows", "20000", "--days", "35", "--accounts", "3", "--seed", "3")
        account_id = int(manage(env, "shell", "-c", SETUP).split()[-1])
        link = invite(env, ACCOUNT, "owner@northwind.test", "owner")
        server.start(timeout=180)
        try:
            shots = []
            for label, (width, height) in WIDTHS.items():
                driver = browser(width=width, height=height)
                try:
                    shots += take(driver, server.url, account_id, link if label == "desktop" else None, label, width,
                                  args.out, docs=args.docs if label == "desktop" else None)
                finally:
                    driver.quit()
        finally:
            server.stop()
    for path in shots:
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  {path.stat().st_size // 1024} KB")
    if args.docs:
        print(f"{args.docs}  {args.docs.stat().st_size // 1024} KB")

def take(driver, url: str, account_id: int, link: str | None, label: str, width: int, out: Path,
         docs: Path | None) -> list[Path]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = []

    def shot(name: str) -> None:
        path = out / f"{name}-{label}.png"
        full_page(driver, path, width)
        driver.set_window_size(width, WIDTHS[label][1])
        shots.append(path)

    driver.get(f"{url}/console/login/")
    shot("login")
    if link:
        set_password(driver, link)  # the invited owner chooses a password
        WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/usage/"))
    else:
        sign_in(driver, url, "owner@northwind.test")
    base = f"{url}/console/a/{account_id}"
    driver.get(f"{base}/usage/")
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return !!window.consoleCharts"))
    if docs:  # the first screen of the usage page, small enough for the README
        docs.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(docs))
    shot("usage")
    driver.get(f"{base}/quotas/")
    shot("quotas")
    driver.get(f"{base}/keys/")
    driver.find_element(By.NAME, "name").send_keys(f"screenshot {label}")
    driver.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]").click()
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "new-key-value"))
    shot("keys")
    driver.get(f"{base}/playground/")
    driver.find_element(By.ID, "pg-prompt").send_keys("What is the capital of France?")
    driver.find_element(By.ID, "pg-send").click()
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, ".turn.assistant").get_attribute("data-state") == "done")
    shot("playground")
    driver.get(f"{base}/moderation/")
    shot("moderation")
    driver.get(f"{base}/members/")
    shot("members")
    refused = csp_violations(driver)
    if refused:
        print("Content-Security-Policy refusals:", *refused, sep="\n  ")
    return shots

if __name__ == "__main__":
    main()
