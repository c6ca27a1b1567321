"""Key lifecycle through /v1/keys: the holder of a keys:manage key manages its own account's keys only."""

from datetime import timedelta

import pytest

from accounts.models import ApiKey
from accounts.services import account_get_or_create, key_create
from tests.conftest import MODEL, Api


@pytest.fixture
def manager(client, account):
    account.requests_per_minute = 100
    account.save()
    return Api(client, key_create(account=account, name="admin key").plaintext)


def test_creating_a_key_returns_its_plaintext_once(manager, client):
    created = manager.post("/v1/keys", {"name": "ci", "scopes": ["inference"]})
    assert created.status_code == 201
    plaintext = created.json()["value"]
    assert Api(client, plaintext).post(
        "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    ).status_code == 200
    listed = manager.get("/v1/keys").json()
    assert plaintext not in str(listed)
    assert all("value" not in key for key in listed["data"])
    one = manager.get(f"/v1/keys/{created.json()['id']}").json()
    assert "value" not in one and one["redacted_value"].endswith(plaintext[-4:])


def test_a_key_cannot_see_or_touch_another_accounts_keys(manager):
    stranger = key_create(account=account_get_or_create(name="other co")).key
    assert manager.get(f"/v1/keys/{stranger.lookup_id}").status_code == 404
    assert manager.post(f"/v1/keys/{stranger.lookup_id}/revoke").status_code == 404
    assert ApiKey.objects.get(pk=stranger.pk).revoked_at is None
    assert stranger.lookup_id not in str(manager.get("/v1/keys").json())


def test_managing_keys_needs_the_keys_manage_scope(api, client, account):
    limited = Api(client, key_create(account=account, scopes=["inference"]).plaintext)
    response = limited.get("/v1/keys")
    assert response.status_code == 403 and "keys:manage" in response.json()["error"]["message"]


def test_revoking_is_immediate_and_irreversible(manager, client, account):
    victim = key_create(account=account, name="leaked")
    revoked = manager.post(f"/v1/keys/{victim.key.lookup_id}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    response = Api(client, victim.plaintext).get("/v1/models")
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]
    assert manager.patch(f"/v1/keys/{victim.key.lookup_id}", {"revoked_at": None}).json()["revoked_at"]


def test_rotation_gives_a_new_key_and_the_old_one_works_until_its_grace_ends(manager, client, account, clock):
    old = key_create(account=account, name="svc")
    rotated = manager.post(f"/v1/keys/{old.key.lookup_id}/rotate", {"grace_seconds": 600})
    assert rotated.status_code == 201
    new_plaintext = rotated.json()["value"]
    assert new_plaintext != old.plaintext
    assert Api(client, old.plaintext).get("/v1/models").status_code == 200
    clock.advance(seconds=601)
    assert Api(client, old.plaintext).get("/v1/models").status_code == 401
    assert Api(client, new_plaintext).get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    "body, param",
    [
        ({"requests_per_minute": 10_000}, "requests_per_minute"),  # above the account's 100
        ({"tokens_per_minute": 10**15}, "tokens_per_minute"),
        ({"requests_per_minute": -1}, "requests_per_minute"),
        ({"account": 999}, "account"),
        ({"scopes": ["root"]}, "scopes[0]"),
    ],
)
def test_it_refuses_raising_limits_changing_account_or_absurd_values(manager, account, body, param):
    before = list(ApiKey.objects.values_list("pk", "requests_per_minute", "account_id"))
    response = manager.post("/v1/keys", body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param
    assert list(ApiKey.objects.values_list("pk", "requests_per_minute", "account_id")) == before


def test_it_refuses_raising_an_existing_keys_limits(manager, account):
    key = ApiKey.objects.get(name="admin key")
    response = manager.patch(f"/v1/keys/{key.lookup_id}", {"requests_per_minute": 1000})
    assert response.status_code == 400
    key.refresh_from_db()
    assert key.requests_per_minute is None


def test_a_key_can_lower_its_own_limits(manager, account):
    key = ApiKey.objects.get(name="admin key")
    response = manager.patch(f"/v1/keys/{key.lookup_id}", {"requests_per_minute": 5, "name": "renamed"})
    assert response.status_code == 200
    key.refresh_from_db()
    assert (key.requests_per_minute, key.name) == (5, "renamed")


def test_the_expiry_of_a_created_key_is_honoured(manager, client, clock):
    expires = (clock.now() + timedelta(hours=1)).isoformat()
    plaintext = manager.post("/v1/keys", {"expires_at": expires}).json()["value"]
    assert Api(client, plaintext).get("/v1/models").status_code == 200
    clock.advance(hours=2)
    assert Api(client, plaintext).get("/v1/models").status_code == 401


def test_management_commands_revoke_and_rotate(account, db):
    from io import StringIO

    from django.core.management import call_command

    from accounts.keys import key_parse

    key = key_create(account=account).key
    out = StringIO()
    call_command("rotate_api_key", key.lookup_id, "--grace-seconds", "0", stdout=out)
    assert key_parse(out.getvalue().strip().splitlines()[-1]) is not None
    call_command("revoke_api_key", key.lookup_id, stdout=StringIO())
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    listing = StringIO()
    call_command("list_api_keys", stdout=listing)
    assert "revoked" in listing.getvalue() and key.secret_hash not in listing.getvalue()
