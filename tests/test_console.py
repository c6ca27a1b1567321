"""The account holder's console (/console/) through Django's test client: sign-in, invitations, roles,
tenancy, keys, quotas, the playground's key, moderation events, and usage that agrees with the admin's
report and /v1/usage."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core import mail
from django.core.management import call_command

from accounts import clock
from accounts.members import member_invite
from accounts.models import DEVELOPER, OWNER, VIEWER, ApiKey, KeyEvent, Membership, UsageRecord
from accounts.services import account_get_or_create, key_create
from moderation.models import BLOCK, FLAG, ModerationEvent
from tests.conftest import MODEL, Api, sse_payloads

PASSWORD = "a-long-console-password-1"
PAGES = ["usage", "quotas", "keys", "playground", "moderation", "members"]


def person(account, email, role):
    membership = member_invite(account=account, email=email, role=role)
    membership.user.set_password(PASSWORD)
    membership.user.save()
    return membership.user


@pytest.fixture
def acme(db):
    return account_get_or_create(name="acme")


@pytest.fixture
def globex(db):
    return account_get_or_create(name="globex")


def signed_in(client, user):
    client.force_login(user)
    return client


def page(account, name, suffix=""):
    return f"/console/a/{account.pk}/{name}/{suffix}"


def test_an_operator_invites_the_first_owner_whose_one_time_link_sets_a_password_and_signs_in(acme, client):
    out = io.StringIO()
    call_command("invite_member", "--account", "acme", "--email", "Boss@Acme.test", "--base-url",
                 "http://testserver", stdout=out)
    link = out.getvalue().strip().splitlines()[-1]
    assert len(mail.outbox) == 1 and link in mail.outbox[0].body and mail.outbox[0].to == ["boss@acme.test"]
    membership = Membership.objects.get(account=acme)
    assert membership.role == OWNER and not membership.user.has_usable_password()
    path = link.removeprefix("http://testserver")
    form_page = client.get(path, follow=True)  # Django swaps the token into the session and redirects
    assert form_page.status_code == 200 and form_page.context["validlink"]
    done = client.post(form_page.redirect_chain[-1][0], {"new_password1": PASSWORD, "new_password2": PASSWORD},
                       follow=True)
    assert done.redirect_chain[-1][0] == page(acme, "usage").rstrip("/") + "/"
    assert done.context["user"].email == "boss@acme.test"
    client.logout()
    again = client.get(path, follow=True)
    assert again.context["validlink"] is False  # used once, dead
    signed_in = client.post("/console/login/", {"username": "boss@acme.test", "password": PASSWORD})
    assert signed_in.status_code == 302 and client.session.get("_auth_user_id")  # the new password signs in


def test_the_sign_in_is_throttled_per_username(acme, client, settings):
    settings.SLUICE_CONSOLE_LOGIN_RATE_USER = "3/m"
    person(acme, "dev@acme.test", DEVELOPER)
    statuses = [client.post("/console/login/", {"username": "dev@acme.test", "password": "wrong"}).status_code
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    checked = []
    user_login_failed.connect(lambda **kw: checked.append("failed"), weak=False, dispatch_uid="t1")
    user_logged_in.connect(lambda **kw: checked.append("in"), weak=False, dispatch_uid="t2")
    try:
        refused = client.post("/console/login/", {"username": "dev@acme.test", "password": PASSWORD})
        client.post("/console/login/", {"username": "dev@acme.test", "password": "wrong"})
    finally:
        user_login_failed.disconnect(dispatch_uid="t1")
        user_logged_in.disconnect(dispatch_uid="t2")
    assert checked == []  # the password is not even checked while throttled
    assert refused.status_code == 429 and "_auth_user_id" not in client.session  # even the right password waits
    assert b"Too many sign-in attempts" in refused.content


def test_signing_in_with_the_password_opens_the_console_and_anonymous_users_are_sent_to_sign_in(acme, client):
    person(acme, "dev@acme.test", DEVELOPER)
    assert client.get(page(acme, "usage"))["Location"].startswith("/console/login/?next=")
    response = client.post("/console/login/", {"username": "dev@acme.test", "password": PASSWORD}, follow=True)
    assert response.status_code == 200 and response.redirect_chain[-1][0] == page(acme, "usage")


def test_each_role_reaches_only_its_pages(acme, client):
    allowed = {OWNER: set(PAGES), DEVELOPER: set(PAGES) - {"members"}, VIEWER: {"usage"}}
    for role, pages in allowed.items():
        signed_in(client, person(acme, f"{role}@acme.test", role))
        for name in PAGES:
            status = client.get(page(acme, name)).status_code
            assert status == (200 if name in pages else 403), (role, name, status)
        client.logout()


def test_a_member_of_one_account_gets_404_for_every_page_and_object_of_another(acme, globex, client):
    signed_in(client, person(acme, "boss@acme.test", OWNER))
    other_owner = person(globex, "boss@globex.test", OWNER)
    other_key = key_create(account=globex, name="theirs").key
    other_member = Membership.objects.get(user=other_owner)
    urls = [page(globex, name) for name in PAGES] + [
        f"/console/a/{globex.pk}/", f"/console/a/{globex.pk}/usage.csv",
        page(globex, "playground", "outcome/req_x/"),
    ]
    for url in urls:
        assert client.get(url).status_code == 404, url
    posts = [page(globex, "keys"), page(globex, "playground", "key/"), page(globex, "members"),
             page(globex, "keys", f"{other_key.lookup_id}/revoke/"), page(globex, "keys", f"{other_key.lookup_id}/rotate/"),
             page(globex, "members", f"{other_member.pk}/remove/"), page(globex, "members", f"{other_member.pk}/role/")]
    for url in posts:
        assert client.post(url, {"name": "x", "scopes": ["inference"], "email": "x@y.test", "role": "owner",
                                 "grace_seconds": 0}).status_code == 404, url
    # Their objects through my own account's URLs do not exist either.
    assert client.post(page(acme, "keys", f"{other_key.lookup_id}/revoke/")).status_code == 404
    assert client.post(page(acme, "keys", f"{other_key.lookup_id}/rotate/"), {"grace_seconds": 0}).status_code == 404
    assert client.post(page(acme, "members", f"{other_member.pk}/remove/")).status_code == 404
    other_key.refresh_from_db()
    assert other_key.revoked_at is None and ApiKey.objects.filter(account=globex).count() == 1
    assert Membership.objects.filter(account=globex).count() == 1
    # And an API key of mine cannot read theirs.
    mine = Api(client, key_create(account=acme, name="mine").plaintext)
    assert mine.get(f"/v1/keys/{other_key.lookup_id}").status_code == 404
    assert client.get("/console/").status_code == 302  # only acme: straight to it


def test_a_key_is_created_within_the_accounts_limits_shown_once_and_recorded(acme, client):
    owner = person(acme, "boss@acme.test", OWNER)
    signed_in(client, owner)
    too_much = client.post(page(acme, "keys"), {"name": "ci", "scopes": ["inference"],
                                                "requests_per_minute": acme.requests_per_minute + 1})
    assert too_much.status_code == 400 and ApiKey.objects.count() == 0
    response = client.post(page(acme, "keys"), {"name": "ci", "scopes": ["inference", "usage:read"],
                                                "allowed_models": [MODEL], "requests_per_minute": 10})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    plaintext = re.search(rb'id="new-key-value" readonly value="(sk-sluice-[^"]+)"', response.content).group(1).decode()
    key = ApiKey.objects.get(name="ci")
    assert key.scopes == ["inference", "usage:read"] and key.allowed_models == [MODEL] and key.requests_per_minute == 10
    assert Api(client, plaintext).post("/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    listing = client.get(page(acme, "keys"))
    assert plaintext.encode() not in listing.content and key.display.encode() in listing.content
    event = KeyEvent.objects.get(api_key=key)
    assert event.action == KeyEvent.CREATED and event.actor == owner and plaintext not in json.dumps(event.detail)


def test_revoking_and_rotating_a_key_take_effect_and_are_recorded(acme, client, fake_engine):
    signed_in(client, person(acme, "dev@acme.test", DEVELOPER))
    old = key_create(account=acme, name="app")
    rotated = client.post(page(acme, "keys", f"{old.key.lookup_id}/rotate/"), {"grace_seconds": 3600})
    new_plaintext = re.search(rb'value="(sk-sluice-[^"]+)"', rotated.content).group(1).decode()
    old.key.refresh_from_db()
    assert old.key.expires_at is not None and old.key.expires_at - clock.now() <= timedelta(seconds=3601)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert Api(client, old.plaintext).post("/v1/chat/completions", chat).status_code == 200  # in its grace
    new_key = ApiKey.objects.get(lookup_id=new_plaintext[len("sk-sluice-"):][:12])
    client.post(page(acme, "keys", f"{new_key.lookup_id}/revoke/"))
    assert Api(client, new_plaintext).post("/v1/chat/completions", chat).status_code == 401
    actions = sorted(KeyEvent.objects.values_list("action", flat=True))
    assert actions == ["created", "revoked", "rotated"]


def test_the_quota_page_shows_allowed_used_and_the_reset(acme, client, fake_engine):
    acme.daily_token_quota, acme.monthly_token_quota = 5000, 100_000
    acme.save()
    api = Api(client, key_create(account=acme).plaintext)
    api.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20})
    used = sum(r.prompt_tokens + r.completion_tokens for r in UsageRecord.objects.filter(endpoint="chat.completions"))
    signed_in(client, person(acme, "dev@acme.test", DEVELOPER))
    response = client.get(page(acme, "quotas"))
    day, month = response.context["account_quotas"]
    assert (day["granted"], day["used"], day["remaining"]) == (5000, used, 5000 - used)
    assert (month["granted"], month["used"]) == (100_000, used)
    today = clock.now().date()
    assert day["resets_at"].date() == today + timedelta(days=1) and month["resets_at"].day == 1
    assert f'<meter min="0" max="5000" value="{used}"'.encode() in response.content


def test_the_playground_key_is_short_lived_inference_only_and_streams_metered(acme, client, fake_engine, settings):
    signed_in(client, person(acme, "dev@acme.test", DEVELOPER))
    first = client.post(page(acme, "playground", "key/")).json()
    second = client.post(page(acme, "playground", "key/")).json()
    keys = ApiKey.objects.filter(account=acme).order_by("created_at")
    assert [k.revoked_at is not None for k in keys] == [True, False]  # one live playground key per member
    assert keys[1].scopes == ["inference"]
    assert keys[1].expires_at - clock.now() <= timedelta(seconds=settings.SLUICE_PLAYGROUND_KEY_TTL_S)
    assert Api(client, second["key"]).get("/v1/usage").status_code == 403
    assert Api(client, first["key"]).get("/v1/models").status_code == 401
    fake_engine.replies.append("Streamed reply.")
    response = Api(client, second["key"]).post("/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}})
    payloads = sse_payloads(response)
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads[:-1] if p["choices"])
    assert text == "Streamed reply." and payloads[-2]["usage"]["completion_tokens"] == len(text)
    row = UsageRecord.objects.get(api_key=keys[1], endpoint="chat.completions")
    assert row.completion_tokens == len(text)
    assert client.get(page(acme, "playground", f"outcome/{row.request_id}/")).json()["events"] == []


def test_moderation_events_show_the_text_to_owners_only(acme, globex, client):
    key = key_create(account=acme).key
    ModerationEvent.objects.create(request_id="req_a", account=acme, api_key=key, endpoint="chat.completions",
                                   direction="input", action=BLOCK, categories=["violence"],
                                   scores={"violence": 0.93}, text="a secret threatening prompt")
    ModerationEvent.objects.create(request_id="req_b", account=globex, endpoint="chat.completions",
                                   direction="output", action=FLAG, categories=["hate"], text="globex's text")
    signed_in(client, person(acme, "dev@acme.test", DEVELOPER))
    as_developer = client.get(page(acme, "moderation"))
    assert b"violence" in as_developer.content and b"a secret threatening prompt" not in as_developer.content
    assert b"globex" not in as_developer.content.lower().replace(b"globex.test", b"")
    client.logout()
    signed_in(client, person(acme, "boss@acme.test", OWNER))
    as_owner = client.get(page(acme, "moderation"))
    assert b"a secret threatening prompt" in as_owner.content and b"globex&#x27;s text" not in as_owner.content
    assert b"a secret threatening prompt" not in client.get(page(acme, "moderation") + "?action=flag").content
    assert b"a secret threatening prompt" in client.get(page(acme, "moderation") + "?action=block").content
    assert client.get(page(acme, "playground", "outcome/req_a/")).json()["events"] == [
        {"direction": "input", "action": "block", "categories": ["violence"]}]
    assert client.get(page(acme, "playground", "outcome/req_b/")).json()["events"] == []


def test_an_owner_invites_changes_roles_and_removes_members_but_keeps_one_owner(acme, client):
    owner = person(acme, "boss@acme.test", OWNER)
    signed_in(client, owner)
    client.post(page(acme, "members"), {"email": "new@acme.test", "role": VIEWER})
    assert len(mail.outbox) == 1 and "/console/set-password/" in mail.outbox[0].body
    invited = Membership.objects.get(user__email="new@acme.test")
    assert invited.role == VIEWER and invited.invited_by == owner
    client.post(page(acme, "members", f"{invited.pk}/role/"), {"role": DEVELOPER})
    invited.refresh_from_db()
    assert invited.role == DEVELOPER
    mine = Membership.objects.get(user=owner)
    client.post(page(acme, "members", f"{mine.pk}/role/"), {"role": VIEWER})
    mine.refresh_from_db()
    assert mine.role == OWNER  # the last owner stays
    client.post(page(acme, "members", f"{invited.pk}/remove/"))
    assert not Membership.objects.filter(pk=invited.pk).exists()
    assert get_user_model().objects.filter(email="new@acme.test").exists()


def test_the_console_usage_page_the_admin_report_and_v1_usage_give_the_same_totals(acme, globex, client, fake_engine,
                                                                                 admin_client):
    api = Api(client, key_create(account=acme, name="a").plaintext)
    second = Api(client, key_create(account=acme, name="b").plaintext)
    stranger = Api(client, key_create(account=globex).plaintext)
    for index, holder in enumerate([api, second, api, stranger]):
        fake_engine.replies.append("x" * (index + 3))
        holder.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    api.post("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    today = clock.now().date().isoformat()
    admin = admin_client.get(f"/admin/reports/usage.json?account={acme.pk}&since={today}&until={today}").json()["totals"]
    signed_in(client, person(acme, "viewer@acme.test", VIEWER))
    console = client.get(page(acme, "usage") + f"?since={today}&until={today}")
    shown = json.loads(re.search(rb'id="console-usage-data" type="application/json">(.*?)</script>',
                                 console.content).group(1))["totals"]
    from_api = api.get(f"/v1/usage?start_date={today}&end_date={today}").json()["totals"]  # last: it adds a row
    assert shown == admin == from_api
    assert from_api["requests"] == 4 and from_api["errors"] == 1
    csv_body = client.get(page(acme, "usage.csv").rstrip("/").replace("usage.csv/", "usage.csv")
                          + f"?since={today}&until={today}").content.decode()
    assert sum(int(line.split(",")[6]) for line in csv_body.splitlines()[1:]) == shown["prompt_tokens"]


INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)
INLINE_STYLE = re.compile(rb"<style|\sstyle=|\son[a-z]+=", re.I)


def test_no_console_page_has_inline_script_style_or_handlers(acme, client):
    key_create(account=acme, name="k")
    urls = ["/console/login/", "/console/password-reset/"]
    client_pages = [page(acme, name) for name in PAGES]
    for url in urls:
        body = client.get(url).content
        assert not INLINE_SCRIPT.search(body) and not INLINE_STYLE.search(body), url
    signed_in(client, person(acme, "boss@acme.test", OWNER))
    created = client.post(page(acme, "keys"), {"name": "new", "scopes": ["inference"]}).content
    for body in [client.get(url).content for url in client_pages] + [created]:
        assert not INLINE_SCRIPT.search(body), INLINE_SCRIPT.search(body)
        assert not INLINE_STYLE.search(body), INLINE_STYLE.search(body)


def test_an_operator_invites_an_owner_in_the_admin_and_can_send_the_invitation_again(acme, admin_client):
    response = admin_client.post("/admin/accounts/membership/add/",
                                 {"account": acme.pk, "email": "first@acme.test", "role": OWNER})
    assert response.status_code == 302, response.content[:500]
    membership = Membership.objects.get(account=acme)
    assert membership.user.email == "first@acme.test" and membership.role == OWNER
    assert len(mail.outbox) == 1 and "http://testserver/console/set-password/" in mail.outbox[0].body
    admin_client.post("/admin/accounts/membership/", {"action": "send_invitation", "_selected_action": [membership.pk]})
    assert len(mail.outbox) == 2 and mail.outbox[1].to == ["first@acme.test"]
