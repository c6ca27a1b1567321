"""The API key format: ``sk-sluice-`` + lookup id (12) + secret (32) + checksum (6), all base62.

Only the lookup id and a SHA-256 of the whole key are stored. The secret has 190 bits of entropy, so a
fast hash is the right one (no password stretching needed), and a leaked database yields no usable key.
The CRC32 checksum lets the server reject mistyped or made-up keys without a database query.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass

PREFIX = "sk-sluice-"
_ALPHABET = string.digits + string.ascii_letters
LOOKUP_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + LOOKUP_ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH


@dataclass(frozen=True)
class ParsedKey:
    lookup_id: str
    hashed: str


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _base62(number: int, length: int) -> str:
    digits = []
    for _ in range(length):
        number, remainder = divmod(number, 62)
        digits.append(_ALPHABET[remainder])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def key_generate() -> tuple[str, str, str]:
    """A new key: (plaintext, lookup_id, hash). The plaintext is shown once and never stored."""
    lookup_id = _random_base62(LOOKUP_ID_LENGTH)
    body = lookup_id + _random_base62(SECRET_LENGTH)
    plaintext = PREFIX + body + _checksum(body)
    return plaintext, lookup_id, hash_key(plaintext)


def key_parse(plaintext: str) -> ParsedKey | None:
    """The lookup id and hash of a well-formed key, or None for anything malformed (no query needed)."""
    if len(plaintext) != KEY_LENGTH or not plaintext.startswith(PREFIX):
        return None
    body, checksum = plaintext[len(PREFIX) : -CHECKSUM_LENGTH], plaintext[-CHECKSUM_LENGTH:]
    if any(char not in _ALPHABET for char in body) or not hmac.compare_digest(_checksum(body), checksum):
        return None
    return ParsedKey(lookup_id=body[:LOOKUP_ID_LENGTH], hashed=hash_key(plaintext))


def hashes_match(stored: str, presented: str) -> bool:
    return hmac.compare_digest(stored.encode(), presented.encode())
