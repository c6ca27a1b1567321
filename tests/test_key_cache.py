"""The in-process key cache: no database read per request, and a revocation felt within SLUICE_KEY_CACHE_S."""

import pytest

from accounts.models import ApiKey
from accounts.services import KeyRefused, key_authenticate, key_revoke


@pytest.fixture
def cached(settings):
    settings.SLUICE_KEY_CACHE_S = 5


def test_a_cached_key_authenticates_without_reading_the_database(cached, api_key, django_assert_num_queries):
    key_authenticate(plaintext=api_key)  # first use reads the key (and stamps last_used_at)
    with django_assert_num_queries(0):
        assert key_authenticate(plaintext=api_key).account.name == "acme"


def test_a_key_revoked_by_another_worker_stops_working_here_within_the_cache_bound(cached, api_key, clock):
    key_authenticate(plaintext=api_key)
    ApiKey.objects.update(revoked_at=clock.now())  # another worker or host revoked it: this one's cache is stale
    clock.advance(seconds=4)
    assert key_authenticate(plaintext=api_key)  # still inside the bound
    clock.advance(seconds=1)
    with pytest.raises(KeyRefused, match="revoked"):
        key_authenticate(plaintext=api_key)


def test_revoking_through_the_service_is_felt_at_once_in_this_worker(cached, api_key):
    key = key_authenticate(plaintext=api_key)
    key_revoke(key=ApiKey.objects.get(pk=key.pk))
    with pytest.raises(KeyRefused, match="revoked"):
        key_authenticate(plaintext=api_key)


def test_the_secret_is_still_checked_for_a_cached_key(cached, api_key):
    from accounts.keys import PREFIX, _checksum

    key_authenticate(plaintext=api_key)
    body = api_key[len(PREFIX):-6]
    body = body[:-1] + ("A" if body[-1] != "A" else "B")  # same lookup id, another secret, a valid checksum
    with pytest.raises(KeyRefused, match="Incorrect API key"):
        key_authenticate(plaintext=PREFIX + body + _checksum(body))


def test_expiry_does_not_wait_for_the_cache(cached, api_key, clock):
    from datetime import timedelta

    ApiKey.objects.update(expires_at=clock.now() + timedelta(seconds=1))
    key_authenticate(plaintext=api_key)
    clock.advance(seconds=2)
    with pytest.raises(KeyRefused, match="expired"):
        key_authenticate(plaintext=api_key)


def test_a_zero_bound_turns_the_cache_off(settings, api_key, clock):
    settings.SLUICE_KEY_CACHE_S = 0
    key_authenticate(plaintext=api_key)
    ApiKey.objects.update(revoked_at=clock.now())
    with pytest.raises(KeyRefused, match="revoked"):
        key_authenticate(plaintext=api_key)
