"""Start real Sluice server processes (gunicorn, as the README does) for end-to-end tests."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
# One strong key for every server and command of this test run (a deployment refuses a weak one).
TEST_SECRET_KEY = secrets.token_urlsafe(50)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    # Test servers speak plain HTTP: no redirect to HTTPS, even on a server database.
    env.update({"HF_HUB_OFFLINE": "1", "SECRET_KEY": TEST_SECRET_KEY, "SLUICE_ACCESS_LOG": "", "SECURE_SSL_REDIRECT": "0"})
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _running(pid: int) -> bool:
    """Whether a process still runs (a zombie has exited and closed its files)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


class Server:
    def __init__(self, env: dict[str, str], *, workers: int = 1, log_path: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "SLUICE_BIND": f"127.0.0.1:{self.port}", "SLUICE_WORKERS": str(workers)}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, *, wait_ready: bool = True, timeout: float = 240.0) -> "Server":
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT, env=self.env, stdout=log, stderr=log
        )
        self.wait("/readyz" if wait_ready else "/healthz", timeout)
        return self

    def wait(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; log: {self.log_path}")
            try:
                response = httpx.get(self.url + path, timeout=2)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                return
            if response is not None and "failed" in response.text:  # /readyz: a load failed; it will not recover
                raise RuntimeError(f"{self.url}{path}: {response.text}; log: {self.log_path}")
            time.sleep(0.25)
        raise TimeoutError(f"{self.url}{path} not ready after {timeout} s; log: {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the master and its workers at once, as a crashed host would go (no graceful shutdown)."""
        import signal

        children_file = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        children = children_file.read_text().split() if children_file.exists() else []
        for pid in [*children, str(self.process.pid)]:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        # The workers are no longer our children: wait (bounded) until they have exited and closed the socket.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(int(pid)) for pid in children):
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def postgres_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        import pytest

        pytest.skip("many workers are tested on PostgreSQL + Redis: set DATABASE_URL=postgres://... (CI's second run)")
    return url


@contextmanager
def fresh_postgres_and_redis(prefix: str, redis_url: str):
    """A new PostgreSQL database beside DATABASE_URL's (its URL is yielded) and an emptied Redis db, for servers
    under test; both dropped or emptied again afterwards. Skips without PostgreSQL or Redis."""
    import psycopg
    import pytest
    import redis

    base = urlparse(postgres_url())
    redis_client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
    try:
        redis_client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {redis_url} (CI starts one)")
    redis_client.flushdb()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_url = urlunparse(base._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunparse(base._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        redis_client.flushdb()
