# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pending certificate work: one row per public key a phone sent, from arrival to issuance."""

from __future__ import annotations

from typing import Any

from ..vocabulary import format_utc, utc_now
from .backend import Transaction


def add(tx: Transaction, phone_id: int, public_key_fingerprint: str, public_key: bytes) -> int:
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, status, created_at, updated_at) "
        "VALUES (?, ?, ?, 'pending', ?, ?)", (phone_id, public_key_fingerprint, public_key, now, now))


def set_status(tx: Transaction, csr_id: int, status: str, reason: str = "", certificate_id: int | None = None) -> None:
    tx.execute("UPDATE csrs SET status = ?, reason = ?, certificate_id = COALESCE(?, certificate_id), updated_at = ? "
               "WHERE id = ?", (status, reason, certificate_id, format_utc(utc_now()), csr_id))


def fail_pending(tx: Transaction, csr_id: int, reason: str) -> bool:
    """Mark the CSR ``failed`` with ``reason`` if it is still ``pending``; whether it was."""
    return tx.execute("UPDATE csrs SET status = 'failed', reason = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
                      (reason, format_utc(utc_now()), csr_id)) > 0


def for_certificate(tx: Transaction, certificate_id: int) -> dict[str, Any] | None:
    """The CSR a certificate was issued for (its newest, should there be several)."""
    return tx.one("SELECT * FROM csrs WHERE certificate_id = ? ORDER BY id DESC LIMIT 1", (certificate_id,))


def pending_since(tx: Transaction, phone_id: int, since: str) -> list[int]:
    """Ids of the phone's ``pending`` CSRs created at or after ``since`` (a session's own requests)."""
    return [row["id"] for row in tx.query("SELECT id FROM csrs WHERE phone_id = ? AND status = 'pending' "
                                          "AND created_at >= ? ORDER BY id", (phone_id, since))]


def listing(tx: Transaction, status: str | None = "pending") -> list[dict[str, Any]]:
    """CSR rows with their device names, oldest first (``status=None``: every row)."""
    sql = ("SELECT r.id, p.name AS device_name, r.public_key_fingerprint, r.status, r.reason, r.certificate_id, "
           "r.created_at, r.updated_at FROM csrs r JOIN phones p ON p.id = r.phone_id")
    params: tuple = ()
    if status:
        sql += " WHERE r.status = ?"
        params = (status,)
    return tx.query(sql + " ORDER BY r.created_at, r.id", params)


# CSRs waiting for a signature: not yet sent to a CA, or sent and not yet answered.
AWAITING_SIGNATURE = ("pending", "submitted")


def awaiting_signature_statement() -> tuple[str, tuple]:
    """The statement ``awaiting_signature`` runs, with its parameters."""
    return ("SELECT p.name AS device_name, r.id, r.status, r.public_key_fingerprint, r.external_ref, r.created_at, "
            "r.updated_at FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE r.status IN (%s) "
            "ORDER BY r.created_at, r.id" % ", ".join("?" * len(AWAITING_SIGNATURE)), AWAITING_SIGNATURE)


def awaiting_signature(tx: Transaction) -> list[dict[str, Any]]:
    """CSRs waiting for a signature (``AWAITING_SIGNATURE``) with their device names, oldest first."""
    return tx.query(*awaiting_signature_statement())
