# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CRLs the CAPF service signed: every node serves the newest one from here."""

from __future__ import annotations

from typing import Any

from ..vocabulary import format_utc, utc_now
from . import audit
from .backend import Transaction

_SUMMARY = "number, signer_fingerprint, this_update, next_update, entries, revocation_mark, created_at"


def latest(tx: Transaction, with_der: bool = True) -> dict[str, Any] | None:
    """The CRL with the highest number (its DER as bytes with ``with_der``), or None."""
    row = tx.one(f"SELECT {_SUMMARY}{', der' if with_der else ''} FROM crls ORDER BY number DESC LIMIT 1")
    if row is not None and with_der:
        row["der"] = bytes(row["der"])
    return row


def next_number(tx: Transaction) -> int:
    """The number of the next CRL: one more than any before, so it only grows (RFC 5280 5.2.3)."""
    return int(tx.scalar("SELECT COALESCE(MAX(number), 0) FROM crls") or 0) + 1


def insert(tx: Transaction, actor: str, *, number: int, signer_fingerprint: str, this_update: str, next_update: str,
           entries: int, revocation_mark: str, der: bytes) -> None:
    """Record CRL ``number`` (with its audit event ``crl.signed``) and forget all but the ten before it."""
    tx.execute("INSERT INTO crls (number, signer_fingerprint, this_update, next_update, entries, revocation_mark, "
               "der, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (number, signer_fingerprint, this_update, next_update, entries, revocation_mark, der,
                format_utc(utc_now())))
    tx.execute("DELETE FROM crls WHERE number < ?", (number - 10,))
    audit.record(tx, actor, "crl.signed", "crl", number=number, entries=entries, this_update=this_update,
                 next_update=next_update)
