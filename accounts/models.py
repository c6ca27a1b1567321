from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

SCOPE_INFERENCE = "inference"
SCOPE_MODERATION = "moderation"
SCOPE_USAGE_READ = "usage:read"
SCOPE_KEYS_MANAGE = "keys:manage"
ALL_SCOPES = (SCOPE_INFERENCE, SCOPE_MODERATION, SCOPE_USAGE_READ, SCOPE_KEYS_MANAGE)


def default_scopes() -> list[str]:
    return [SCOPE_INFERENCE, SCOPE_MODERATION, SCOPE_USAGE_READ]


class Account(models.Model):
    """Who pays. Owns API keys; holds the default limits its keys inherit."""

    name = models.CharField(max_length=200, unique=True)
    contact_email = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    requests_per_minute = models.PositiveIntegerField(default=60)
    tokens_per_minute = models.PositiveIntegerField(default=100_000)
    daily_token_quota = models.PositiveBigIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    monthly_token_quota = models.PositiveBigIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    # Fair sharing of a model between accounts (inference/fair_queue.py); empty: the SLUICE_FAIR_* default.
    share_weight = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Share of the model's decode slots under contention, relative to other accounts' weights. "
                  "Empty: SLUICE_FAIR_DEFAULT_WEIGHT (1).")
    max_concurrent_sequences = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Generations decoding at once (per worker and model; the rest wait). "
                  "Empty: SLUICE_FAIR_MAX_RUNNING (0: up to the batch size).")
    max_queued_requests = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Requests waiting for a slot (per worker and model); past it, 429 rate_limit_exceeded. "
                  "Empty: SLUICE_FAIR_MAX_QUEUED (48).")

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """An API key, stored as a lookup id and a hash; the plaintext is shown once at creation."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="keys")
    name = models.CharField(max_length=200, blank=True)
    lookup_id = models.CharField(max_length=32, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    scopes = models.JSONField(default=default_scopes)
    allowed_models = models.JSONField(default=list, blank=True, help_text="Empty: every model.")
    allowed_endpoints = models.JSONField(default=list, blank=True, help_text="Empty: every endpoint.")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    # Per-key overrides of the account's limits; empty means "inherit".
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    daily_token_quota = models.PositiveBigIntegerField(null=True, blank=True)
    monthly_token_quota = models.PositiveBigIntegerField(null=True, blank=True)
    # Set when the key is rotated: a key is replaced once (a second rotation within its grace is refused).
    replaced_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                    editable=False)

    class Meta:
        indexes = [models.Index(fields=["account", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name or 'key'} (…{self.last_four})"

    @property
    def display(self) -> str:
        return f"sk-sluice-{self.lookup_id}…{self.last_four}"

    def effective_requests_per_minute(self) -> int:
        return self.requests_per_minute if self.requests_per_minute is not None else self.account.requests_per_minute

    def effective_tokens_per_minute(self) -> int:
        return self.tokens_per_minute if self.tokens_per_minute is not None else self.account.tokens_per_minute

    def refusal_reason(self, now) -> str | None:
        """Why this key may not be used now, or None when it may."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "This API key has been revoked."
        if self.expires_at is not None and self.expires_at <= now:
            return "This API key has expired."
        if self.suspended_at is not None:
            return "This API key is suspended."
        if not self.account.is_active:
            return "This account is inactive."
        return None


class UsageRecord(models.Model):
    """One row per keyed request: what it asked, what it was charged, how it ended."""

    PENDING = "pending"
    SETTLED = "settled"
    STATES = [(PENDING, "pending"), (SETTLED, "settled")]

    request_id = models.CharField(max_length=64, unique=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="usage")
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="usage")
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    reserved_tokens = models.PositiveIntegerField(default=0)
    # The quota counters this request reserved from, settled together when it ends.
    quota_counter_ids = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=16, choices=STATES, default=PENDING)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    # While pending: the process serving it (host:pid:start) and when that process last said it still runs;
    # the sweep settles a reservation whose owner stopped saying so (accounts/reservations.py).
    owner = models.CharField(max_length=160, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["account", "created_at"]),
            models.Index(fields=["api_key", "created_at"]),
            models.Index(fields=["state", "created_at"]),
            # The admin dashboard's reads (platform/dashboard.py): each query reads one of these ranges in
            # order, from the index alone, with nothing to sort; they keep it fast with millions of rows.
            models.Index(fields=["created_at", "account", "endpoint", "status_code", "prompt_tokens",
                                 "completion_tokens", "latency_ms"], name="usage_dash_time_idx"),
            models.Index(fields=["api_key", "created_at", "prompt_tokens", "completion_tokens"],
                         name="usage_dash_key_idx"),
            models.Index(fields=["endpoint", "created_at", "account", "status_code", "prompt_tokens",
                                 "completion_tokens", "latency_ms"], name="usage_dash_endpoint_idx"),
            models.Index(fields=["endpoint", "latency_ms", "created_at", "status_code", "account"],
                         name="usage_dash_latency_idx"),
        ]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class QuotaCounter(models.Model):
    """Tokens granted, used and reserved in one quota period (a UTC day or month) for an account or a key.

    Changed only by conditional UPDATEs (see accounts/quotas.py), so concurrent requests on any number of
    workers can never take it below zero: remaining = granted - used - reserved.
    """

    DAY = "day"
    MONTH = "month"
    PERIODS = [(DAY, "day"), (MONTH, "month")]

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="quota_counters")
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="quota_counters")
    scope = models.CharField(max_length=64, help_text="account:<id> or key:<id>")
    period = models.CharField(max_length=8, choices=PERIODS)
    period_start = models.DateField()
    granted = models.PositiveBigIntegerField()
    used = models.PositiveBigIntegerField(default=0)
    reserved = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "period", "period_start"], name="one_counter_per_scope_period"),
        ]

    @property
    def remaining(self) -> int:
        return max(0, self.granted - self.used - self.reserved)

    def __str__(self) -> str:
        return f"{self.scope} {self.period} {self.period_start}"


OWNER, DEVELOPER, VIEWER = "owner", "developer", "viewer"
ROLES = [(OWNER, "owner"), (DEVELOPER, "developer"), (VIEWER, "viewer")]


class Membership(models.Model):
    """A person (a Django user) in an account, with a role: owner (everything, members included),
    developer (keys, playground, usage) or viewer (usage only). What each role may do is in accounts/members.py."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sluice_memberships")
    role = models.CharField(max_length=16, choices=ROLES)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "user"], name="one_membership_per_account_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.account} ({self.role})"


class KeyEvent(models.Model):
    """A change to a key made in the console: who did what, when. The key's secret is never in it."""

    CREATED, REVOKED, ROTATED = "created", "revoked", "rotated"
    ACTIONS = [(CREATED, "created"), (REVOKED, "revoked"), (ROTATED, "rotated")]

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="key_events")
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=16, choices=ACTIONS)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["account", "created_at"])]

    def __str__(self) -> str:
        return f"{self.action} {self.api_key}"
