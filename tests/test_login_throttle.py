"""The sign-in throttle (django-axes) on the admin's login: per address and per username, through the real
middleware and authentication backends, on the real database. The cool-off passes on an injected clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

PASSWORD = "the-right-password-9f3k"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def operator(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # 200 sign-ins, not 200 PBKDF2s
    return get_user_model().objects.create_superuser("operator", "ops@example.com", PASSWORD)


@pytest.fixture
def login_clock(monkeypatch):
    """The clock Django and django-axes read: axes stamps an attempt with ``axes.handlers.proxy.now`` when it
    updates a record and with ``django.utils.timezone.now`` (``auto_now_add``) when it creates one, and counts
    the failures within a cool-off of it. Moving both moves the cool-off without sleeping."""
    import axes.attempts
    import axes.handlers.proxy

    class Clock:
        current = timezone.now()

        def now(self):
            return self.current

        def advance(self, **delta):
            self.current += timedelta(**delta)

    clock = Clock()
    for module in (timezone, axes.handlers.proxy, axes.attempts):
        monkeypatch.setattr(module, "now", clock.now)
    return clock


def sign_in(client, username, password, address):
    client.cookies.clear()
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_sixty_wrong_passwords_for_one_user_from_many_addresses_lock_that_user_until_the_cool_off(
    client, operator, login_clock, settings
):
    answers = [sign_in(client, "operator", f"guess-{n}", f"10.0.{n}.1").status_code for n in range(60)]
    # The form answers 200 ("enter a correct username and password") until the limit, then the lockout page.
    assert answers[: settings.AXES_FAILURE_LIMIT - 1] == [200] * (settings.AXES_FAILURE_LIMIT - 1)
    assert set(answers[settings.AXES_FAILURE_LIMIT :]) == {429}

    refused = sign_in(client, "operator", PASSWORD, "192.0.2.77")  # the right password, from a fresh address
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.content.decode()
    assert "operator" in refused.content.decode()

    login_clock.advance(seconds=settings.AXES_COOLOFF_TIME.total_seconds() - 1)
    assert sign_in(client, "operator", PASSWORD, "192.0.2.77").status_code == 429  # not yet

    login_clock.advance(seconds=settings.AXES_COOLOFF_TIME.total_seconds() + 1)  # a full cool-off with no attempt
    assert signed_in(sign_in(client, "operator", PASSWORD, "192.0.2.77"))


def test_sixty_wrong_passwords_from_one_address_lock_that_address_for_every_username(
    client, operator, login_clock, settings
):
    for n in range(60):
        sign_in(client, f"someone-{n}", "guess", "198.51.100.9")

    assert sign_in(client, "operator", PASSWORD, "198.51.100.9").status_code == 429
    # The user itself is not locked: from another address the right password works.
    assert signed_in(sign_in(client, "operator", PASSWORD, "198.51.100.10"))

    login_clock.advance(seconds=settings.AXES_COOLOFF_TIME.total_seconds() + 1)
    assert signed_in(sign_in(client, "operator", PASSWORD, "198.51.100.9"))


def test_a_failure_during_the_lockout_starts_the_cool_off_again(client, operator, login_clock, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "operator", f"guess-{n}", "203.0.113.5")
    login_clock.advance(seconds=settings.AXES_COOLOFF_TIME.total_seconds() - 10)
    sign_in(client, "operator", "one-more-guess", "203.0.113.5")
    login_clock.advance(seconds=20)  # past the first cool-off, inside the one the last failure started

    assert sign_in(client, "operator", PASSWORD, "203.0.113.5").status_code == 429


def test_signing_in_clears_the_failures_so_they_do_not_add_up_across_sessions(client, operator, login_clock, settings):
    below_limit = settings.AXES_FAILURE_LIMIT - 1
    for round_ in range(3):
        for n in range(below_limit):
            assert sign_in(client, "operator", f"typo-{round_}-{n}", "203.0.113.8").status_code == 200
        assert signed_in(sign_in(client, "operator", PASSWORD, "203.0.113.8"))


def test_the_lockout_page_is_a_429_under_the_content_security_policy(client, operator, login_clock, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        response = sign_in(client, "operator", f"guess-{n}", "203.0.113.9")

    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "Try again after 0:15:00" in response.content.decode()


def test_behind_a_proxy_the_address_counted_is_the_one_the_proxy_saw(client, operator, login_clock, settings):
    settings.SLUICE_TRUSTED_PROXY_HOPS = 1
    for n in range(settings.AXES_FAILURE_LIMIT):
        # Every request comes from the proxy; the attacker also writes a fresh address of its own each time.
        client.post(LOGIN, {"username": f"someone-{n}", "password": "guess"}, REMOTE_ADDR="10.0.0.2",
                    HTTP_X_FORWARDED_FOR=f"1.2.3.{n}, 203.0.113.50")

    def from_behind_the_proxy(client_address):
        client.cookies.clear()
        return client.post(LOGIN, {"username": "operator", "password": PASSWORD}, REMOTE_ADDR="10.0.0.2",
                           HTTP_X_FORWARDED_FOR=client_address)

    assert from_behind_the_proxy("203.0.113.50").status_code == 429  # the attacker's real address is locked
    assert signed_in(from_behind_the_proxy("198.51.100.20"))  # everyone else behind the same proxy is not
