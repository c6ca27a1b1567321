"""The operator's side of the console: memberships (invite the first owner here) and the key change log."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from accounts.members import ROLE_NAMES, MembershipRefused, member_invite
from accounts.models import OWNER, KeyEvent, Membership
from platform.console.invitations import invitation_email


class InviteMemberForm(forms.ModelForm):
    """Adding a membership in the admin invites a person by email (their user is made if need be)."""

    email = forms.EmailField(help_text="They get an email with a one-time link to choose their password.")
    role = forms.ChoiceField(choices=[(role, role) for role in ROLE_NAMES], initial=OWNER)

    class Meta:
        model = Membership
        fields = ["account", "email", "role"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "account", "role", "invited_by", "created_at"]
    list_filter = ["role", "account"]
    search_fields = ["user__email", "user__username", "account__name"]
    list_select_related = ["user", "account", "invited_by"]
    actions = ["send_invitation"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = InviteMemberForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ["account", "email", "role"] if obj is None else ["account", "user", "role", "invited_by", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["account", "user", "invited_by", "created_at"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        try:
            created = member_invite(account=form.cleaned_data["account"], email=form.cleaned_data["email"],
                                    role=form.cleaned_data["role"], invited_by=request.user)
        except MembershipRefused as refused:
            self.message_user(request, str(refused), level=messages.ERROR)
            return
        obj.pk = created.pk
        obj.user, obj.account, obj.role = created.user, created.account, created.role
        invitation_email(membership=created, base_url=request.build_absolute_uri("/"))
        self.message_user(request, f"Invitation sent to {created.user.email}.")

    def save_related(self, request, form, formsets, change):
        if form.instance.pk:
            super().save_related(request, form, formsets, change)

    @admin.action(description="Send a set-password invitation to the selected members", permissions=["change"])
    def send_invitation(self, request, queryset):
        for membership in queryset.select_related("user", "account", "invited_by"):
            invitation_email(membership=membership, base_url=request.build_absolute_uri("/"))
        self.message_user(request, f"Sent {queryset.count()} invitation(s).")


@admin.register(KeyEvent)
class KeyEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "account", "api_key", "action", "actor"]
    list_filter = ["action", "account"]
    list_select_related = ["account", "api_key", "actor"]
    readonly_fields = ["created_at", "account", "api_key", "action", "actor", "detail"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the record of who changed which key
