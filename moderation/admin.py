from django.contrib import admin

from accounts import clock
from moderation.categories import CATEGORIES
from moderation.models import AllowedCount, ModerationEvent, ModerationPolicy, PolicyRule


class PolicyRuleInline(admin.TabularInline):
    model = PolicyRule
    extra = 0


@admin.register(ModerationPolicy)
class ModerationPolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "account", "check_input", "check_output", "strike_limit", "strike_window_minutes"]
    search_fields = ["name", "account__name"]
    inlines = [PolicyRuleInline]


class CategoryFilter(admin.SimpleListFilter):
    title = "category"
    parameter_name = "category"

    def lookups(self, request, model_admin):
        return [(category, category) for category in CATEGORIES]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        # JSON containment is not on SQLite; a quoted-name match works on both and names are distinct.
        return queryset.filter(categories__icontains=f'"{self.value()}"')


@admin.register(ModerationEvent)
class ModerationEventAdmin(admin.ModelAdmin):
    """The review queue: flagged, redacted and blocked events. Reviewing never changes the original."""

    list_display = ["created_at", "action", "direction", "category_list", "account", "api_key", "endpoint",
                    "short_text", "review_status"]
    list_filter = ["review_status", "action", "direction", CategoryFilter, "account", "created_at"]
    search_fields = ["request_id", "text", "account__name", "api_key__lookup_id"]
    date_hierarchy = "created_at"
    list_select_related = ["account", "api_key"]
    readonly_fields = [f.name for f in ModerationEvent._meta.fields if f.name not in ("review_status",)]
    actions = ["mark_confirmed", "mark_false_positive"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="categories")
    def category_list(self, event):
        return ", ".join(event.categories)

    @admin.display(description="text")
    def short_text(self, event):
        return event.text[:80] + ("…" if len(event.text) > 80 else "")

    def save_model(self, request, obj, form, change):
        if "review_status" in form.changed_data:
            obj.reviewed_by, obj.reviewed_at = request.user, clock.now()
        super().save_model(request, obj, form, change)

    def _review(self, request, queryset, status):
        count = queryset.update(review_status=status, reviewed_by=request.user, reviewed_at=clock.now())
        self.message_user(request, f"Marked {count} event(s) as {status.replace('_', ' ')}.")

    @admin.action(description="Mark confirmed", permissions=["change"])
    def mark_confirmed(self, request, queryset):
        self._review(request, queryset, ModerationEvent.CONFIRMED)

    @admin.action(description="Mark false positive", permissions=["change"])
    def mark_false_positive(self, request, queryset):
        self._review(request, queryset, ModerationEvent.FALSE_POSITIVE)


@admin.register(AllowedCount)
class AllowedCountAdmin(admin.ModelAdmin):
    list_display = ["day", "direction", "count"]
    list_filter = ["direction"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


