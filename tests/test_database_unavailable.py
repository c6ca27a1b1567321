"""A database that cannot be reached is a 503 database_unavailable with Retry-After, and no model runs.

The real outage (a PostgreSQL server stopped and started again under a running gunicorn) is in
tests/test_faults.py; these pin the two handlers on any database."""

from django.db import OperationalError
from django.test import Client

from accounts import quotas
from tests.conftest import MODEL

CHAT = "/v1/chat/completions"


def chat(**extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, **extra}


def assert_database_unavailable(response):
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response.json() == {"error": {
        "message": "The service's database is unavailable; retry shortly.", "type": "server_error",
        "param": None, "code": "database_unavailable",
    }}


def test_a_reservation_that_cannot_be_written_is_a_503_and_runs_no_model(api, fake_engine, monkeypatch):
    def database_down(**kwargs):
        raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")

    monkeypatch.setattr(quotas, "quota_reserve", database_down)
    monkeypatch.setattr("accounts.services.quota_reserve", database_down)
    for body in (chat(), chat(stream=True)):
        assert_database_unavailable(api.post(CHAT, body))
    assert fake_engine.submitted == []  # nothing served unmetered


def test_a_database_failure_outside_drf_is_the_same_503(db, monkeypatch):
    from django.contrib.sessions.backends import db as session_db

    def database_down(self, *args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(session_db.SessionStore, "_get_session_from_db", database_down)
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "x" * 32
    assert_database_unavailable(client.get("/admin/"))  # the session is read before any view runs
