# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secrets the engine must be able to read back (the online CA password, a scheduled job's shared
authentication string): AES-256-GCM in the ``secrets`` table, keyed from the store's secret file.

The key is derived from the 0600 secret outside the database, so a copy of the database alone
reveals nothing. Values never appear in results, logs or audit events.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from .dependencies import AESGCM, require
from .errors import StoreError
from .store import secrets as sealed
from .store.backend import Transaction

_KEY_LABEL = b"opencapf secretbox v1"


class UndecryptableSecret(StoreError):
    """A sealed value that this store's secret file does not open (another secret file, or tampering)."""


def _key(store_secret: bytes) -> bytes:
    return hmac.new(store_secret, _KEY_LABEL, hashlib.sha256).digest()


def put(tx: Transaction, store_secret: bytes, name: str, value: str) -> None:
    """Store ``value`` encrypted under ``name`` (replacing an older value)."""
    require("cryptography")
    nonce = os.urandom(12)
    ciphertext = AESGCM(_key(store_secret)).encrypt(nonce, value.encode("utf-8"), name.encode("utf-8"))
    sealed.put(tx, name, nonce, ciphertext)


def get(tx: Transaction, store_secret: bytes, name: str) -> str | None:
    """The decrypted value stored under ``name``, or None."""
    stored = sealed.get(tx, name)
    if stored is None:
        return None
    nonce, ciphertext = stored
    require("cryptography")
    try:
        plain = AESGCM(_key(store_secret)).decrypt(nonce, ciphertext, name.encode("utf-8"))
    except Exception:  # InvalidTag: another secret file, or a tampered row
        raise UndecryptableSecret(f"secret {name!r} cannot be decrypted with this store's secret file") from None
    return plain.decode("utf-8")


def exists(tx: Transaction, name: str) -> bool:
    """Whether a secret is stored under ``name``."""
    return sealed.exists(tx, name)


def delete(tx: Transaction, name: str) -> bool:
    """Remove the secret stored under ``name``; whether there was one."""
    return sealed.delete(tx, name)


def equals(tx: Transaction, store_secret: bytes, name: str, value: str) -> bool:
    """Whether the stored secret equals ``value`` (constant-time on the decrypted bytes)."""
    stored = get(tx, store_secret, name)
    return stored is not None and hmac.compare_digest(stored.encode("utf-8"), value.encode("utf-8"))
