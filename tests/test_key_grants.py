"""A keys:manage key gives no key more than it holds (issue 13, item 6), and the key edge cases of rotation
and expiry are clear errors that change nothing (item 15). Through /v1/keys, with the real auth."""

from datetime import timedelta

import pytest

from accounts.models import SCOPE_INFERENCE, SCOPE_KEYS_MANAGE, ApiKey
from accounts.services import key_create
from tests.conftest import MODEL, Api

OTHER_MODEL = "another-model"


@pytest.fixture
def restricted(client, account):
    """A manager that may only run inference on MODEL, at 10 requests a minute, with its own daily quota."""
    account.requests_per_minute = 100
    account.save()
    created = key_create(account=account, name="restricted manager", scopes=[SCOPE_KEYS_MANAGE, SCOPE_INFERENCE],
                         allowed_models=[MODEL])
    created.key.requests_per_minute = 10
    created.key.daily_token_quota = 5000
    created.key.allowed_endpoints = ["chat.completions"]
    created.key.save()
    return Api(client, created.plaintext), created.key


def keys_snapshot():
    return sorted(ApiKey.objects.values_list("pk", "scopes", "allowed_models", "requests_per_minute",
                                             "daily_token_quota", "expires_at", "suspended_at"))


@pytest.mark.parametrize(
    "body, param",
    [
        ({"scopes": ["inference", "usage:read"]}, "scopes"),
        ({"scopes": ["keys:manage", "moderation"]}, "scopes"),
        ({"allowed_models": []}, "allowed_models"),  # empty would mean every model
        ({"allowed_models": [MODEL, OTHER_MODEL]}, "allowed_models"),
        ({"requests_per_minute": 11}, "requests_per_minute"),  # below the account's 100, above its own 10
        ({"daily_token_quota": 5001}, "daily_token_quota"),
        ({"daily_token_quota": None}, "daily_token_quota"),  # no quota of its own would be more than 5000
    ],
)
def test_a_manager_key_cannot_create_a_key_stronger_than_itself(restricted, body, param):
    manager, _ = restricted
    before = keys_snapshot()
    response = manager.post("/v1/keys", body)
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("permission_error", "permission_denied", param)
    assert keys_snapshot() == before


def test_a_key_created_by_a_restricted_manager_inherits_its_restrictions(restricted, client):
    manager, own = restricted
    response = manager.post("/v1/keys", {"name": "ci", "scopes": ["inference"], "requests_per_minute": 5})
    assert response.status_code == 201, response.content
    created = ApiKey.objects.get(lookup_id=response.json()["id"])
    assert (created.scopes, created.allowed_models, created.allowed_endpoints) == (["inference"], [MODEL],
                                                                                   ["chat.completions"])
    assert (created.requests_per_minute, created.daily_token_quota) == (5, 5000)
    child = Api(client, response.json()["value"])
    assert child.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
                      ).status_code == 200
    assert child.post("/v1/completions", {"model": MODEL, "prompt": "x"}).status_code == 403  # not its endpoint


def test_a_manager_key_with_an_expiry_cannot_create_a_key_that_outlives_it(client, account, clock):
    expires = clock.now() + timedelta(days=1)
    manager = Api(client, key_create(account=account, scopes=[SCOPE_KEYS_MANAGE], expires_at=expires).plaintext)
    before = keys_snapshot()
    forever = manager.post("/v1/keys", {"name": "forever", "expires_at": None})
    later = manager.post("/v1/keys", {"name": "later", "expires_at": (expires + timedelta(days=1)).isoformat()})
    for response in (forever, later):
        assert response.status_code == 403 and response.json()["error"]["param"] == "expires_at"
    assert keys_snapshot() == before
    inherited = manager.post("/v1/keys", {"name": "inherits"})
    assert inherited.status_code == 201
    assert ApiKey.objects.get(lookup_id=inherited.json()["id"]).expires_at == expires


@pytest.mark.parametrize(
    "body, param",
    [
        ({"scopes": ["keys:manage", "inference", "usage:read"]}, "scopes"),
        ({"allowed_models": []}, "allowed_models"),
        ({"requests_per_minute": 50}, "requests_per_minute"),
        ({"requests_per_minute": None}, "requests_per_minute"),  # inheriting the account's 100 is more
    ],
)
def test_a_manager_key_cannot_patch_itself_or_another_key_above_itself(restricted, account, body, param):
    manager, own = restricted
    other = key_create(account=account, name="other", scopes=["inference"], allowed_models=[MODEL]).key
    before = keys_snapshot()
    for target in (own, other):
        response = manager.patch(f"/v1/keys/{target.lookup_id}", body)
        assert response.status_code == 403, response.content
        assert response.json()["error"]["param"] == param
    assert keys_snapshot() == before
    assert manager.patch(f"/v1/keys/{own.lookup_id}", {"requests_per_minute": 3}).status_code == 200


def test_a_manager_key_cannot_rotate_a_stronger_key_to_get_its_plaintext(restricted, account):
    manager, _ = restricted
    stronger = key_create(account=account, name="admin").key  # every scope, every model
    before = keys_snapshot()
    response = manager.post(f"/v1/keys/{stronger.lookup_id}/rotate")
    assert response.status_code == 403 and "value" not in response.json()
    assert keys_snapshot() == before


# --- 15. rotation and expiry edge cases ---------------------------------------------------------------


@pytest.fixture
def manager(client, account):
    return Api(client, key_create(account=account, name="admin key").plaintext)


def test_an_expired_key_cannot_be_rotated(manager, account, clock):
    old = key_create(account=account, name="old", expires_at=clock.now() + timedelta(hours=1)).key
    clock.advance(hours=2)
    before = keys_snapshot()
    response = manager.post(f"/v1/keys/{old.lookup_id}/rotate")
    assert response.status_code == 409 and response.json()["error"]["code"] == "key_expired"
    assert keys_snapshot() == before


def test_a_suspended_key_cannot_be_rotated_into_an_unsuspended_one(manager, account, clock):
    old = key_create(account=account, name="struck").key
    ApiKey.objects.filter(pk=old.pk).update(suspended_at=clock.now())
    before = keys_snapshot()
    response = manager.post(f"/v1/keys/{old.lookup_id}/rotate")
    assert response.status_code == 409 and response.json()["error"]["code"] == "key_suspended"
    assert keys_snapshot() == before


def test_a_key_is_rotated_once_a_second_rotation_within_its_grace_is_a_409(manager, account, client, clock):
    old = key_create(account=account, name="svc")
    first = manager.post(f"/v1/keys/{old.key.lookup_id}/rotate", {"grace_seconds": 600})
    assert first.status_code == 201
    before = keys_snapshot()
    second = manager.post(f"/v1/keys/{old.key.lookup_id}/rotate", {"grace_seconds": 600})
    assert second.status_code == 409
    error = second.json()["error"]
    assert error["code"] == "key_already_rotated" and first.json()["id"] in error["message"]
    assert keys_snapshot() == before
    assert Api(client, old.plaintext).get("/v1/models").status_code == 200  # still in its grace
    successor = manager.post(f"/v1/keys/{first.json()['id']}/rotate")  # the successor rotates as usual
    assert successor.status_code == 201


def test_patching_expires_at_cannot_revive_an_expired_key(manager, account, client, clock):
    old = key_create(account=account, name="old", expires_at=clock.now() + timedelta(hours=1))
    clock.advance(hours=2)
    for value in (None, (clock.now() + timedelta(days=30)).isoformat()):
        response = manager.patch(f"/v1/keys/{old.key.lookup_id}", {"expires_at": value})
        assert response.status_code == 409 and response.json()["error"]["code"] == "key_expired"
    assert ApiKey.objects.get(pk=old.key.pk).expires_at == clock.now() - timedelta(hours=1)
    assert Api(client, old.plaintext).get("/v1/models").status_code == 401
    assert manager.patch(f"/v1/keys/{old.key.lookup_id}", {"name": "renamed"}).status_code == 200


def test_patching_expires_at_cannot_extend_a_rotated_keys_grace(manager, account, client, clock):
    old = key_create(account=account, name="svc")
    assert manager.post(f"/v1/keys/{old.key.lookup_id}/rotate", {"grace_seconds": 60}).status_code == 201
    grace_end = ApiKey.objects.get(pk=old.key.pk).expires_at
    response = manager.patch(f"/v1/keys/{old.key.lookup_id}", {"expires_at": None})
    assert response.status_code == 409 and response.json()["error"]["code"] == "key_already_rotated"
    assert ApiKey.objects.get(pk=old.key.pk).expires_at == grace_end
    clock.advance(seconds=61)
    assert Api(client, old.plaintext).get("/v1/models").status_code == 401


@pytest.mark.parametrize("path", ["/v1/keys/ab%00cd", "/v1/keys/ab%00cd/rotate", "/v1/keys/ab%2Fcd", "/v1/keys/%F0%9F%94%91"])
def test_a_key_id_that_is_not_base62_is_a_json_404(manager, path):
    response = manager.post(path) if path.endswith("rotate") else manager.get(path)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_the_rotate_command_refuses_an_expired_key_too(account, clock):
    from io import StringIO

    from django.core.management import CommandError, call_command

    old = key_create(account=account, expires_at=clock.now() - timedelta(seconds=1)).key
    before = keys_snapshot()
    with pytest.raises(CommandError, match="expired"):
        call_command("rotate_api_key", old.lookup_id, stdout=StringIO())
    assert keys_snapshot() == before
