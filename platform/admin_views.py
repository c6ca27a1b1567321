"""The admin's landing page (the dashboard) and the usage report download, both for staff.

``platform/urls.py`` mounts these before ``admin.site.urls``, so ``/admin/`` is the dashboard; both views are
wrapped by ``admin.site.admin_view`` (staff login, CSRF, no caching). What a staff member sees follows their
permissions: usage figures need "view usage record", moderation figures "view moderation event".
"""

from __future__ import annotations

import json
from datetime import timedelta

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils.http import urlencode

from accounts import clock
from accounts.models import Account
from accounts.reports import usage_csv, usage_report, usage_rows
from platform.dashboard import DEFAULT_DAYS, DashboardPeriod, dashboard_build

VIEW_USAGE = "accounts.view_usagerecord"
VIEW_MODERATION = "moderation.view_moderationevent"
MAX_DAYS = 366


class PeriodForm(forms.Form):
    """The dashboard's and the report's filters: an account and inclusive UTC dates (default: the last 30 days)."""

    account = forms.ModelChoiceField(queryset=Account.objects.order_by("name"), required=False, empty_label="All accounts")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        today = clock.now().date()
        until = data.get("until") or today
        since = data.get("since") or until - timedelta(days=DEFAULT_DAYS - 1)
        if since > until:
            raise forms.ValidationError("The start date must not be after the end date.")
        if (until - since).days >= MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        data["since"], data["until"] = since, until
        return data

    def period(self) -> DashboardPeriod:
        return DashboardPeriod(
            since=self.cleaned_data["since"], until=self.cleaned_data["until"], account=self.cleaned_data.get("account")
        )


def _default_period() -> DashboardPeriod:
    today = clock.now().date()
    return DashboardPeriod(since=today - timedelta(days=DEFAULT_DAYS - 1), until=today)


def dashboard(request):
    can_usage = request.user.has_perm(VIEW_USAGE)
    can_moderation = request.user.has_perm(VIEW_MODERATION)
    form = PeriodForm(request.GET or None)
    if not can_usage:
        form.fields["account"].queryset = Account.objects.none()
    period = form.period() if form.is_valid() else _default_period()
    if not form.is_bound:  # show the dates in effect
        form = PeriodForm(initial={"since": period.since, "until": period.until})
        if not can_usage:
            form.fields["account"].queryset = Account.objects.none()
    data = dashboard_build(period=period, now=clock.now(), usage=can_usage, moderation=can_moderation)
    query = {"since": period.since.isoformat(), "until": period.until.isoformat()}
    if period.account is not None:
        query["account"] = period.account.pk
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "subtitle": None,
        "app_list": admin.site.get_app_list(request),
        "form": form,
        "dashboard": data,
        "can_usage": can_usage,
        "can_moderation": can_moderation,
        "report_query": urlencode(query),
        "period": period,
    }
    request.current_app = admin.site.name
    return TemplateResponse(request, "admin/sluice_dashboard.html", context)


def usage_report_download(request, fmt: str):
    """The usage report of the chosen account and period, as CSV or JSON: the same service, and so the same
    numbers, as ``GET /v1/usage`` and the ``usage_report`` command."""
    if not request.user.has_perm(VIEW_USAGE):
        raise PermissionDenied
    form = PeriodForm(request.GET or None)
    if request.GET and not form.is_valid():
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    period = form.period() if request.GET else _default_period()
    name = f"sluice-usage-{period.account.name if period.account else 'all'}-{period.since}-{period.until}.{fmt}"
    if fmt == "csv":
        body = usage_csv(usage_rows(since=period.since, until=period.until, account=period.account))
        response = HttpResponse(body, content_type="text/csv")
    else:
        report = usage_report(since=period.since, until=period.until, account=period.account)
        response = HttpResponse(json.dumps(report, indent=2), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
