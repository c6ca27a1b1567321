"""Usage reports: /v1/usage, the CSV/JSON command and the admin export all come from the same rows."""

import csv
import io
import json

from django.core.management import call_command

from accounts.models import UsageRecord
from accounts.services import account_get_or_create, key_create
from tests.conftest import MODEL, Api


def make_traffic(api, fake_engine, n=3):
    for index in range(n):
        fake_engine.replies.append("r" * (index + 1))
        api.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    api.post("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]})


def test_usage_gives_the_key_holder_its_own_accounts_totals(api, client, fake_engine):
    make_traffic(api, fake_engine)
    stranger = Api(client, key_create(account=account_get_or_create(name="other")).plaintext)
    make_traffic(stranger, fake_engine, n=1)
    report = api.get("/v1/usage").json()
    rows = UsageRecord.objects.filter(account__name="acme").exclude(endpoint="usage")  # not the report's own row
    assert report["account"] == "acme"
    assert report["totals"]["requests"] == rows.count() == 4
    assert report["totals"]["completion_tokens"] == sum(r.completion_tokens for r in rows) == 6
    assert report["totals"]["prompt_tokens"] == sum(r.prompt_tokens for r in rows)
    assert report["totals"]["errors"] == 1
    assert [e["endpoint"] for e in report["by_endpoint"]] == ["chat.completions"]
    assert sum(d["requests"] for d in report["by_day"]) == 4


def test_usage_needs_the_usage_read_scope_and_valid_dates(client, account, api):
    limited = Api(client, key_create(account=account, scopes=["inference"]).plaintext)
    assert limited.get("/v1/usage").status_code == 403
    bad = api.get("/v1/usage?start_date=2026-02-30")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "start_date"
    reversed_range = api.get("/v1/usage?start_date=2026-05-02&end_date=2026-05-01")
    assert reversed_range.status_code == 400


def test_the_report_command_agrees_with_the_api_and_the_rows(api, fake_engine):
    make_traffic(api, fake_engine)
    as_json = io.StringIO()
    call_command("usage_report", "--format", "json", "--account", "acme", stdout=as_json)
    assert json.loads(as_json.getvalue())["totals"] == api.get("/v1/usage").json()["totals"]
    as_csv = io.StringIO()
    call_command("usage_report", "--format", "csv", stdout=as_csv)
    rows = list(csv.DictReader(io.StringIO(as_csv.getvalue())))
    all_records = UsageRecord.objects.all()
    assert sum(int(r["total_tokens"]) for r in rows) == sum(r.prompt_tokens + r.completion_tokens for r in all_records)
    assert sum(int(r["requests"]) for r in rows) == all_records.count()


def test_the_admin_exports_the_same_csv(api, fake_engine, admin_client):
    make_traffic(api, fake_engine)
    ids = list(UsageRecord.objects.values_list("pk", flat=True))
    response = admin_client.post(
        "/admin/accounts/usagerecord/", {"action": "export_csv", "_selected_action": ids}
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert sum(int(r["requests"]) for r in rows) == len(ids)


def test_creating_a_key_in_the_admin_shows_its_plaintext_once(admin_client, account):
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"account": account.pk, "name": "from admin", "scopes": '["inference"]', "allowed_models": "[]",
         "allowed_endpoints": "[]", "created_at_0": "2026-01-01", "created_at_1": "00:00:00"},
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    shown = [m for m in messages if "sk-sluice-" in m]
    assert len(shown) == 1
    plaintext = shown[0].split(": ", 1)[1]
    change_page = admin_client.get(response.redirect_chain[-1][0])
    assert plaintext not in change_page.content.decode()
