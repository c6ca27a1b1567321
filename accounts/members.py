"""People in accounts: memberships, roles, invitations, and the key changes members make (each recorded).

Roles: an owner may do everything, members included; a developer manages keys, uses the playground and
reads usage; a viewer reads usage only. The console (``platform/console``) asks ``role_allows`` before
every page, and finds the account through ``membership_of``, so nobody reaches an account they are not in.

An invitation is Django's password-reset machinery: the invited user is created without a usable password
and gets a link with a ``default_token_generator`` token, valid once (setting the password changes the
hash the token is made from) and for ``PASSWORD_RESET_TIMEOUT``.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.db import transaction
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import DEVELOPER, OWNER, ROLES, VIEWER, Account, ApiKey, KeyEvent, Membership
from accounts.services import CreatedKey, key_create, key_limits_check, key_revoke, key_rotate

USAGE, QUOTAS, KEYS, PLAYGROUND, MODERATION, MODERATION_TEXT, MEMBERS = (
    "usage", "quotas", "keys", "playground", "moderation", "moderation_text", "members")
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    OWNER: frozenset({USAGE, QUOTAS, KEYS, PLAYGROUND, MODERATION, MODERATION_TEXT, MEMBERS}),
    DEVELOPER: frozenset({USAGE, QUOTAS, KEYS, PLAYGROUND, MODERATION}),
    VIEWER: frozenset({USAGE}),
}
ROLE_NAMES = [role for role, _ in ROLES]


class MembershipRefused(Exception):
    """A change to the members that would break the account (the message says why)."""


def role_allows(role: str, permission: str) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def memberships_of(*, user) -> list[Membership]:
    """Every account this user is a member of, by account name."""
    if not getattr(user, "is_authenticated", False):
        return []
    return list(Membership.objects.filter(user=user).select_related("account").order_by("account__name"))


def membership_of(*, user, account_id: int) -> Membership | None:
    """This user's membership of that account, or None: callers answer 404 (another account's id does not
    exist for this user)."""
    if not getattr(user, "is_authenticated", False):
        return None
    return Membership.objects.select_related("account").filter(user=user, account_id=account_id).first()


def members_of(*, account: Account) -> list[Membership]:
    return list(Membership.objects.filter(account=account).select_related("user").order_by("user__email"))


def member_invite(*, account: Account, email: str, role: str, invited_by=None) -> Membership:
    """Add a person to an account, creating their user (no usable password yet) if they have none."""
    if role not in ROLE_NAMES:
        raise MembershipRefused(f"Unknown role {role!r}: choose one of {', '.join(ROLE_NAMES)}.")
    email = get_user_model().objects.normalize_email(email.strip()).lower()
    if not email or "@" not in email:
        raise MembershipRefused("Give an email address.")
    users = get_user_model().objects
    with transaction.atomic():
        user = users.filter(email__iexact=email).first() or users.filter(username__iexact=email).first()
        if user is None:
            user = users.create_user(username=email, email=email)  # no password: unusable until they set one
        if Membership.objects.filter(account=account, user=user).exists():
            raise MembershipRefused(f"{email} is already a member of {account.name}.")
        return Membership.objects.create(account=account, user=user, role=role, invited_by=invited_by)


def invitation_path_parts(*, user) -> tuple[str, str]:
    """The (uidb64, token) pair of a set-password link, as Django's password reset makes them."""
    return urlsafe_base64_encode(force_bytes(user.pk)), default_token_generator.make_token(user)


def invitation_send(*, membership: Membership, link: str) -> None:
    """Email the invitation (through EMAIL_BACKEND; the console backend by default)."""
    inviter = membership.invited_by.get_username() if membership.invited_by else "The Sluice operators"
    send_mail(
        subject=f"You are invited to {membership.account.name} on Sluice",
        message=(
            f"{inviter} invited you to the account {membership.account.name} as {membership.role}.\n\n"
            f"Choose your password here (the link works once):\n{link}\n\n"
            f"Then sign in with your email address, {membership.user.email}.\n"
        ),
        from_email=None,
        recipient_list=[membership.user.email],
    )


def member_set_role(*, membership: Membership, role: str) -> Membership:
    if role not in ROLE_NAMES:
        raise MembershipRefused(f"Unknown role {role!r}.")
    with transaction.atomic():
        if membership.role == OWNER and role != OWNER:
            _refuse_if_last_owner(membership)
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def member_remove(*, membership: Membership) -> None:
    with transaction.atomic():
        if membership.role == OWNER:
            _refuse_if_last_owner(membership)
        membership.delete()


def _refuse_if_last_owner(membership: Membership) -> None:
    owners = Membership.objects.select_for_update().filter(account_id=membership.account_id, role=OWNER)
    if not owners.exclude(pk=membership.pk).exists():
        raise MembershipRefused("An account keeps at least one owner.")


def member_key_create(
    *,
    account: Account,
    actor,
    name: str,
    scopes: list[str],
    allowed_models: list[str],
    expires_at=None,
    limits: dict | None = None,
) -> CreatedKey:
    """A key made by a member, within what the account allows (limits never above the account's)."""
    limits = {field: value for field, value in (limits or {}).items() if value is not None}
    key_limits_check(account=account, limits_requested=limits)
    with transaction.atomic():
        created = key_create(account=account, name=name, scopes=scopes, expires_at=expires_at,
                             allowed_models=allowed_models)
        for field, value in limits.items():
            setattr(created.key, field, value)
        if limits:
            created.key.save(update_fields=list(limits))
        key_event_record(key=created.key, actor=actor, action=KeyEvent.CREATED,
                         detail={"scopes": scopes, "allowed_models": allowed_models,
                                 "expires_at": expires_at.isoformat() if expires_at else None, **limits})
    return created


def member_key_revoke(*, key: ApiKey, actor) -> ApiKey:
    already = key.revoked_at is not None
    key = key_revoke(key=key)
    if not already:
        key_event_record(key=key, actor=actor, action=KeyEvent.REVOKED)
    return key


def member_key_rotate(*, key: ApiKey, actor, grace_seconds: int) -> CreatedKey:
    if key.revoked_at is not None:
        raise MembershipRefused("A revoked key cannot be rotated.")
    created = key_rotate(key=key, grace_seconds=grace_seconds)
    key_event_record(key=key, actor=actor, action=KeyEvent.ROTATED,
                     detail={"new_key": created.key.lookup_id, "grace_seconds": grace_seconds})
    key_event_record(key=created.key, actor=actor, action=KeyEvent.CREATED, detail={"rotated_from": key.lookup_id})
    return created


def key_event_record(*, key: ApiKey, actor, action: str, detail: dict | None = None) -> KeyEvent:
    return KeyEvent.objects.create(account_id=key.account_id, api_key=key, actor=actor if getattr(
        actor, "is_authenticated", False) else None, action=action, detail=detail or {})


def key_events_of(*, account: Account, limit: int = 50) -> list[KeyEvent]:
    return list(KeyEvent.objects.filter(account=account).select_related("api_key", "actor")
                .order_by("-created_at", "-pk")[:limit])
