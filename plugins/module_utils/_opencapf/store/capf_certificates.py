# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CAPF's own certificates: the active one and its retired predecessors. Their keys are sealed
in ``secrets``; ``key_path`` names the key's cache file in the state directory's ``keys/`` (an
absolute path for certificates recorded before keys were sealed: where their key file was made)."""

from __future__ import annotations

from typing import Any

from ..vocabulary import format_utc, utc_now
from .backend import Transaction


def active(tx: Transaction) -> dict[str, Any] | None:
    """The active CAPF certificate's row, or None."""
    return tx.one("SELECT * FROM capf_certificates WHERE active = 1")


def has_active(tx: Transaction) -> bool:
    """Whether the store has an active CAPF certificate."""
    return tx.one("SELECT id FROM capf_certificates WHERE active = 1") is not None


def active_key(tx: Transaction) -> dict[str, Any] | None:
    """The active CAPF certificate's id, fingerprint, pem and key_path (what signing needs), or None."""
    return tx.one("SELECT id, fingerprint, pem, key_path FROM capf_certificates WHERE active = 1")


def keeps_crl(row: dict, now_text: str) -> bool:
    """Whether the CAPF certificate ``row`` (``active``, ``not_after``) keeps a CRL at ``now_text``: the
    active one, and each retired one until it expires (its LSCs' notAfter are capped at its own, so none
    is valid after it)."""
    return bool(row["active"]) or row["not_after"] > now_text


def state(tx: Transaction, fingerprint: str) -> str | None:
    """``active`` or ``retired`` for a CAPF certificate the store has had, else None."""
    row = tx.one("SELECT active FROM capf_certificates WHERE fingerprint = ?", (fingerprint,))
    if row is None:
        return None
    return "active" if row["active"] else "retired"


def activate(tx: Transaction, *, common_name: str, serial: str, fingerprint: str, key_type: str, key_path: str,
             pem: str, not_before: str, not_after: str, source: str) -> int:
    """Record a CAPF certificate as the active one, retiring the one before; return its id."""
    now = format_utc(utc_now())
    tx.execute("UPDATE capf_certificates SET active = 0, retired_at = ? WHERE active = 1", (now,))
    return tx.insert(
        "INSERT INTO capf_certificates (common_name, serial, fingerprint, key_type, key_path, pem, not_before, "
        "not_after, source, active, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
        (common_name, serial, fingerprint, key_type, key_path, pem, not_before, not_after, source, now),
    )


def history(tx: Transaction) -> list[dict[str, Any]]:
    """Every CAPF certificate's row, newest first."""
    return tx.query("SELECT * FROM capf_certificates ORDER BY id DESC")


def pems(tx: Transaction) -> list[str]:
    """Every CAPF certificate's PEM, newest first."""
    return [row["pem"] for row in tx.query("SELECT pem FROM capf_certificates ORDER BY id DESC")]


def expiring(tx: Transaction, before: str) -> list[dict[str, Any]]:
    """Every CAPF certificate (active or retired) that expires before ``before``, soonest first, without its PEM."""
    return tx.query("SELECT id, common_name, serial, fingerprint, not_after, active FROM capf_certificates "
                    "WHERE not_after < ? ORDER BY not_after, id", (before,))
