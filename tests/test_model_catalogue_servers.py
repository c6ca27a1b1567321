"""The model catalogue changed at run time, seen by two real gunicorn workers on PostgreSQL + Redis.

Two servers of one worker each (so each request reaches a known worker), a test upstream (tests/upstream_stub.py)
in this process, and a staff user who edits the catalogue through the admin's pages and the staff API, as an
operator would, over HTTP. Each worker polls the catalogue's version every SLUICE_CATALOGUE_POLL_S.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.servers import Server, fresh_postgres_and_redis, manage, server_env
from tests.upstream_stub import StubUpstream

pytestmark = pytest.mark.server

REDIS_URL = "redis://127.0.0.1:6379/9"
MODEL = "SmolLM2-135M-Instruct"
POLL_S = 2
BOUND_S = 10
UPSTREAM_KEY = "sk-upstream-never-shown-0451"
STAFF_PASSWORD = "pw-for-the-catalogue-test"

SETUP = """
from django.contrib.auth import get_user_model
from accounts.models import Account
from accounts.services import account_get_or_create, key_create
from moderation.models import ModerationPolicy

ModerationPolicy.objects.create(name="off", check_input=False, check_output=False)
account = account_get_or_create(name="catalogue")
Account.objects.filter(pk=account.pk).update(requests_per_minute=10**6, tokens_per_minute=10**9)
get_user_model().objects.create_superuser("ops", "ops@example.com", "PASSWORD")
print(key_create(account=account).plaintext)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with fresh_postgres_and_redis("sluice_catalogue", REDIS_URL) as database_url:
        yield from _cluster(tmp_path_factory, database_url)


def _cluster(tmp_path_factory, database_url):
    folder = tmp_path_factory.mktemp("catalogue")
    env = server_env(
        DATABASE_URL=database_url, CACHE_URL=REDIS_URL, SLUICE_ENGINE="fake",
        # The staff user signs in over plain http here (production sends those cookies over HTTPS only).
        SESSION_COOKIE_SECURE="0", CSRF_COOKIE_SECURE="0", SLUICE_CATALOGUE_POLL_S=str(POLL_S), SLUICE_LOG_FORMAT="json",
        LOG_LEVEL="DEBUG", SLUICE_UPSTREAM_HEALTH_INTERVAL_S="1",
    )
    servers = [Server(env, workers=1, log_path=folder / f"worker{i}.log") for i in range(2)]
    stubs = [StubUpstream([f"from stub {i}", " and more", " and the end."]).start() for i in range(2)]
    try:
        manage(env, "migrate", "--noinput")
        key = manage(env, "shell", "-c", SETUP.replace("PASSWORD", STAFF_PASSWORD)).strip().splitlines()[-1]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda server: server.start(), servers))
        yield servers, stubs, key
    finally:
        for server in servers:
            server.stop()
        for stub in stubs:
            stub.stop()


def staff_session(server: Server) -> httpx.Client:
    session = httpx.Client(base_url=server.url, timeout=30)
    page = session.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    login = session.post("/admin/login/?next=/admin/", data={
        "username": "ops", "password": STAFF_PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/"})
    assert login.status_code == 302, login.text[:500]
    return session


def api_call(session: httpx.Client, method: str, path: str, body=None) -> httpx.Response:
    return session.request(method, path, content=json.dumps(body) if body is not None else None,
                           headers={"Content-Type": "application/json", "X-CSRFToken": session.cookies["csrftoken"]})


def chat(server: Server, key: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=60)


def reply_text(response: httpx.Response) -> str | None:
    return response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else None


def seconds_until(condition, since: float | None = None) -> float:
    """Poll (bounded) until ``condition()`` holds: how long after ``since`` the first attempt that held was sent.
    (Measured at the attempt's start, so that a slow machine's request latency is not counted as pickup time.)"""
    since = time.monotonic() if since is None else since
    while True:
        attempt = time.monotonic()
        if condition():
            return attempt - since
        assert attempt - since < BOUND_S + 20, "not within the bound"
        time.sleep(0.1)


def pickup_seconds(servers, condition) -> list[float]:
    """Each server's pickup time of a change made just now, polled side by side."""
    since = time.monotonic()
    with ThreadPoolExecutor(len(servers)) as pool:
        return list(pool.map(lambda server: seconds_until(lambda: condition(server), since), servers))


def refused_as_unknown(response: httpx.Response) -> bool:
    return response.status_code == 400 and response.json()["error"]["code"] == "model_not_found"


def test_a_model_added_in_the_admins_form_is_served_by_both_workers_within_the_bound(cluster):
    servers, stubs, key = cluster
    for server in servers:  # each has read the catalogue, and served once (first-request costs are paid)
        assert refused_as_unknown(chat(server, key, "hot")) and chat(server, key, MODEL).status_code == 200
    session = staff_session(servers[0])
    form = session.get("/admin/inference/catalogueentry/add/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    added = session.post("/admin/inference/catalogueentry/add/", data={
        "csrfmiddlewaretoken": token, "name": "hot", "enabled": "on", "alias_of": "", "urls": json.dumps([stubs[0].url]),
        "upstream_model": "stub-model", "tokenizer": "none", "context_window": "", "defaults": "{}",
        "api_key": UPSTREAM_KEY, "api_key_env": ""})
    assert added.status_code == 302, added.text[:2000]
    took = pickup_seconds(servers, lambda s: reply_text(chat(s, key, "hot")) == "from stub 0 and more and the end.")
    assert max(took) <= BOUND_S, took
    assert stubs[0].requests[-1]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_a_disabled_model_is_refused_by_both_workers_like_an_unknown_one(cluster):
    servers, stubs, key = cluster
    session = staff_session(servers[1])
    assert api_call(session, "POST", "/v1/admin/models", {
        "name": "cold", "urls": [stubs[0].url], "api_key": UPSTREAM_KEY}).status_code == 201
    for server in servers:
        seconds_until(lambda s=server: chat(s, key, "cold").status_code == 200)
    assert api_call(session, "PATCH", "/v1/admin/models/cold", {"enabled": False}).status_code == 200
    took = pickup_seconds(servers, lambda s: refused_as_unknown(chat(s, key, "cold")))
    assert max(took) <= BOUND_S, took


def test_a_stream_running_while_its_model_is_changed_finishes_intact(cluster):
    servers, stubs, key = cluster
    session = staff_session(servers[0])
    assert api_call(session, "POST", "/v1/admin/models", {"name": "moving", "urls": [stubs[1].url]}).status_code == 201
    seconds_until(lambda: chat(servers[0], key, "moving").status_code == 200)
    stubs[1].pause_after, stubs[1].resume = 1, threading.Event()
    stubs[1].paused.clear()
    received: list[str] = []
    body = {"model": "moving", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{servers[0].url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as stream:
        lines = stream.iter_lines()
        for line in lines:  # up to the first piece of text: the stream is running
            received.append(line)
            if "from stub 1" in line:
                break
        assert stubs[1].paused.wait(10)
        # Moved to the other upstream while this stream is mid-way; new requests go there.
        assert api_call(session, "PATCH", "/v1/admin/models/moving", {"urls": [stubs[0].url]}).status_code == 200
        seconds_until(lambda: reply_text(chat(servers[0], key, "moving")) == "from stub 0 and more and the end.")
        stubs[1].resume.set()
        received.extend(lines)
    payloads = [json.loads(line[6:]) for line in received if line.startswith("data: {")]
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"])
    assert text == "from stub 1 and more and the end."
    assert received[-1] == "data: [DONE]" or "data: [DONE]" in received
    assert [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]][-1] == "stop"
    stubs[1].pause_after = None


def test_the_upstream_key_never_appears_in_an_admin_page_an_api_response_or_a_log_line(cluster):
    servers, _, _ = cluster
    session = staff_session(servers[0])
    pages = [api_call(session, "GET", "/v1/admin/models"), api_call(session, "GET", "/v1/admin/models/hot"),
             session.get("/admin/inference/catalogueentry/"), session.get("/admin/inference/cataloguechange/")]
    entry_id = re.search(r'/admin/inference/catalogueentry/(\d+)/change/', pages[2].text).group(1)
    pages.append(session.get(f"/admin/inference/catalogueentry/{entry_id}/change/"))
    assert all(page.status_code == 200 for page in pages)
    assert "api_key_set" in pages[0].text and "yes (encrypted)" in pages[-1].text
    for page in pages:
        assert UPSTREAM_KEY not in page.text
    for server in servers:
        log = server.log_path.read_text()
        assert "hot" in log and UPSTREAM_KEY not in log
