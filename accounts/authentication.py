"""``Authorization: Bearer <key>`` authentication for DRF."""

from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from accounts.models import ApiKey
from accounts.services import KeyRefused, key_authenticate


class KeyHolder:
    """The principal of a keyed request (``request.user``): the key and its account."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, key: ApiKey):
        self.key = key
        self.account = key.account

    def __str__(self) -> str:
        return f"key {self.key.lookup_id}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticate a request by its bearer API key.

    Returns ``(KeyHolder, ApiKey)`` for a usable key, None when no Authorization header was sent (the
    permission check then answers 401), and raises AuthenticationFailed for any key that is malformed,
    unknown, revoked, expired, suspended or belongs to an inactive account.
    """

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise exceptions.AuthenticationFailed("Send the API key as 'Authorization: Bearer <key>'.")
        try:
            key = key_authenticate(plaintext=token)
        except KeyRefused as refused:
            raise exceptions.AuthenticationFailed(str(refused)) from None
        return KeyHolder(key), key

    def authenticate_header(self, request):
        return 'Bearer realm="sluice"'


class HasScope(permissions.BasePermission):
    """The key must carry the view's ``required_scope``."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view):
        required = getattr(view, "required_scope", None)
        key = request.auth
        if not isinstance(key, ApiKey):
            return False
        if required and required not in key.scopes:
            self.message = f"This API key lacks the '{required}' scope."
            return False
        return True
