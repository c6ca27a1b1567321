"""The console's pages: thin views that find the member's account, check the role, and call one service.

Every account page goes through ``member_page``: a signed-in user who is not a member of the account in the
URL gets 404 (the account does not exist for them), a member whose role does not allow the page 403. Objects
in URLs (keys, members) are looked up inside that account only, so another account's ids are 404 too.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_POST
from django_ratelimit.core import is_ratelimited

from accounts import clock
from accounts.members import (
    KEYS,
    MEMBERS,
    MODERATION,
    MODERATION_TEXT,
    PLAYGROUND,
    QUOTAS,
    USAGE,
    MembershipRefused,
    key_events_of,
    member_invite,
    member_key_create,
    member_key_revoke,
    member_key_rotate,
    member_remove,
    member_set_role,
    members_of,
    membership_of,
    memberships_of,
    role_allows,
)
from accounts.models import SCOPE_INFERENCE, ApiKey, Membership
from accounts.quotas import quota_status
from accounts.reports import usage_csv, usage_report, usage_rows
from inference.registry import available_models
from moderation.services import moderation_events_of
from platform.console.forms import InviteForm, KeyCreateForm, KeyRotateForm, RoleForm, period_from
from platform.console.invitations import invitation_email
from platform.client_address import client_address

PAGES = [  # (url name, label, permission): the navigation, in order
    ("usage", "Usage", USAGE),
    ("quotas", "Quotas", QUOTAS),
    ("keys", "Keys", KEYS),
    ("playground", "Playground", PLAYGROUND),
    ("moderation", "Moderation", MODERATION),
    ("members", "Members", MEMBERS),
]
PLAYGROUND_KEY_PREFIX = "playground: "
MODERATION_ACTIONS = {"block": "Blocked", "redact": "Redacted", "flag": "Flagged"}
MODERATION_EVENTS_SHOWN = 100


def _render(request, template: str, context: dict, *, status: int = 200):
    return TemplateResponse(request, f"console/{template}", context, status=status)


def not_found(request):
    return _render(request, "not_found.html", {}, status=404)


def member_page(permission: str):
    """Find the signed-in user's membership of ``account_id`` (else 404) and check its role (else 403)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, account_id: int, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = membership_of(user=request.user, account_id=account_id)
            if membership is None:
                return not_found(request)
            if not role_allows(membership.role, permission):
                return _render(request, "forbidden.html", _context(request, membership, None), status=403)
            return view(request, membership, *args, **kwargs)

        return wrapper

    return decorate


def _context(request, membership: Membership, page: str | None, **extra) -> dict:
    nav = [
        {"name": name, "label": label, "url": reverse(f"console:{name}", args=[membership.account_id]),
         "current": name == page}
        for name, label, permission in PAGES
        if role_allows(membership.role, permission)
    ]
    return {"membership": membership, "account": membership.account, "nav": nav, "page": page,
            "memberships": memberships_of(user=request.user), **extra}


# Sign-in and passwords: Django's views, with the console's templates.

class ThrottledLoginView(auth_views.LoginView):
    """Django's login, rate-limited per username and per client address (django-ratelimit on the shared cache).

    Every POST counts, right or wrong, so a guesser gets a few tries a minute and a 429; django-axes (the
    authentication backend) also locks a username or address out after repeated failures, as on the admin."""

    template_name = "console/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "").strip().lower()
        by_user = is_ratelimited(request, group="console-login-user", key=lambda group, req: username,
                                 rate=settings.SLUICE_CONSOLE_LOGIN_RATE_USER, method="POST", increment=True)
        by_address = is_ratelimited(request, group="console-login-ip", key=lambda group, req: client_address(req),
                                    rate=settings.SLUICE_CONSOLE_LOGIN_RATE_IP, method="POST", increment=True)
        if by_user or by_address:
            # An unbound form: the password is never checked while throttled.
            form = self.get_form_class()(request, initial={"username": username})
            context = self.get_context_data(form=form, throttled=True)
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)


class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("console:login")


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "console/password_reset_form.html"
    email_template_name = "console/password_reset_email.txt"
    subject_template_name = "console/password_reset_subject.txt"
    success_url = reverse_lazy("console:password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "console/password_reset_done.html"


class SetPasswordView(auth_views.PasswordResetConfirmView):
    """The link of a password reset and of an invitation alike: set a password, then you are signed in."""

    template_name = "console/password_reset_confirm.html"
    success_url = reverse_lazy("console:home")
    post_reset_login = True
    post_reset_login_backend = "django.contrib.auth.backends.ModelBackend"


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "console/password_reset_complete.html"


def home(request):
    """The accounts this user is in; straight to the only one."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    memberships = memberships_of(user=request.user)
    if len(memberships) == 1:
        return redirect("console:account", memberships[0].account_id)
    return _render(request, "home.html", {"memberships": memberships})


@member_page(USAGE)
def account_home(request, membership):
    return redirect("console:usage", membership.account_id)


# Usage and quotas.

def _filled_days(by_day: list[dict], since, until) -> list[dict]:
    found = {row["day"]: row for row in by_day}
    empty = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "errors": 0,
             "rate_limited": 0, "moderation_blocks": 0}
    days = [since + timedelta(days=n) for n in range((until - since).days + 1)]
    return [{"day": day.isoformat(), **found.get(day.isoformat(), empty)} for day in days]


@member_page(USAGE)
def usage(request, membership):
    form, since, until = period_from(request.GET)
    report = usage_report(since=since, until=until, account=membership.account)
    names = dict(ApiKey.objects.filter(account=membership.account).values_list("lookup_id", "name"))
    by_key = sorted(({**row, "name": names.get(row["key"], "")} for row in report["by_key"]),
                    key=lambda row: (-row["total_tokens"], -row["requests"], row["key"]))
    chart = {"days": _filled_days(report["by_day"], since, until), "totals": report["totals"],
             "since": since.isoformat(), "until": until.isoformat()}
    csv_query = f"since={since.isoformat()}&until={until.isoformat()}"
    return _render(request, "usage.html", _context(request, membership, "usage", form=form, report=report,
                                                   by_key=by_key, chart=chart, csv_query=csv_query))


@member_page(USAGE)
def usage_csv_download(request, membership):
    """The same rows as the admin's report and ``/v1/usage``: one aggregation (accounts/reports.py)."""
    form, since, until = period_from(request.GET)
    if request.GET and not form.is_valid():
        return HttpResponse("; ".join(form.errors.get("__all__", ["Invalid dates."])), status=400,
                            content_type="text/plain")
    body = usage_csv(usage_rows(since=since, until=until, account=membership.account))
    response = HttpResponse(body, content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="sluice-usage-{since}-{until}.csv"'
    return response


@member_page(QUOTAS)
def quotas(request, membership):
    account = membership.account
    now = clock.now()
    status = quota_status(account=account, moment=now)
    return _render(request, "quotas.html", _context(
        request, membership, "quotas", now=now,
        account_quotas=[row for row in status if row["key"] is None],
        key_quotas=[row for row in status if row["key"] is not None],
        key_limits=ApiKey.objects.filter(account=account, revoked_at__isnull=True).exclude(
            requests_per_minute=None, tokens_per_minute=None).order_by("created_at"),
    ))


# Keys.

def _keys_context(request, membership, **extra) -> dict:
    now = clock.now()
    keys = list(ApiKey.objects.filter(account=membership.account).select_related("account").order_by("-created_at"))
    for key in keys:
        key.state = key.refusal_reason(now) or ""
    return _context(request, membership, "keys", keys=keys, events=key_events_of(account=membership.account),
                    rotate_form=KeyRotateForm(), **extra)


@member_page(KEYS)
def keys(request, membership):
    form = KeyCreateForm(request.POST or None, account=membership.account, models=available_models())
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                created = member_key_create(
                    account=membership.account, actor=request.user, name=form.cleaned_data["name"],
                    scopes=form.cleaned_data["scopes"], allowed_models=form.cleaned_data["allowed_models"],
                    expires_at=form.expires_at(),
                    limits={f: form.cleaned_data.get(f) for f in ("requests_per_minute", "daily_token_quota")},
                )
                form = KeyCreateForm(account=membership.account, models=available_models())
            except ValueError as error:
                form.add_error(None, str(error))
        if created is None:
            status = 400
    # The plaintext is in this one response only (never stored, never shown again).
    response = _render(request, "keys.html", _keys_context(request, membership, form=form, created=created),
                       status=status)
    response["Cache-Control"] = "no-store"
    return response


def _account_key(membership, key_id: str) -> ApiKey | None:
    return ApiKey.objects.select_related("account").filter(account=membership.account, lookup_id=key_id).first()


@member_page(KEYS)
@require_POST
def key_revoke_view(request, membership, key_id: str):
    key = _account_key(membership, key_id)
    if key is None:
        return not_found(request)
    member_key_revoke(key=key, actor=request.user)
    messages.success(request, f"Revoked {key.display}.")
    return redirect("console:keys", membership.account_id)


@member_page(KEYS)
@require_POST
def key_rotate_view(request, membership, key_id: str):
    key = _account_key(membership, key_id)
    if key is None:
        return not_found(request)
    form = KeyRotateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a grace period.")
        return redirect("console:keys", membership.account_id)
    try:
        created = member_key_rotate(key=key, actor=request.user, grace_seconds=form.cleaned_data["grace_seconds"])
    except MembershipRefused as refused:
        messages.error(request, str(refused))
        return redirect("console:keys", membership.account_id)
    context = _keys_context(request, membership, created=created, rotated=key,
                            form=KeyCreateForm(account=membership.account, models=available_models()))
    response = _render(request, "keys.html", context)
    response["Cache-Control"] = "no-store"
    return response


# Playground: the page's script calls /v1/chat/completions itself, with a short-lived key made here.

@member_page(PLAYGROUND)
def playground(request, membership):
    config = {
        "keyUrl": reverse("console:playground_key", args=[membership.account_id]),
        "outcomeUrl": reverse("console:playground_outcome", args=[membership.account_id, "REQUEST_ID"]),
        "apiBase": "/v1",
        "models": available_models(),
        "maxTokens": settings.SLUICE_DEFAULT_MAX_TOKENS,
    }
    return _render(request, "playground.html", _context(request, membership, "playground", config=config))


@member_page(PLAYGROUND)
@require_POST
def playground_key(request, membership):
    """A key for this page only: inference scope, expiring in SLUICE_PLAYGROUND_KEY_TTL_S; the member's
    earlier playground keys are revoked. Its requests are metered, limited and moderated like any other."""
    name = f"{PLAYGROUND_KEY_PREFIX}{request.user.get_username()}"
    for old in ApiKey.objects.filter(account=membership.account, name=name, revoked_at__isnull=True):
        member_key_revoke(key=old, actor=request.user)
    expires_at = clock.now() + timedelta(seconds=settings.SLUICE_PLAYGROUND_KEY_TTL_S)
    created = member_key_create(account=membership.account, actor=request.user, name=name,
                                scopes=[SCOPE_INFERENCE], allowed_models=[], expires_at=expires_at)
    response = JsonResponse({"key": created.plaintext, "expires_at": expires_at.isoformat()})
    response["Cache-Control"] = "no-store"
    return response


@member_page(PLAYGROUND)
def playground_outcome(request, membership, request_id: str):
    """Moderation decisions on one of the account's requests (no text: the page has the reply already)."""
    events = moderation_events_of(account=membership.account, request_id=request_id)
    return JsonResponse({"request_id": request_id, "events": [
        {"direction": event.direction, "action": event.action, "categories": event.categories} for event in events
    ]})


@member_page(MODERATION)
def moderation(request, membership):
    action = request.GET.get("action")
    action = action if action in MODERATION_ACTIONS else None
    events = moderation_events_of(account=membership.account, action=action, limit=MODERATION_EVENTS_SHOWN)
    show_text = role_allows(membership.role, MODERATION_TEXT)
    for event in events:
        event.top = sorted(((score, name) for name, score in (event.scores or {}).items()), reverse=True)[:1]
    return _render(request, "moderation.html", _context(request, membership, "moderation", events=events,
                                                        show_text=show_text, action=action,
                                                        actions=MODERATION_ACTIONS, shown=MODERATION_EVENTS_SHOWN))


# Members (owners).

@member_page(MEMBERS)
def members(request, membership):
    form = InviteForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                invited = member_invite(account=membership.account, email=form.cleaned_data["email"],
                                        role=form.cleaned_data["role"], invited_by=request.user)
            except MembershipRefused as refused:
                form.add_error("email", str(refused))
            else:
                invitation_email(membership=invited, base_url=request.build_absolute_uri("/"))
                messages.success(request, f"Invited {invited.user.email} as {invited.role}; the email is on its way.")
                return redirect("console:members", membership.account_id)
        status = 400
    return _render(request, "members.html", _context(
        request, membership, "members", form=form, members=members_of(account=membership.account),
        role_form=RoleForm()), status=status)


def _account_member(membership, member_id: int) -> Membership | None:
    return Membership.objects.select_related("user").filter(account=membership.account, pk=member_id).first()


@member_page(MEMBERS)
@require_POST
def member_role(request, membership, member_id: int):
    member = _account_member(membership, member_id)
    if member is None:
        return not_found(request)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            member_set_role(membership=member, role=form.cleaned_data["role"])
            messages.success(request, f"{member.user.email} is now {member.role}.")
        except MembershipRefused as refused:
            messages.error(request, str(refused))
    return redirect("console:members", membership.account_id)


@member_page(MEMBERS)
@require_POST
def member_remove_view(request, membership, member_id: int):
    member = _account_member(membership, member_id)
    if member is None:
        return not_found(request)
    try:
        member_remove(membership=member)
        messages.success(request, f"Removed {member.user.email}.")
    except MembershipRefused as refused:
        messages.error(request, str(refused))
    return redirect("console:members", membership.account_id)
