"""The admin dashboard, the report downloads and what staff without superuser rights may see."""

import csv
import io
import json
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command

from accounts.models import UsageRecord
from accounts.services import account_get_or_create, key_create
from moderation.models import BLOCK, FLAG, ModerationEvent
from platform.dashboard import DashboardPeriod, dashboard_build
from tests.conftest import MODEL, Api

NOW = datetime(2026, 3, 31, 23, 58, 30, tzinfo=timezone.utc)  # the clock fixture's start
TODAY = NOW.date()


def usage(key, *, at, endpoint="chat.completions", prompt=10, completion=5, status=200, latency=100, **extra):
    return UsageRecord.objects.create(
        request_id=uuid.uuid4().hex, account=key.account, api_key=key, endpoint=endpoint, model=MODEL,
        prompt_tokens=prompt, completion_tokens=completion, status_code=status, latency_ms=latency,
        state=UsageRecord.SETTLED, created_at=at, **extra,
    )


@pytest.fixture
def keys(db):
    acme, other = account_get_or_create(name="acme"), account_get_or_create(name="other")
    return {
        "acme-main": key_create(account=acme, name="main").key,
        "acme-ci": key_create(account=acme, name="ci").key,
        "other": key_create(account=other, name="main").key,
    }


@pytest.fixture
def traffic(keys, clock):
    """Three days of mixed traffic, a row each side of two UTC midnights, a few errors and 429s."""
    main, ci, other = keys["acme-main"], keys["acme-ci"], keys["other"]
    for latency in range(1, 101):  # chat latencies 1..100 ms on the last day
        usage(main, at=NOW - timedelta(hours=1), latency=latency, prompt=2, completion=1)
    usage(ci, at=datetime(2026, 3, 30, 23, 59, 59, 999999, tzinfo=timezone.utc), prompt=1000, completion=0)
    usage(ci, at=datetime(2026, 3, 31, 0, 0, tzinfo=timezone.utc), prompt=0, completion=7)
    usage(other, at=datetime(2026, 3, 29, 12, tzinfo=timezone.utc), endpoint="completions", prompt=50, completion=50)
    usage(other, at=datetime(2026, 3, 29, 12, tzinfo=timezone.utc), endpoint="completions", status=429, prompt=0,
          completion=0, latency=0, error_code="rate_limit_exceeded")
    usage(other, at=datetime(2026, 3, 29, 13, tzinfo=timezone.utc), endpoint="completions", status=400, prompt=0,
          completion=0, latency=0, error_code="content_filter")
    usage(other, at=datetime(2026, 3, 1, tzinfo=timezone.utc), prompt=99, completion=99)  # outside the period
    return keys


def period(**kwargs):
    return DashboardPeriod(since=kwargs.pop("since", TODAY - timedelta(days=29)), until=kwargs.pop("until", TODAY),
                           **kwargs)


def by_bucket(series):
    return {row["bucket"]: row for row in series if row["requests"]}


def test_the_daily_series_splits_at_utc_midnight_and_matches_the_rows(traffic):
    data = dashboard_build(period=period(), now=NOW)
    days = by_bucket(data["daily"])
    assert len(data["daily"]) == 30 and data["daily"][-1]["bucket"] == "2026-03-31"
    assert days["2026-03-30"]["prompt_tokens"] == 1000 and days["2026-03-30"]["requests"] == 1
    assert days["2026-03-31"]["completion_tokens"] == 100 + 7 and days["2026-03-31"]["requests"] == 101
    assert (days["2026-03-29"]["requests"], days["2026-03-29"]["errors"], days["2026-03-29"]["rate_limited"]) == (3, 2, 1)
    in_period = UsageRecord.objects.filter(created_at__gte=datetime(2026, 3, 2, tzinfo=timezone.utc))
    assert data["totals"]["requests"] == in_period.count() == 105
    assert data["totals"]["prompt_tokens"] == sum(r.prompt_tokens for r in in_period)
    assert data["totals"]["error_rate"] == pytest.approx(2 / 105)
    assert data["totals"]["rate_limited_rate"] == pytest.approx(1 / 105)


def test_the_hourly_series_covers_the_last_48_hours(traffic):
    data = dashboard_build(period=period(), now=NOW)
    assert len(data["hourly"]) == 48
    assert data["hourly"][-1]["bucket"] == "2026-03-31 23:00" and data["hourly"][0]["bucket"] == "2026-03-30 00:00"
    hours = by_bucket(data["hourly"])
    assert hours["2026-03-31 22:00"]["requests"] == 100
    assert hours["2026-03-30 23:00"]["prompt_tokens"] == 1000
    assert "2026-03-29 12:00" not in hours  # more than 48 hours ago


def test_top_accounts_and_keys_are_ranked_by_tokens(traffic):
    data = dashboard_build(period=period(), now=NOW)
    assert [(a["name"], a["tokens"]) for a in data["top_accounts"]] == [("acme", 300 + 1007), ("other", 100)]
    assert [k["tokens"] for k in data["top_keys"]] == [1007, 300, 100]
    assert data["top_keys"][0]["name"].startswith("acme / ci (…")


def test_latency_percentiles_are_nearest_rank_over_served_requests(traffic):
    endpoints = {e["endpoint"]: e for e in dashboard_build(period=period(), now=NOW)["endpoints"]}
    chat = endpoints["chat.completions"]
    # 100 latencies 1..100 plus two rows of 100 ms: 102 values; rank ceil(0.5*102)=51 and ceil(0.95*102)=97.
    assert (chat["p50_ms"], chat["p95_ms"]) == (51, 97)
    completions = endpoints["completions"]
    assert completions["served"] == 1 and (completions["p50_ms"], completions["p95_ms"]) == (100, 100)
    assert completions["error_rate"] == pytest.approx(2 / 3) and completions["rate_limited_rate"] == pytest.approx(1 / 3)


def test_the_account_filter_applies_to_every_figure(traffic):
    data = dashboard_build(period=period(account=traffic["other"].account), now=NOW)
    assert data["totals"]["requests"] == 3
    assert [k["tokens"] for k in data["top_keys"]] == [100]
    assert [e["endpoint"] for e in data["endpoints"]] == ["completions"]
    assert not by_bucket(data["hourly"])


def test_moderation_events_are_counted_per_category_and_action(keys, clock):
    key = keys["acme-main"]
    for action, categories in [(BLOCK, ["violence"]), (BLOCK, ["violence", "harassment"]), (FLAG, ["harassment"])]:
        ModerationEvent.objects.create(request_id="r", account=key.account, api_key=key, direction="input",
                                       action=action, categories=categories, text="x", created_at=NOW)
    summary = dashboard_build(period=period(), now=NOW)["moderation"]
    counts = {row["category"]: row for row in summary["by_category"]}
    assert (counts["violence"]["block"], counts["harassment"]["block"], counts["harassment"]["flag"]) == (2, 1, 1)
    assert summary["by_action"] == {"flag": 1, "redact": 0, "block": 2} and summary["total"] == 3


def test_the_dashboard_is_the_admin_landing_page(admin_client, traffic, fake_engine):
    from inference.engines.factory import get_engine

    get_engine()
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    assert "admin/sluice_dashboard.html" in [t.name for t in response.templates]
    page = response.content.decode()
    for canvas in ["chart-requests-daily", "chart-tokens-hourly", "chart-top-keys", "chart-latency", "chart-moderation"]:
        assert f'id="{canvas}"' in page
    assert "/static/sluice/vendor/chart.umd.min.js" in page and "cdn" not in page.lower()
    data = json.loads(page.split('id="sluice-dashboard-data" type="application/json">')[1].split("</script>")[0])
    assert data["engine"] == {"status": "ready", "model": MODEL, "context_window": fake_engine.context_window,
                              "stats": data["engine"]["stats"]}
    assert data["totals"]["requests"] == 105
    assert 'href="/admin/accounts/apikey/"' in page  # the app list is still there


def test_the_dashboard_filters_by_account_and_dates(admin_client, traffic):
    other = traffic["other"].account
    response = admin_client.get("/admin/", {"account": other.pk, "since": "2026-03-29", "until": "2026-03-29"})
    data = response.context["dashboard"]
    assert (data["since"], data["until"], data["account"]) == ("2026-03-29", "2026-03-29", "other")
    assert [d["requests"] for d in data["daily"]] == [3]
    bad = admin_client.get("/admin/", {"since": "2026-03-30", "until": "2026-03-01"})
    assert bad.status_code == 200 and "must not be after" in bad.content.decode()
    assert bad.context["dashboard"]["since"] == "2026-03-02"  # the default period instead


def test_the_dashboard_and_downloads_need_a_staff_login(client, db):
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    assert client.get("/admin/reports/usage.csv")["Location"].startswith("/admin/login/")


def test_the_chart_library_is_served_by_the_project(client, db):
    response = client.get("/static/sluice/vendor/chart.umd.min.js")
    assert response.status_code == 200
    assert b"Chart.js v4" in b"".join(response.streaming_content)[:200]


# Reports: the downloads, the command and the API are one service over the same rows.


def test_report_totals_equal_the_sum_of_usage_rows(admin_client, traffic):
    records = UsageRecord.objects.filter(created_at__date__gte=date(2026, 3, 2), created_at__date__lte=TODAY)
    report = admin_client.get("/admin/reports/usage.json", {"since": "2026-03-02", "until": "2026-03-31"}).json()
    assert report["totals"] == {
        "requests": records.count(),
        "prompt_tokens": sum(r.prompt_tokens for r in records),
        "completion_tokens": sum(r.completion_tokens for r in records),
        "total_tokens": sum(r.prompt_tokens + r.completion_tokens for r in records),
        "errors": sum(r.status_code >= 400 for r in records),
        "rate_limited": sum(r.status_code == 429 for r in records),
        "moderation_blocks": 1,
    }
    assert sum(a["total_tokens"] for a in report["by_account"]) == report["totals"]["total_tokens"]
    assert {k["key"] for k in report["by_key"]} == {k.lookup_id for k in traffic.values()}
    dashboard = admin_client.get("/admin/", {"since": "2026-03-02", "until": "2026-03-31"}).context["dashboard"]
    assert dashboard["totals"]["requests"] == report["totals"]["requests"]
    assert dashboard["totals"]["prompt_tokens"] == report["totals"]["prompt_tokens"]


def test_the_csv_download_and_the_command_agree(admin_client, traffic):
    query = {"account": traffic["other"].account.pk, "since": "2026-03-01", "until": "2026-03-31"}
    response = admin_client.get("/admin/reports/usage.csv", query)
    assert response["Content-Type"] == "text/csv"
    assert 'filename="sluice-usage-other-2026-03-01-2026-03-31.csv"' in response["Content-Disposition"]
    command = io.StringIO()
    call_command("usage_report", "--account", "other", "--since", "2026-03-01", "--until", "2026-03-31",
                 stdout=command)
    assert response.content.decode() == command.getvalue()
    rows = list(csv.DictReader(io.StringIO(command.getvalue())))
    assert sum(int(r["requests"]) for r in rows) == 4
    assert sum(int(r["moderation_blocks"]) for r in rows) == 1


@pytest.fixture
def word_detector(monkeypatch):
    """A detector that scores "kill" as a threat (blocked by default), so these tests load no detection models."""
    import moderation.services
    from moderation.categories import CATEGORIES
    from moderation.detectors import Detection

    def detect_many(texts):
        return [Detection(scores={c: float(c == "harassment/threatening" and "kill" in t) for c in CATEGORIES}, spans=())
                for t in texts]

    monkeypatch.setattr(moderation.services, "detect_many", detect_many)


def test_moderation_blocks_of_prompts_and_outputs_reach_every_report(api, fake_engine, word_detector):
    threat = "I am going to kill you and your whole family tonight."
    chat = "/v1/chat/completions"
    assert api.post(chat, {"model": MODEL, "messages": [{"role": "user", "content": threat}]}).status_code == 400
    fake_engine.replies.append(threat)
    reply = api.post(chat, {"model": MODEL, "messages": [{"role": "user", "content": "Write a poem."}]})
    assert reply.json()["choices"][0]["finish_reason"] == "content_filter"
    fake_engine.replies.append("A calm sea.")
    api.post(chat, {"model": MODEL, "messages": [{"role": "user", "content": "Write a poem."}]})
    assert ModerationEvent.objects.filter(action=BLOCK).count() == 2
    assert api.get("/v1/usage").json()["totals"]["moderation_blocks"] == 2
    as_json = io.StringIO()
    call_command("usage_report", "--format", "json", stdout=as_json)
    assert json.loads(as_json.getvalue())["totals"]["moderation_blocks"] == 2


# Staff without superuser rights see what their permissions allow.


def staff(client, *permissions):
    user = User.objects.create_user("staff", password="x", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    return client


def test_staff_without_permissions_see_neither_usage_nor_moderation(client, traffic):
    staff(client)
    response = client.get("/admin/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="chart-requests-daily"' not in page and 'id="chart-moderation"' not in page
    assert "totals" not in response.context["dashboard"] and "moderation" not in response.context["dashboard"]
    assert response.context["dashboard"]["engine"]["status"]  # the model's state is for every staff member
    assert client.get("/admin/reports/usage.csv").status_code == 403
    assert client.get("/admin/accounts/usagerecord/").status_code == 403
    assert client.get("/admin/accounts/apikey/").status_code == 403


def test_staff_with_view_usage_see_usage_and_download_reports_but_change_nothing(client, traffic):
    staff(client, "view_usagerecord")
    page = client.get("/admin/").content.decode()
    assert 'id="chart-requests-daily"' in page and 'id="chart-moderation"' not in page
    assert client.get("/admin/reports/usage.json").status_code == 200
    assert client.get("/admin/accounts/usagerecord/").status_code == 200
    record = UsageRecord.objects.first()
    assert client.post(f"/admin/accounts/usagerecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    assert UsageRecord.objects.filter(pk=record.pk).exists()


def test_view_only_staff_cannot_run_actions_that_change_things(client, traffic):
    key = traffic["acme-main"]
    event = ModerationEvent.objects.create(request_id="r", account=key.account, api_key=key, direction="input",
                                           action=BLOCK, categories=["violence"], text="x", created_at=NOW)
    staff(client, "view_apikey", "view_moderationevent")
    keys_page = client.get("/admin/accounts/apikey/")
    assert keys_page.status_code == 200 and "revoke_keys" not in keys_page.content.decode()
    client.post("/admin/accounts/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is None
    events_page = client.get("/admin/moderation/moderationevent/")
    assert events_page.status_code == 200 and "mark_confirmed" not in events_page.content.decode()
    client.post("/admin/moderation/moderationevent/", {"action": "mark_confirmed", "_selected_action": [event.pk]})
    event.refresh_from_db()
    assert event.review_status == ModerationEvent.PENDING


def test_staff_who_may_change_keys_can_revoke_them(client, traffic):
    key = traffic["acme-main"]
    staff(client, "view_apikey", "change_apikey")
    client.post("/admin/accounts/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_the_admin_pages_load_with_their_search_and_filters(admin_client, traffic):
    for path in ["/admin/accounts/account/?q=acme", "/admin/accounts/apikey/?q=main&account__id__exact=1",
                 "/admin/accounts/usagerecord/?q=acme&endpoint=completions&outcome=rate_limited",
                 "/admin/accounts/quotacounter/", "/admin/moderation/moderationevent/?category=violence&action=block",
                 "/admin/moderation/moderationpolicy/"]:
        assert admin_client.get(path).status_code == 200, path
    listed = admin_client.get("/admin/accounts/usagerecord/", {"outcome": "moderation_blocked"}).context["cl"]
    assert [r.error_code for r in listed.result_list] == ["content_filter"]
    listed = admin_client.get("/admin/accounts/usagerecord/", {"outcome": "rate_limited"}).context["cl"]
    assert [r.status_code for r in listed.result_list] == [429]
    # Usage rows are the billing record and quota counters its running total: not even a superuser deletes them.
    record = UsageRecord.objects.first()
    assert admin_client.post(f"/admin/accounts/usagerecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403


# The synthetic history.


def test_the_synthetic_history_loads_realistic_rows_and_clears_them(db, clock):
    out = io.StringIO()
    call_command("load_synthetic_usage", "--rows", "3000", "--days", "3", "--accounts", "4", "--seed", "7",
                 "--batch-size", "1000", stdout=out)
    assert "Loaded 3000 usage rows" in out.getvalue()
    rows = UsageRecord.objects.filter(request_id__startswith="synth-")
    assert rows.count() == 3000 and rows.values("account").distinct().count() == 4
    assert rows.filter(status_code=429).exists() and rows.filter(error_code="content_filter").exists()
    assert rows.filter(endpoint="chat.completions").count() > rows.filter(endpoint="completions").count()
    assert ModerationEvent.objects.filter(request_id__startswith="synth-", action=BLOCK).exists()
    assert all(NOW - timedelta(days=3) <= r.created_at < NOW for r in rows.only("created_at")[:200])
    data = dashboard_build(period=period(), now=NOW)
    assert data["totals"]["requests"] == 3000 and data["endpoints"][0]["endpoint"] == "chat.completions"
    call_command("load_synthetic_usage", "--rows", "0", "--clear", stdout=io.StringIO())
    assert not UsageRecord.objects.filter(request_id__startswith="synth-").exists()
    assert not ModerationEvent.objects.filter(request_id__startswith="synth-").exists()
