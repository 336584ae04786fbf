# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CRLs the CAPF service signed, one series per CAPF certificate (``signer_fingerprint``): every
node serves the newest of each from here. CRL numbers come from one sequence, so each series only grows,
and follow the signing time, so a store restored from a backup does not go back."""

from __future__ import annotations

from typing import Any

from ..vocabulary import format_utc, utc_now
from . import audit
from .capf_certificates import keeps_crl
from .backend import Transaction

_SUMMARY = "number, signer_fingerprint, this_update, next_update, entries, revocation_mark, created_at"
KEPT_PER_SIGNER = 10  # older CRLs of a CAPF certificate kept besides its newest


def latest(tx: Transaction, signer_fingerprint: str | None = None, with_der: bool = True) -> dict[str, Any] | None:
    """The CRL with the highest number (of the CAPF certificate ``signer_fingerprint``, else of any),
    its DER as bytes with ``with_der``, or None."""
    where, params = ("WHERE signer_fingerprint = ? ", (signer_fingerprint,)) if signer_fingerprint else ("", ())
    row = tx.one(f"SELECT {_SUMMARY}{', der' if with_der else ''} FROM crls {where}ORDER BY number DESC LIMIT 1",
                 params)
    if row is not None and with_der:
        row["der"] = bytes(row["der"])
    return row


def newest_per_signer(tx: Transaction) -> list[dict[str, Any]]:
    """The newest CRL of each CAPF certificate that signed one (without DER), highest number first."""
    return tx.query(f"SELECT {_SUMMARY} FROM crls c WHERE number = (SELECT MAX(number) FROM crls d "
                    "WHERE d.signer_fingerprint = c.signer_fingerprint) ORDER BY number DESC")


def newest_per_signer_kept(tx: Transaction, now: str) -> list[dict[str, Any]]:
    """The newest CRL (without DER) of each CAPF certificate that signed one, with the certificate's
    ``common_name``, ``active`` and ``not_after``, and ``kept``: whether it keeps a CRL at ``now`` (the
    active one, and each retired one that has not expired; ``authority.crl_issuers``). Highest number first."""
    rows = tx.query("SELECT c.number, c.signer_fingerprint, c.this_update, c.next_update, c.entries, "
                    "c.revocation_mark, c.created_at, k.common_name, k.active, k.not_after FROM crls c "
                    "JOIN capf_certificates k ON k.fingerprint = c.signer_fingerprint "
                    "WHERE c.number = (SELECT MAX(number) FROM crls d WHERE d.signer_fingerprint = c.signer_fingerprint) "
                    "ORDER BY c.number DESC")
    for row in rows:
        row["active"] = bool(row["active"])
        row["kept"] = keeps_crl(row, now)
    return rows


def der(tx: Transaction, number: int) -> bytes | None:
    """The DER of CRL ``number``, or None when the store no longer keeps it."""
    row = tx.one("SELECT der FROM crls WHERE number = ?", (number,))
    return None if row is None else bytes(row["der"])


def next_number(tx: Transaction, at_least: int = 1) -> int:
    """The number of the next CRL: one more than any before, so it only grows (RFC 5280 5.2.3), and
    not below ``at_least`` (the signing time in milliseconds: a store restored from an older backup
    does not give the numbers of the CRLs published since to other CRLs)."""
    return max(int(tx.scalar("SELECT COALESCE(MAX(number), 0) FROM crls") or 0) + 1, at_least)


def insert(tx: Transaction, actor: str, *, number: int, signer_fingerprint: str, this_update: str, next_update: str,
           entries: int, revocation_mark: str, der: bytes, clock_behind_seconds: int = 0,
           previous_this_update: str | None = None) -> None:
    """Record CRL ``number`` (with its audit event ``crl.signed``) and forget all but the newest
    ``KEPT_PER_SIGNER`` CRLs before it of the same CAPF certificate. ``clock_behind_seconds``: how far
    ``previous_this_update``, the thisUpdate of the CRL before it, was after the signer's clock, when the
    signer found that too far (the audit event then says so)."""
    tx.execute("INSERT INTO crls (number, signer_fingerprint, this_update, next_update, entries, revocation_mark, "
               "der, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (number, signer_fingerprint, this_update, next_update, entries, revocation_mark, der,
                format_utc(utc_now())))
    kept = tx.query("SELECT number FROM crls WHERE signer_fingerprint = ? AND number < ? ORDER BY number DESC "
                    "LIMIT ?", (signer_fingerprint, number, KEPT_PER_SIGNER))
    if len(kept) == KEPT_PER_SIGNER:
        tx.execute("DELETE FROM crls WHERE signer_fingerprint = ? AND number < ?", (signer_fingerprint, kept[-1]["number"]))
    clock = ({"clock_behind_seconds": clock_behind_seconds, "previous_this_update": previous_this_update}
             if clock_behind_seconds else {})
    audit.record(tx, actor, "crl.signed", "crl", number=number, signer_fingerprint=signer_fingerprint,
                 entries=entries, this_update=this_update, next_update=next_update, **clock)


def update_revocation_mark(tx: Transaction, was: str, now: str) -> None:
    """The newest CRL of each CAPF certificate whose revocation mark is ``was``, the mark before revoked
    LSCs were delisted (``certificates.delist``) in the transaction, takes the mark after it, ``now``:
    those CRLs saw every revocation, and a delisting is none (a CRL may still list what was delisted)."""
    tx.execute("UPDATE crls SET revocation_mark = ? WHERE revocation_mark = ? AND number IN (SELECT MAX(number) "
               "FROM crls GROUP BY signer_fingerprint)", (now, was))
