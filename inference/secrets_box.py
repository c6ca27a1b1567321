"""Upstream API keys at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from SECRET_KEY.

Rotating SECRET_KEY makes stored keys unreadable: the model then goes upstream without a key (logged, naming
the model only) until its key is entered again. A key referenced by environment variable name is never stored.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"sluice upstream api keys\0" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def secret_encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def secret_decrypt(token: str) -> str | None:
    """The plaintext, "" for no key, or None when it cannot be read (SECRET_KEY changed)."""
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        return None
