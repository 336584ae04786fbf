# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Authentication strings: generated, stored only as keyed hashes, compared in constant time.

The hash is HMAC-SHA256 keyed with the store's secret (a 0600 file outside the database) over a
per-phone random salt and the string, so a stolen store alone cannot be brute-forced over the
small 4\u201310 digit space, and hashing 40,000 strings stays fast.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .vocabulary import AUTH_STRING_DIGITS, check_auth_string, check_int_range

SALT_BYTES = 16
DEFAULT_LENGTH = 8


def generate(length: int = DEFAULT_LENGTH) -> str:
    """A random string of ``length`` digits (4\u201310)."""
    length = check_int_range("authentication_string_length", length, AUTH_STRING_DIGITS, " digits")
    return "".join(secrets.choice("0123456789") for _digit in range(length))


def digest(secret: bytes, salt: bytes, value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return hmac.new(secret, salt + b"\x00" + value, hashlib.sha256).digest()


def protect(secret: bytes, value: str) -> tuple[bytes, bytes]:
    """Validate an administrator's string and return (salt, keyed hash) to store."""
    check_auth_string(value)
    salt = secrets.token_bytes(SALT_BYTES)
    return salt, digest(secret, salt, value)


def matches(secret: bytes, salt: bytes | None, stored: bytes | None, offered: bytes | str) -> bool:
    """Constant-time check of what a phone offered against the stored hash."""
    if not salt or not stored:
        return False
    return hmac.compare_digest(digest(secret, bytes(salt), offered), bytes(stored))
