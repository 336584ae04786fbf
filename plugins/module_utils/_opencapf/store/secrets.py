# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sealed secrets as stored: a nonce and a ciphertext per name (``secretbox`` seals and opens them)."""

from __future__ import annotations

from ..vocabulary import format_utc, utc_now
from .backend import Transaction


def put(tx: Transaction, name: str, nonce: bytes, ciphertext: bytes) -> None:
    """Store a sealed value under ``name``, replacing an older one."""
    tx.execute(
        "INSERT INTO secrets (name, nonce, ciphertext, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, "
        "updated_at = excluded.updated_at",
        (name, nonce, ciphertext, format_utc(utc_now())),
    )


def get(tx: Transaction, name: str) -> tuple[bytes, bytes] | None:
    """The nonce and ciphertext stored under ``name``, or None."""
    row = tx.one("SELECT nonce, ciphertext FROM secrets WHERE name = ?", (name,))
    return None if row is None else (bytes(row["nonce"]), bytes(row["ciphertext"]))


def exists(tx: Transaction, name: str) -> bool:
    """Whether a secret is stored under ``name``."""
    return tx.one("SELECT 1 AS present FROM secrets WHERE name = ?", (name,)) is not None


def delete(tx: Transaction, name: str) -> bool:
    """Remove the secret stored under ``name``; whether there was one."""
    return tx.execute("DELETE FROM secrets WHERE name = ?", (name,)) > 0
