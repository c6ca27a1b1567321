import pytest

from accounts import clock
from accounts.keys import KEY_LENGTH, PREFIX, key_generate, key_parse
from accounts.models import ApiKey


def test_generated_keys_parse_and_carry_a_readable_prefix():
    plaintext, lookup_id, hashed = key_generate()
    assert plaintext.startswith(PREFIX) and len(plaintext) == KEY_LENGTH
    parsed = key_parse(plaintext)
    assert parsed.lookup_id == lookup_id and parsed.hashed == hashed


def test_a_mistyped_key_fails_its_checksum():
    plaintext, _, _ = key_generate()
    position = len(PREFIX) + 20
    typo = plaintext[:position] + ("a" if plaintext[position] != "a" else "b") + plaintext[position + 1 :]
    assert key_parse(typo) is None
    assert key_parse("sk-sluice-short") is None
    assert key_parse(plaintext.replace("sk-sluice-", "sk-other--")) is None


def test_the_database_holds_no_plaintext(api_key):
    key = ApiKey.objects.get()
    stored = " ".join(str(value) for value in key.__dict__.values())
    assert api_key not in stored
    assert api_key[len(PREFIX) + 12 : -6] not in stored  # not even the secret part


def test_it_rejects_a_missing_key(anonymous):
    response = anonymous.get("/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_it_rejects_a_malformed_key_without_a_database_query(client, django_assert_num_queries, db):
    with django_assert_num_queries(0):
        response = client.get("/v1/models", HTTP_AUTHORIZATION="Bearer sk-sluice-not-a-key")
    assert response.status_code == 401
    assert "malformed" in response.json()["error"]["message"]


def test_it_rejects_an_unknown_well_formed_key(client, db):
    plaintext, _, _ = key_generate()
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 401
    assert response.json()["error"] == {
        "message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None, "code": "invalid_api_key",
    }


def test_it_rejects_a_revoked_key(api, api_key):
    ApiKey.objects.update(revoked_at=clock.now())
    response = api.get("/v1/models")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_it_rejects_an_expired_key(api, monkeypatch):
    from datetime import timedelta

    start = clock.now()
    ApiKey.objects.update(expires_at=start + timedelta(hours=1))
    assert api.get("/v1/models").status_code == 200
    monkeypatch.setattr(clock, "now", lambda: start + timedelta(hours=1, seconds=1))
    response = api.get("/v1/models")
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


def test_it_rejects_keys_of_an_inactive_account(api, account):
    account.is_active = False
    account.save()
    response = api.get("/v1/models")
    assert response.status_code == 401 and "inactive" in response.json()["error"]["message"]


def test_it_rejects_other_auth_schemes(client, api_key):
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Basic {api_key}")
    assert response.status_code == 401


@pytest.mark.django_db
def test_create_api_key_prints_the_plaintext_alone_on_the_last_line():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_key", "--account", "cli", stdout=out)
    last_line = out.getvalue().strip().splitlines()[-1]
    assert key_parse(last_line) is not None
    assert ApiKey.objects.get().account.name == "cli"
