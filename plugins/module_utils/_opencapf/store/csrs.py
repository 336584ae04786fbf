# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pending certificate work: one row per public key a phone sent, from arrival to issuance."""

from __future__ import annotations

from typing import Any

from ..vocabulary import format_utc, utc_now
from . import audit
from .backend import Transaction


def add(tx: Transaction, phone_id: int, public_key_fingerprint: str, public_key: bytes) -> int:
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, status, created_at, updated_at) "
        "VALUES (?, ?, ?, 'pending', ?, ?)", (phone_id, public_key_fingerprint, public_key, now, now))


def add_issued(tx: Transaction, phone_id: int, public_key_fingerprint: str, public_key: bytes,
               certificate_id: int) -> int:
    """Record a public key together with the LSC issued for it (status ``issued``); return its id."""
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, status, certificate_id, created_at, updated_at) "
        "VALUES (?, ?, ?, 'issued', ?, ?, ?)", (phone_id, public_key_fingerprint, public_key, certificate_id, now, now))


def add_failed(tx: Transaction, phone_id: int, public_key_fingerprint: str, public_key: bytes, reason: str) -> int:
    """Record a public key no LSC could be issued for (status ``failed`` with ``reason``); return its id."""
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, status, reason, created_at, updated_at) "
        "VALUES (?, ?, ?, 'failed', ?, ?, ?)", (phone_id, public_key_fingerprint, public_key, reason, now, now))


def add_signed(tx: Transaction, phone_id: int, public_key_fingerprint: str, public_key: bytes, csr_pem: str) -> int:
    """Record a phone-signed CSR (for a third-party CA) as ``pending``; return its id."""
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, csr_pem, status, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
        (phone_id, public_key_fingerprint, public_key, csr_pem, now, now))


def set_status(tx: Transaction, csr_id: int, status: str, reason: str = "", certificate_id: int | None = None,
               external_ref: str | None = None) -> None:
    """Set a CSR's status and reason; a ``certificate_id`` or ``external_ref`` given replaces the stored one."""
    tx.execute("UPDATE csrs SET status = ?, reason = ?, certificate_id = COALESCE(?, certificate_id), "
               "external_ref = COALESCE(?, external_ref), updated_at = ? WHERE id = ?",
               (status, reason, certificate_id, external_ref, format_utc(utc_now()), csr_id))


def status_of(tx: Transaction, csr_id: int) -> str | None:
    """The CSR's status now (None: no such CSR)."""
    row = tx.one("SELECT status FROM csrs WHERE id = ?", (csr_id,))
    return None if row is None else row["status"]


def supersede(tx: Transaction, csr_id: int, reason: str) -> None:
    """Mark a CSR ``superseded`` with ``reason``."""
    tx.execute("UPDATE csrs SET status = 'superseded', reason = ?, updated_at = ? WHERE id = ?",
               (reason, format_utc(utc_now()), csr_id))


def supersede_for_certificate(tx: Transaction, certificate_id: int, reason: str) -> None:
    """Mark the CSRs the certificate ``certificate_id`` was issued for ``superseded`` with ``reason``."""
    tx.execute("UPDATE csrs SET status = 'superseded', reason = ?, updated_at = ? WHERE certificate_id = ?",
               (reason, format_utc(utc_now()), certificate_id))


def unfinished_signed(tx: Transaction, phone_id: int) -> list[int]:
    """The ids of the phone's phone-signed CSRs still ``pending`` or ``issued``."""
    return [row["id"] for row in tx.query("SELECT id FROM csrs WHERE phone_id = ? AND status IN ('pending', 'issued') "
                                          "AND csr_pem IS NOT NULL", (phone_id,))]


def waiting_certificate(tx: Transaction, csr_id: int) -> int | None:
    """The id of the certificate issued for the CSR and not yet delivered (status ``issued``), or None."""
    row = tx.one("SELECT c.id FROM csrs r JOIN certificates c ON c.id = r.certificate_id "
                 "WHERE r.id = ? AND c.status = 'issued'", (csr_id,))
    return None if row is None else row["id"]


def latest_signed(tx: Transaction, phone_id: int) -> dict[str, Any] | None:
    """The phone's newest phone-signed CSR (id, status, external_ref, certificate_id) with its
    certificate's ``certificate_status`` and ``pem``, or None."""
    return tx.one("SELECT r.id, r.status, r.external_ref, r.certificate_id, c.status AS certificate_status, "
                  "c.pem FROM csrs r LEFT JOIN certificates c ON c.id = r.certificate_id "
                  "WHERE r.phone_id = ? AND r.csr_pem IS NOT NULL ORDER BY r.id DESC LIMIT 1", (phone_id,))


def pending_online(tx: Transaction, device_name: str | None = None) -> list[dict[str, Any]]:
    """CSRs pending at an online CA (id, csr_pem, external_ref and the phone's ``name``), oldest first:
    all of them or those of the phone ``device_name``."""
    sql = ("SELECT r.id, r.csr_pem, r.external_ref, p.name FROM csrs r JOIN phones p ON p.id = r.phone_id "
           "WHERE r.status = 'pending' AND r.external_ref IS NOT NULL")
    params: tuple = ()
    if device_name:
        sql += " AND p.name = ?"
        params = (device_name,)
    return tx.query(sql + " ORDER BY r.id", params)


def offline_signed(tx: Transaction, status: str) -> list[dict[str, Any]]:
    """Phone-signed CSRs in ``status`` with no online CA's reference (id, csr_pem, created_at and the
    phone's ``name``), oldest first."""
    return tx.query("SELECT r.id, r.csr_pem, r.created_at, p.name FROM csrs r JOIN phones p ON p.id = r.phone_id "
                    "WHERE r.status = ? AND r.csr_pem IS NOT NULL AND r.external_ref IS NULL ORDER BY r.id",
                    (status,))


def fail_pending(tx: Transaction, csr_id: int, reason: str) -> bool:
    """Mark the CSR ``failed`` with ``reason`` if it is still ``pending``; whether it was."""
    return tx.execute("UPDATE csrs SET status = 'failed', reason = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
                      (reason, format_utc(utc_now()), csr_id)) > 0


def pending_of_phones(tx: Transaction, phone_ids) -> list[dict[str, Any]]:
    """The ``pending`` CSRs (id, phone_id, public_key) of the phones ``phone_ids``, oldest first: one
    query (for more than 500 phones, a bulk job's, every pending CSR, read through the index
    ``csrs_status``, and those of the phones kept)."""
    ids = set(phone_ids)
    sql = "SELECT id, phone_id, public_key FROM csrs WHERE status = 'pending'"
    if len(ids) > 500:
        return [row for row in tx.query(sql + " ORDER BY id") if row["phone_id"] in ids]
    ordered = sorted(ids)
    return tx.query(sql + " AND phone_id IN (%s) ORDER BY id" % ", ".join("?" * len(ordered)), ordered) if ids else []


# Why a lapse (the scheduler's, or a session's at the phone's contact) fails the phone's CSRs still at a CA.
LAPSED = "the operation's deadline (operation_completes_by) passed while the CA held the request"


def withdraw_pending(tx: Transaction, actor: str, phones: dict[int, str], reason: str, **details: Any) -> list[int]:
    """Fail the ``pending`` CSRs of ``phones`` (id -> name) with ``reason``, each with a ``csr.failed``
    audit event (its ``csr_id``, ``reason`` and ``details``): the operation they were made for is
    withdrawn, so a CA's later answer is stale. The ids failed."""
    failed = []
    for row in pending_of_phones(tx, phones):
        if fail_pending(tx, row["id"], reason):
            audit.record(tx, actor, "csr.failed", phones[row["phone_id"]], csr_id=row["id"], reason=reason, **details)
            failed.append(row["id"])
    return failed


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


def awaiting_signature_for(tx: Transaction, device_name: str) -> list[dict[str, Any]]:
    """The CSRs of one phone waiting for a signature (``AWAITING_SIGNATURE``), oldest first."""
    return tx.query("SELECT r.id, r.status, r.public_key_fingerprint, r.external_ref, r.created_at, r.updated_at "
                    "FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE p.name = ? AND r.status IN (%s) "
                    "ORDER BY r.created_at, r.id" % ", ".join("?" * len(AWAITING_SIGNATURE)),
                    (device_name, *AWAITING_SIGNATURE))
