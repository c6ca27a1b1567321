"""How long the admin dashboard takes to load over a million usage rows.

For each database (a throwaway SQLite file; a throwaway PostgreSQL database too with --postgres), it migrates,
loads a synthetic history with ``manage.py load_synthetic_usage`` (default: 1,000,000 usage rows over 60
days, so the dashboard's default 30 days hold about half of them), starts the server as the README does
(gunicorn, fake engine), logs into the admin and times ``GET /admin/`` over HTTP: one cold request, then
--repeat more, printing min/median/max. It also times one download of the 30-day usage report (JSON).

    .venv/bin/python benchmarks/dashboard_bench.py [--rows 1000000] [--repeat 7]
        [--postgres postgres://postgres@127.0.0.1:5432/postgres]   # the server; a database is created and dropped
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

import subprocess  # noqa: E402

from tests.servers import Server, manage, server_env  # noqa: E402

PASSWORD = "bench-password"


def log_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=300, follow_redirects=False)
    page = client.get("/admin/login/?next=/admin/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    reply = client.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": token, "username": "bench", "password": PASSWORD, "next": "/admin/",
    }, headers={"Referer": f"{url}/admin/login/"})
    assert reply.status_code == 302, f"login failed: {reply.status_code}"
    return client


def timed_get(client: httpx.Client, path: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, f"{path}: {response.status_code}"
    return elapsed, response


def run(label: str, database_url: str, *, rows: int, repeat: int, folder: Path) -> None:
    env = server_env(
        DATABASE_URL=database_url, CACHE_URL="locmem://", SLUICE_ENGINE="fake", SLUICE_VAR_DIR=str(folder / "var"),
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    manage(env, "migrate", "--noinput")
    started = time.perf_counter()
    loaded = subprocess.run(  # not manage(): a million rows may take longer than its 300 s limit
        [sys.executable, "manage.py", "load_synthetic_usage", "--rows", str(rows), "--days", "60", "--accounts", "30"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=True,
    ).stdout
    load_s = time.perf_counter() - started
    print(f"[{label}] {loaded.strip().splitlines()[-1]}")
    print(f"[{label}] load_synthetic_usage wall time: {load_s:.1f} s")
    if database_url.startswith("postgres"):
        # What autovacuum does after a bulk load: statistics and the visibility map (for index-only scans).
        manage(env, "shell", "-c", "from django.db import connection; connection.cursor().execute("
                                   "'VACUUM ANALYZE accounts_usagerecord')")
        print(f"[{label}] VACUUM ANALYZE accounts_usagerecord done (as autovacuum would after a bulk load)")
    manage(env, "createsuperuser", "--noinput", "--username", "bench", "--email", "bench@example.com")
    server = Server(env, log_path=folder / f"{label}-server.log").start(timeout=120)
    try:
        client = log_in(server.url)
        cold, page = timed_get(client, "/admin/")
        window = re.search(r'"totals": \{"requests": (\d+)', page.text)
        print(f"[{label}] usage rows in the dashboard's default 30 days: {int(window.group(1)):,}")
        times = [timed_get(client, "/admin/")[0] for _ in range(repeat)]
        print(f"[{label}] GET /admin/ (dashboard) first request: {cold * 1000:.0f} ms")
        print(f"[{label}] GET /admin/ (dashboard) x{repeat}: min {min(times) * 1000:.0f} ms, "
              f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
        report_s, _ = timed_get(client, "/admin/reports/usage.json")
        print(f"[{label}] GET /admin/reports/usage.json (30 days, every account): {report_s * 1000:.0f} ms")
        client.close()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--postgres", default="", help="a PostgreSQL server URL (its maintenance database)")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="sluice-dashbench-") as tmp:
        folder = Path(tmp)
        if not args.skip_sqlite:
            run("sqlite", f"sqlite:///{folder / 'bench.sqlite3'}", rows=args.rows, repeat=args.repeat, folder=folder)
        if args.postgres:
            import psycopg

            name = f"sluice_dashbench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.postgres.replace("postgres://", "postgresql://", 1), autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
                run("postgresql", url, rows=args.rows, repeat=args.repeat, folder=folder)
            finally:
                with psycopg.connect(args.postgres.replace("postgres://", "postgresql://", 1), autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
