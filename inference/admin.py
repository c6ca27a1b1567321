"""The model catalogue in the admin: add, change, disable or remove remote models and aliases.

The upstream key is a write-only field: the form never renders it (not even masked), the list shows only
whether one is set. Saves and deletes go through ``inference.catalogue_services`` (audit row, version bump);
Django's LogEntry records the admin action beside it, naming the changed fields only.
"""

from django import forms
from django.contrib import admin

from inference.catalogue_services import catalogue_entry_delete, catalogue_entry_save
from inference.models import CatalogueChange, CatalogueEntry


class CatalogueEntryForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False, strip=True, label="Upstream API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted, never shown again. Leave empty to keep the stored key.")
    clear_api_key = forms.BooleanField(required=False, label="Forget the stored key")

    class Meta:
        model = CatalogueEntry
        fields = ["name", "enabled", "alias_of", "urls", "upstream_model", "tokenizer", "context_window", "defaults",
                  "api_key", "clear_api_key", "api_key_env"]


@admin.register(CatalogueEntry)
class CatalogueEntryAdmin(admin.ModelAdmin):
    form = CatalogueEntryForm
    list_display = ["name", "enabled", "alias_of", "upstream_model", "url_list", "has_api_key", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "alias_of", "upstream_model"]
    readonly_fields = ["api_key_stored", "created_at", "updated_at"]

    @admin.display(description="upstreams")
    def url_list(self, entry):
        return ", ".join(entry.urls or [])

    @admin.display(boolean=True, description="key")
    def has_api_key(self, entry):
        return entry.api_key_set

    @admin.display(description="Stored key")
    def api_key_stored(self, entry):
        if entry.api_key_env:
            return f"from the environment variable {entry.api_key_env}"
        return "yes (encrypted)" if entry.api_key_encrypted else "none"

    def save_model(self, request, obj, form, change):
        catalogue_entry_save(entry=obj, user=request.user, via="admin", api_key=form.cleaned_data.get("api_key"),
                             clear_api_key=form.cleaned_data.get("clear_api_key", False))

    def delete_model(self, request, obj):
        catalogue_entry_delete(entry=obj, user=request.user, via="admin")

    def delete_queryset(self, request, queryset):
        for entry in queryset:
            catalogue_entry_delete(entry=entry, user=request.user, via="admin")


@admin.register(CatalogueChange)
class CatalogueChangeAdmin(admin.ModelAdmin):
    """The audit trail: read-only."""

    list_display = ["at", "actor", "via", "action", "model_name", "changes"]
    list_filter = ["via", "action"]
    search_fields = ["model_name", "actor"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
