"""Prometheus /metrics (who may read it, what it counts, across gunicorn workers) and the JSON request log."""

import ipaddress
import json
import logging
import time

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import Account
from inference.engines.factory import set_engine
from inference.engines.fake import FakeEngine
from platform.logs import JsonFormatter
from tests.conftest import MODEL
from tests.servers import Server, manage, server_env
from tests.test_remote_engine import REMOTE, dead_url, remote_config

CHAT = "/v1/chat/completions"
TOKEN = "metrics-secret"


def chat_body(content="Hi", **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(anonymous, **headers) -> dict:
    response = anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode()) for s in family.samples
    }


# --- who may read /metrics ---

def test_metrics_are_off_unless_a_token_or_networks_are_configured(anonymous, db):
    assert anonymous.get("/metrics").status_code == 404


def test_metrics_need_the_bearer_token_when_one_is_set(anonymous, settings, db):
    settings.SLUICE_METRICS_TOKEN = TOKEN
    assert anonymous.get("/metrics").status_code == 403
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    response = anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")


def test_metrics_need_an_allowed_network_when_networks_are_set(anonymous, settings, db):
    settings.SLUICE_METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    assert anonymous.get("/metrics").status_code == 403  # the test client comes from 127.0.0.1
    assert anonymous.get("/metrics", REMOTE_ADDR="10.2.3.4").status_code == 200
    settings.SLUICE_METRICS_TOKEN = TOKEN  # both set: both must pass
    assert anonymous.get("/metrics", REMOTE_ADDR="10.2.3.4").status_code == 403
    assert anonymous.get("/metrics", REMOTE_ADDR="10.2.3.4", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


# --- what it counts ---

def test_requests_tokens_latency_and_first_token_are_counted_per_model_and_endpoint(api, fake_engine):
    labels = {"endpoint": "v1/chat/completions", "model": MODEL}
    before = {
        "requests": sample("sluice_requests_total", status="200", **labels),
        "prompt": sample("sluice_tokens_total", kind="prompt", **labels),
        "completion": sample("sluice_tokens_total", kind="completion", **labels),
        "latency": sample("sluice_request_duration_seconds_count", **labels),
        "ttft": sample("sluice_time_to_first_token_seconds_count", **labels),
    }
    fake_engine.replies.append("Hello there.")
    usage = api.post(CHAT, chat_body()).json()["usage"]
    fake_engine.replies.append("Streamed.")
    b"".join(api.post(CHAT, chat_body(stream=True)).streaming_content)
    assert sample("sluice_requests_total", status="200", **labels) == before["requests"] + 2
    assert sample("sluice_tokens_total", kind="completion", **labels) == before["completion"] + 12 + 9
    assert sample("sluice_tokens_total", kind="prompt", **labels) == before["prompt"] + 2 * usage["prompt_tokens"]
    assert sample("sluice_request_duration_seconds_count", **labels) == before["latency"] + 2
    assert sample("sluice_time_to_first_token_seconds_count", **labels) == before["ttft"] + 2


def test_429s_are_counted_by_reason(api, account):
    reasons = ("requests_per_minute", "tokens_per_minute", "quota")
    before = {reason: sample("sluice_rate_limited_total", reason=reason) for reason in reasons}
    Account.objects.filter(pk=account.pk).update(tokens_per_minute=10)
    assert api.post(CHAT, chat_body(max_tokens=50)).status_code == 429
    Account.objects.filter(pk=account.pk).update(tokens_per_minute=100_000, daily_token_quota=10)
    assert api.post(CHAT, chat_body(max_tokens=50)).json()["error"]["code"] == "insufficient_quota"
    Account.objects.filter(pk=account.pk).update(requests_per_minute=1)
    assert [api.get("/v1/models").status_code for _ in range(2)] == [200, 429]
    assert {reason: sample("sluice_rate_limited_total", reason=reason) - before[reason] for reason in reasons} == {
        "requests_per_minute": 1, "tokens_per_minute": 1, "quota": 1,
    }


def test_moderation_actions_are_counted_by_direction_and_action(api):
    before = sample("sluice_moderation_actions_total", direction="input", action="block")
    api.post(CHAT, chat_body("I am going to kill you and your whole family tonight."))
    assert sample("sluice_moderation_actions_total", direction="input", action="block") == before + 1


def test_engine_queue_depth_batch_size_and_upstream_health_are_exported(anonymous, api, settings):
    class BusyEngine(FakeEngine):
        def stats(self):
            return {"waiting": 3, "running": 2, "steps": 10}

    set_engine(BusyEngine(model_id=MODEL))
    settings.SLUICE_METRICS_TOKEN = TOKEN
    dead = dead_url()
    settings.SLUICE_REMOTE_MODELS = remote_config(dead)
    assert api.post(CHAT, chat_body() | {"model": REMOTE}).status_code == 503
    samples = scrape(anonymous)
    assert samples[("sluice_engine_queue_depth", (("model", MODEL),))] == 3
    assert samples[("sluice_engine_batch_size", (("model", MODEL),))] == 2
    upstream = dead.split("//")[1].split("/")[0]
    assert samples[("sluice_upstream_healthy", (("model", REMOTE), ("upstream", upstream)))] == 0
    failed = ("sluice_upstream_requests_total", (("model", REMOTE), ("outcome", "connect_error"), ("upstream", upstream)))
    assert samples[failed] >= 1


# --- the JSON request log ---

def test_with_json_logs_each_request_is_one_json_line_with_ids_and_tokens_never_the_key(api, api_key, settings, caplog, fake_engine):
    settings.SLUICE_LOG_FORMAT = "json"
    fake_engine.replies.append("Hello there.")
    with caplog.at_level(logging.INFO, logger="sluice.request"):
        response = api.post(CHAT, chat_body())
    records = [r for r in caplog.records if r.name == "sluice.request"]
    assert len(records) == 1
    line = JsonFormatter().format(records[0])
    assert "\n" not in line and api_key not in line and api_key[10:22] not in line  # neither the key nor its id part
    fields = json.loads(line)
    key = response.wsgi_request.auth
    assert fields["request_id"] == response["x-request-id"]
    assert (fields["account_id"], fields["key_id"]) == (key.account_id, key.pk)
    assert (fields["model"], fields["endpoint"], fields["status"]) == (MODEL, "v1/chat/completions", 200)
    assert fields["completion_tokens"] == 12 and fields["prompt_tokens"] == response.json()["usage"]["prompt_tokens"]
    assert fields["latency_ms"] >= fields["ttft_ms"] >= 0


def test_plain_logs_have_no_request_line(api, caplog, fake_engine):
    with caplog.at_level(logging.INFO, logger="sluice.request"):
        api.post(CHAT, chat_body())
    assert not [r for r in caplog.records if r.name == "sluice.request"]


# --- a real gunicorn server with two workers ---

@pytest.mark.server
def test_two_gunicorn_workers_report_one_set_of_metrics_and_log_json_lines(tmp_path):
    env = server_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", CACHE_URL="locmem://", SLUICE_ENGINE="fake",
        SLUICE_METRICS_TOKEN=TOKEN, SLUICE_LOG_FORMAT="json",
    )
    manage(env, "migrate", "--noinput")
    key = manage(env, "create_api_key", "--account", "metrics").strip().splitlines()[-1]
    log = tmp_path / "server.log"

    def request_lines() -> list[dict]:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "sluice.request"
                and line["endpoint"] == "v1/chat/completions"]

    server = Server(env, workers=2, log_path=log).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            # New connections, until both workers have served some: the kernel hands a connection to whichever
            # worker accepts first, and the second may still be starting when /readyz first answers.
            sent = 0
            while sent < 12 or (len({line["pid"] for line in request_lines()}) < 2 and sent < 200):
                with httpx.Client(base_url=server.url, timeout=120) as fresh:
                    response = fresh.post("/v1/chat/completions", json=chat_body(max_tokens=3),
                                          headers={"Authorization": f"Bearer {key}"})
                    assert response.status_code == 200
                sent += 1
                if sent >= 12:
                    time.sleep(0.05)  # the worker writes its request line after the response
            totals = []
            for _ in range(6):  # whichever worker answers, it reports every worker's counts
                text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
                totals.append(sum(
                    s.value for family in text_string_to_metric_families(text) for s in family.samples
                    if s.name == "sluice_requests_total" and s.labels["endpoint"] == "v1/chat/completions"
                ))
            assert totals == [sent] * 6
    finally:
        server.stop()
    requests = request_lines()
    assert len(requests) == sent and all(line["status"] == 200 and line["model"] == MODEL for line in requests)
    assert len({line["pid"] for line in requests}) == 2  # both workers served, so the totals above were summed
    assert key not in log.read_text()
