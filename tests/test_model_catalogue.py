"""Remote models and aliases kept in the database: the staff API, the admin, the audit trail, key storage."""

import json

import pytest
from django.contrib.admin.models import LogEntry

from inference.embedding_model import EMBEDDING_MODEL_ID
from inference.models import CatalogueChange, CatalogueEntry, CatalogueVersion
from tests.conftest import MODEL
from tests.upstream_stub import StubUpstream

ADMIN_API = "/v1/admin/models"
CHAT = "/v1/chat/completions"
UPSTREAM_KEY = "sk-upstream-very-secret-4711"


@pytest.fixture
def upstream():
    stub = StubUpstream(["from", " upstream"], usage={"prompt_tokens": 5, "completion_tokens": 2}).start()
    yield stub
    stub.stop()


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-ops-123")
    client.force_login(user)
    return client


def send(client, method, path, body=None):
    return getattr(client, method)(path, data=json.dumps(body) if body is not None else None,
                                   content_type="application/json")


def remote_entry(upstream, name="catalogued", **extra):
    return {"name": name, "urls": [upstream.url], "upstream_model": "their-model", "api_key": UPSTREAM_KEY, **extra}


def chat(model, **extra):
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], **extra}


def test_a_model_added_through_the_staff_api_is_served_at_once_and_its_key_is_never_shown(staff, api, upstream):
    created = send(staff, "post", ADMIN_API, remote_entry(upstream, defaults={"temperature": 0.4}))
    assert created.status_code == 201, created.content
    assert created.json()["api_key_set"] is True and "api_key" not in created.json()
    reply = api.post(CHAT, chat("catalogued"))
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "from upstream"
    sent = upstream.requests[-1]
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}" and sent["body"]["model"] == "their-model"
    assert sent["body"]["temperature"] == 0.4  # the entry's sampling default
    assert "catalogued" in [m["id"] for m in api.get("/v1/models").json()["data"]]
    stored = CatalogueEntry.objects.get(name="catalogued")
    assert stored.api_key_encrypted and UPSTREAM_KEY not in stored.api_key_encrypted
    for response in (created, send(staff, "get", ADMIN_API), send(staff, "get", f"{ADMIN_API}/catalogued")):
        assert UPSTREAM_KEY not in response.content.decode()
    change = CatalogueChange.objects.get()
    assert (change.actor, change.via, change.action, change.model_name) == ("ops", "api", "added", "catalogued")
    assert change.changes["api_key"] == [None, "stored"] and UPSTREAM_KEY not in json.dumps(change.changes)


def test_a_disabled_model_is_refused_like_an_unknown_one_and_a_removed_one_too(staff, api, upstream):
    send(staff, "post", ADMIN_API, remote_entry(upstream))
    assert api.post(CHAT, chat("catalogued")).status_code == 200
    assert send(staff, "patch", f"{ADMIN_API}/catalogued", {"enabled": False}).status_code == 200
    refused = api.post(CHAT, chat("catalogued"))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_found"
    assert "catalogued" not in [m["id"] for m in api.get("/v1/models").json()["data"]]
    send(staff, "patch", f"{ADMIN_API}/catalogued", {"enabled": True})
    assert api.post(CHAT, chat("catalogued")).status_code == 200
    assert send(staff, "delete", f"{ADMIN_API}/catalogued").status_code == 204
    assert api.post(CHAT, chat("catalogued")).json()["error"]["code"] == "model_not_found"
    actions = list(CatalogueChange.objects.order_by("id").values_list("action", "changes"))
    assert [a for a, _ in actions] == ["added", "changed", "changed", "removed"]
    assert actions[1][1] == {"enabled": [True, False]}
    assert CatalogueVersion.objects.get(pk=1).number == 4


def test_an_alias_serves_its_target_under_a_public_name(staff, api, fake_engine):
    assert send(staff, "post", ADMIN_API, {"name": "smol", "alias_of": MODEL}).status_code == 201
    fake_engine.replies.append("local reply")
    reply = api.post(CHAT, chat("smol"))
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "local reply"
    assert [m["id"] for m in api.get("/v1/models").json()["data"]] == [MODEL, "smol", EMBEDDING_MODEL_ID]


def test_an_entry_overrides_and_disables_a_model_seeded_from_the_setting(staff, api, settings, upstream):
    settings.SLUICE_REMOTE_MODELS = {"seeded": {"urls": [upstream.url], "api_key": "", "tokenizer": "none",
                                                "upstream_model": "seeded", "context_window": None, "defaults": {}}}
    assert api.post(CHAT, chat("seeded")).status_code == 200
    send(staff, "post", ADMIN_API, remote_entry(upstream, name="seeded", enabled=False))
    assert api.post(CHAT, chat("seeded")).json()["error"]["code"] == "model_not_found"


def test_an_upstream_key_can_be_named_by_an_environment_variable_instead(staff, api, upstream, monkeypatch):
    monkeypatch.setenv("I17_UPSTREAM_KEY", "from-the-environment")
    entry = {**remote_entry(upstream), "api_key_env": "I17_UPSTREAM_KEY"}
    del entry["api_key"]
    assert send(staff, "post", ADMIN_API, entry).status_code == 201
    api.post(CHAT, chat("catalogued"))
    assert upstream.requests[-1]["authorization"] == "Bearer from-the-environment"
    assert CatalogueEntry.objects.get().api_key_encrypted == ""


@pytest.mark.parametrize("body, param", [
    ({"name": "x", "urls": ["ftp://nope"]}, "urls"),
    ({"name": "x", "urls": []}, "urls"),
    ({"name": "x", "urls": ["http://h/v1"], "defaults": {"temperature": 9}}, "defaults"),
    ({"name": MODEL, "urls": ["http://h/v1"]}, "name"),
    ({"name": "x", "alias_of": "x"}, "alias_of"),
])
def test_a_bad_entry_is_a_400_naming_the_field_and_changes_nothing(staff, body, param):
    response = send(staff, "post", ADMIN_API, body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.content
    assert not CatalogueEntry.objects.exists() and not CatalogueChange.objects.exists()


def test_only_staff_with_the_models_permissions_may_use_the_api(client, api, django_user_model):
    assert api.get(ADMIN_API).status_code in (401, 403)  # an API key, even with every scope, is not staff
    user = django_user_model.objects.create_user("customer", password="pw")
    client.force_login(user)
    assert send(client, "get", ADMIN_API).status_code == 403
    staff_without_permission = django_user_model.objects.create_user("intern", password="pw", is_staff=True)
    client.force_login(staff_without_permission)
    assert send(client, "post", ADMIN_API, {"name": "x", "urls": ["http://h/v1"]}).status_code == 403
    assert not CatalogueEntry.objects.exists()


def test_the_admins_change_form_stores_the_key_encrypted_and_never_renders_it(staff, api, upstream):
    form = {"name": "from-admin", "enabled": "on", "alias_of": "", "urls": json.dumps([upstream.url]),
            "upstream_model": "their-model", "tokenizer": "none", "context_window": "", "defaults": "{}",
            "api_key": UPSTREAM_KEY, "api_key_env": ""}
    added = staff.post("/admin/inference/catalogueentry/add/", form)
    assert added.status_code == 302, added.content.decode()[:2000]
    entry = CatalogueEntry.objects.get(name="from-admin")
    assert api.post(CHAT, chat("from-admin")).status_code == 200
    assert upstream.requests[-1]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    page = staff.get(f"/admin/inference/catalogueentry/{entry.pk}/change/").content.decode()
    assert "yes (encrypted)" in page and UPSTREAM_KEY not in page and entry.api_key_encrypted not in page
    # Saving the form again without a key keeps the stored one.
    staff.post(f"/admin/inference/catalogueentry/{entry.pk}/change/", {**form, "api_key": "", "upstream_model": "other"})
    entry.refresh_from_db()
    assert entry.upstream_model == "other" and entry.api_key_encrypted
    assert LogEntry.objects.filter(object_id=str(entry.pk)).count() == 2
    assert [c.via for c in CatalogueChange.objects.all()] == ["admin", "admin"]
    listing = staff.get("/admin/inference/catalogueentry/").content.decode()
    history = staff.get("/admin/inference/cataloguechange/").content.decode()
    assert UPSTREAM_KEY not in listing and UPSTREAM_KEY not in history
