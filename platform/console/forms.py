"""The console's forms: a period, a new key, a rotation, an invitation. Choices come from what the account allows."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from django import forms
from django.conf import settings

from accounts import clock
from accounts.members import ROLE_NAMES
from accounts.models import ALL_SCOPES, default_scopes

DEFAULT_DAYS = 30
MAX_DAYS = 366
GRACE_CHOICES = [(0, "no grace"), (3600, "1 h grace"), (86_400, "24 h grace"), (7 * 86_400, "7 d grace")]  # the old key keeps working


class PeriodForm(forms.Form):
    """Inclusive UTC dates; the last 30 days by default."""

    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        until = data.get("until") or clock.now().date()
        since = data.get("since") or until - timedelta(days=DEFAULT_DAYS - 1)
        if since > until:
            raise forms.ValidationError("The start date must not be after the end date.")
        if (until - since).days >= MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        data["since"], data["until"] = since, until
        return data


def period_from(query) -> tuple[PeriodForm, object, object]:
    """The bound form and its dates; an invalid query keeps the form's errors and falls back to the default."""
    form = PeriodForm(query or None)
    if form.is_valid():
        return form, form.cleaned_data["since"], form.cleaned_data["until"]
    until = clock.now().date()
    since = until - timedelta(days=DEFAULT_DAYS - 1)
    if not form.is_bound:
        form = PeriodForm(initial={"since": since, "until": until})
    return form, since, until


class KeyCreateForm(forms.Form):
    name = forms.CharField(max_length=200, required=True)
    scopes = forms.MultipleChoiceField(choices=[(s, s) for s in ALL_SCOPES], widget=forms.CheckboxSelectMultiple,
                                       initial=default_scopes)
    allowed_models = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, help_text="None ticked: every model the account may use.")
    expires_on = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                                 help_text="The key stops working at the start of this day (UTC). Empty: never.")
    requests_per_minute = forms.IntegerField(required=False, min_value=1, help_text="Empty: the account's.")
    daily_token_quota = forms.IntegerField(required=False, min_value=1, help_text="Empty: the account's.")

    def __init__(self, *args, account, models: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.account = account
        self.fields["allowed_models"].choices = [(model, model) for model in models]
        self.fields["requests_per_minute"].widget.attrs["max"] = account.requests_per_minute
        if account.daily_token_quota is not None:
            self.fields["daily_token_quota"].widget.attrs["max"] = account.daily_token_quota

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day is not None and day <= clock.now().date():
            raise forms.ValidationError("Choose a day after today.")
        return day

    def clean_requests_per_minute(self):
        value = self.cleaned_data.get("requests_per_minute")
        if value is not None and value > self.account.requests_per_minute:
            raise forms.ValidationError(f"At most the account's {self.account.requests_per_minute}.")
        return value

    def clean_daily_token_quota(self):
        value = self.cleaned_data.get("daily_token_quota")
        if value is not None and self.account.daily_token_quota is not None and value > self.account.daily_token_quota:
            raise forms.ValidationError(f"At most the account's {self.account.daily_token_quota}.")
        return value

    def expires_at(self):
        day = self.cleaned_data.get("expires_on")
        return datetime.combine(day, time.min, tzinfo=timezone.utc) if day else None


class KeyRotateForm(forms.Form):
    grace_seconds = forms.TypedChoiceField(
        choices=GRACE_CHOICES, coerce=int, initial=86_400,
        widget=forms.Select(attrs={"aria-label": "How long the old key keeps working", "title": "Grace period"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["grace_seconds"].initial = settings.SLUICE_KEY_ROTATION_GRACE_S


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=[(role, role) for role in ROLE_NAMES], initial="developer")


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=[(role, role) for role in ROLE_NAMES])
