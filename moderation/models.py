from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Account, ApiKey
from moderation.categories import CATEGORIES

ALLOW, FLAG, REDACT, BLOCK = "allow", "flag", "redact", "block"
ACTIONS = [(ALLOW, "allow"), (FLAG, "flag (log only)"), (REDACT, "redact (mask the span)"), (BLOCK, "block")]
# When several categories fire, the strictest action wins.
ACTION_SEVERITY = {ALLOW: 0, FLAG: 1, REDACT: 2, BLOCK: 3}
INPUT, OUTPUT = "input", "output"


class ModerationPolicy(models.Model):
    """What to do per category. One default policy; an account may have its own, overriding some categories."""

    name = models.CharField(max_length=200)
    account = models.OneToOneField(
        Account, null=True, blank=True, on_delete=models.CASCADE, related_name="moderation_policy",
        help_text="Empty: the default policy for every account without its own.",
    )
    check_input = models.BooleanField(default=True)
    check_output = models.BooleanField(default=True)
    # Strikes: this many blocks by one key within the window suspend the key (0 = off).
    strike_limit = models.PositiveIntegerField(default=0, help_text="0 turns strikes off.")
    strike_window_minutes = models.PositiveIntegerField(default=60)

    class Meta:
        verbose_name_plural = "moderation policies"
        constraints = [
            models.UniqueConstraint(fields=["account"], condition=models.Q(account__isnull=True),
                                    name="one_default_policy"),
        ]

    def __str__(self) -> str:
        return self.name


class PolicyRule(models.Model):
    policy = models.ForeignKey(ModerationPolicy, on_delete=models.CASCADE, related_name="rules")
    category = models.CharField(max_length=40, choices=[(c, c) for c in CATEGORIES])
    threshold = models.FloatField(default=0.5)
    action = models.CharField(max_length=8, choices=ACTIONS, default=BLOCK)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["policy", "category"], name="one_rule_per_category")]

    def __str__(self) -> str:
        return f"{self.category} ≥ {self.threshold}: {self.action}"


class ModerationEvent(models.Model):
    """A flag, redact or block decision, written before the response is released."""

    PENDING, CONFIRMED, FALSE_POSITIVE = "pending", "confirmed", "false_positive"
    REVIEW_STATES = [(PENDING, "pending review"), (CONFIRMED, "confirmed"), (FALSE_POSITIVE, "false positive")]

    request_id = models.CharField(max_length=64, db_index=True)
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    endpoint = models.CharField(max_length=64, blank=True)
    direction = models.CharField(max_length=8, choices=[(INPUT, "input"), (OUTPUT, "output")])
    action = models.CharField(max_length=8, choices=ACTIONS)
    categories = models.JSONField(default=list)  # the categories over their thresholds
    scores = models.JSONField(default=dict)
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    review_status = models.CharField(max_length=16, choices=REVIEW_STATES, default=PENDING)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["action", "created_at"]),
            models.Index(fields=["api_key", "action", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.direction} {', '.join(self.categories)}"


class AllowedCount(models.Model):
    """Allowed traffic is counted, not stored: one row per UTC day and direction."""

    day = models.DateField()
    direction = models.CharField(max_length=8)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "direction"], name="one_allowed_count_per_day")]
