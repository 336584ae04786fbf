# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phone certificates (LSCs and retrieved MICs) with their status history."""

from __future__ import annotations

from typing import Any

from ..vocabulary import format_utc, utc_now
from . import audit
from .backend import Transaction


def insert(tx: Transaction, *, phone_id: int, kind: str, serial: str, issuer: str, fingerprint: str,
           public_key_fingerprint: str, status: str, source: str, pem: str, not_before: str,
           not_after: str) -> int:
    now = format_utc(utc_now())
    return tx.insert(
        "INSERT INTO certificates (phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, status, "
        "source, pem, not_before, not_after, issued_at, installed_at, status_changed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, status, source, pem, not_before,
         not_after, now, now if status == "installed" else None, now),
    )


def serial_taken(tx: Transaction, issuer: str, serial: str) -> bool:
    return tx.one("SELECT 1 AS taken FROM certificates WHERE issuer = ? AND serial = ?", (issuer, serial)) is not None


def set_status(tx: Transaction, actor: str, certificate_id: int, status: str, subject: str = "", **details) -> None:
    now = format_utc(utc_now())
    installed = ", installed_at = ?" if status == "installed" else ""
    params: tuple = (status, now, now, certificate_id) if installed else (status, now, certificate_id)
    tx.execute(f"UPDATE certificates SET status = ?, status_changed_at = ?{installed} WHERE id = ?", params)
    audit.record(tx, actor, f"certificate.{status}", subject, certificate_id=certificate_id, **details)


def for_phone(tx: Transaction, phone_id: int, kind: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM certificates WHERE phone_id = ?"
    params: list = [phone_id]
    if kind:
        sql += " AND kind = ?"
        params.append(kind)
    return tx.query(sql + " ORDER BY id DESC", params)
