from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpResponse

from accounts.keys import key_generate
from accounts.models import Account, ApiKey, QuotaCounter, UsageRecord
from accounts.reports import MODERATION_BLOCKED, usage_csv, usage_rows
from accounts.services import key_revoke


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = ["name", "lookup_id", "last_four", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "contact_email", "is_active", "requests_per_minute", "tokens_per_minute",
                    "daily_token_quota", "monthly_token_quota", "share_weight", "max_concurrent_sequences",
                    "max_queued_requests", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "contact_email"]
    inlines = [ApiKeyInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["display", "name", "account", "scopes", "created_at", "last_used_at", "expires_at",
                    "revoked_at", "suspended_at"]
    list_filter = ["account", ("revoked_at", admin.EmptyFieldListFilter), ("suspended_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "lookup_id", "account__name", "last_four"]
    readonly_fields = ["lookup_id", "last_four", "created_at", "last_used_at", "revoked_at"]
    exclude = ["secret_hash"]
    actions = ["revoke_keys", "unsuspend_keys"]

    def save_model(self, request, obj, form, change):
        if not change:
            # The plaintext is generated here and shown once in the confirmation message, never stored.
            plaintext, obj.lookup_id, obj.secret_hash = key_generate()
            obj.last_four = plaintext[-4:]
            super().save_model(request, obj, form, change)
            self.message_user(
                request,
                f"New API key (copy it now; it will not be shown again): {plaintext}",
                level=messages.WARNING,
            )
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected keys (irreversible)", permissions=["change"])
    def revoke_keys(self, request, queryset):
        for key in queryset:
            key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")

    @admin.action(description="Lift suspension of selected keys", permissions=["change"])
    def unsuspend_keys(self, request, queryset):
        count = queryset.update(suspended_at=None)
        self.message_user(request, f"Lifted suspension of {count} key(s).")


class OutcomeFilter(admin.SimpleListFilter):
    """How requests ended, by class: fixed choices, so the page lists no distinct status codes of every row."""

    title = "outcome"
    parameter_name = "outcome"
    OUTCOMES = {
        "served": ("served (< 400)", Q(status_code__lt=400)),
        "client_error": ("client errors (4xx)", Q(status_code__gte=400, status_code__lt=500)),
        "rate_limited": ("429 (rate limit or quota)", Q(status_code=429)),
        "server_error": ("server errors (5xx)", Q(status_code__gte=500)),
        "moderation_blocked": ("blocked by moderation", MODERATION_BLOCKED),
        "pending": ("still running", Q(status_code__isnull=True)),
    }

    def lookups(self, request, model_admin):
        return [(value, label) for value, (label, _) in self.OUTCOMES.items()]

    def queryset(self, request, queryset):
        outcome = self.OUTCOMES.get(self.value())
        return queryset.filter(outcome[1]) if outcome else queryset


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ["created_at", "account", "api_key", "endpoint", "model", "prompt_tokens", "completion_tokens",
                    "status_code", "finish_reason", "latency_ms", "state"]
    list_filter = ["state", OutcomeFilter, "endpoint", "model", "account", "created_at"]
    search_fields = ["=request_id", "account__name", "=api_key__lookup_id"]
    # No date_hierarchy: its month and day links need a DISTINCT over every row (9 s for a million on SQLite);
    # the created_at filter offers today, past 7 days, this month and this year without reading the rows.
    list_select_related = ["account", "api_key"]
    actions = ["export_csv"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # usage rows are the billing record

    @admin.action(description="Export usage report (CSV) for the selected rows' accounts and dates")
    def export_csv(self, request, queryset):
        first = queryset.order_by("created_at").first()
        last = queryset.order_by("-created_at").first()
        accounts = list({record.account for record in queryset.select_related("account")})
        rows = []
        for account in accounts:
            rows += usage_rows(since=first.created_at.date(), until=last.created_at.date(), account=account)
        response = HttpResponse(usage_csv(rows), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="sluice-usage.csv"'
        return response


@admin.register(QuotaCounter)
class QuotaCounterAdmin(admin.ModelAdmin):
    list_display = ["scope", "account", "api_key", "period", "period_start", "granted", "used", "reserved", "remaining"]
    list_filter = ["period", "account"]
    search_fields = ["scope", "account__name"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # deleting a counter would hand its period's quota back
