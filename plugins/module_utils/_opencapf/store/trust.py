# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Trust-store certificates as stored: one row per trust store and fingerprint, with the certificate's PEM."""

from __future__ import annotations

from typing import Any

from ..vocabulary import format_utc, utc_now
from .backend import Transaction

# The columns of a row as listed (every column but the PEM and the creation time).
COLUMNS = "id, trust_store, fingerprint, subject, common_name, issuer, is_ca, not_after, description"


def listing(tx: Transaction, trust_store: str | None = None) -> list[dict[str, Any]]:
    """The rows (``COLUMNS``) of one trust store or of all, by trust store, common name and fingerprint."""
    sql = f"SELECT {COLUMNS} FROM trust_certificates"
    params: tuple = ()
    if trust_store:
        sql += " WHERE trust_store = ?"
        params = (trust_store,)
    return tx.query(sql + " ORDER BY trust_store, common_name, fingerprint", params)


def get(tx: Transaction, trust_store: str, fingerprint: str) -> dict[str, Any] | None:
    """The row (``COLUMNS``) of the certificate ``fingerprint`` in ``trust_store``, or None."""
    return tx.one(f"SELECT {COLUMNS} FROM trust_certificates WHERE trust_store = ? AND fingerprint = ?",
                  (trust_store, fingerprint))


def with_pem(tx: Transaction, fingerprint: str) -> list[dict[str, Any]]:
    """The rows (``COLUMNS`` and ``pem``) of the certificate ``fingerprint``, one per trust store holding it."""
    return tx.query(f"SELECT {COLUMNS}, pem FROM trust_certificates WHERE fingerprint = ? ORDER BY trust_store",
                    (fingerprint,))


def by_common_names(tx: Transaction, trust_store: str, common_names) -> list[dict[str, Any]]:
    """The rows (``COLUMNS``) in ``trust_store`` whose common name is one of ``common_names``, oldest first."""
    marks = ", ".join("?" * len(common_names))
    return tx.query(f"SELECT {COLUMNS} FROM trust_certificates WHERE trust_store = ? AND common_name IN "
                    f"({marks}) ORDER BY id", (trust_store, *common_names))


def anchors(tx: Transaction) -> list[dict[str, Any]]:
    """The ``pem`` and ``is_ca`` of every certificate in capf-trust, oldest first."""
    return tx.query("SELECT pem, is_ca FROM trust_certificates WHERE trust_store = 'capf-trust' ORDER BY id")


def anchor_pems(tx: Transaction) -> list[str]:
    """The PEM texts of every certificate in capf-trust, oldest first."""
    return [row["pem"] for row in anchors(tx)]


def add(tx: Transaction, *, trust_store: str, fingerprint: str, subject: str, common_name: str, issuer: str,
        is_ca: bool, not_after: str, description: str, pem: str) -> int:
    """Record a certificate in ``trust_store``; return its id."""
    return tx.insert(
        "INSERT INTO trust_certificates (trust_store, fingerprint, subject, common_name, issuer, is_ca, not_after, "
        "description, pem, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (trust_store, fingerprint, subject, common_name, issuer, int(is_ca), not_after, description, pem,
         format_utc(utc_now())),
    )


def set_description(tx: Transaction, trust_store: str, fingerprint: str, description: str) -> None:
    """Set the description of the certificate ``fingerprint`` in ``trust_store``."""
    tx.execute("UPDATE trust_certificates SET description = ? WHERE trust_store = ? AND fingerprint = ?",
               (description, trust_store, fingerprint))


def delete(tx: Transaction, trust_store: str, fingerprint: str) -> None:
    """Remove the certificate ``fingerprint`` from ``trust_store``."""
    tx.execute("DELETE FROM trust_certificates WHERE trust_store = ? AND fingerprint = ?", (trust_store, fingerprint))


def expiring(tx: Transaction, before: str) -> list[dict[str, Any]]:
    """The rows (``COLUMNS``) of every trust-store certificate that expires before ``before``, soonest first."""
    return tx.query(f"SELECT {COLUMNS} FROM trust_certificates WHERE not_after < ? ORDER BY not_after, trust_store, "
                    "fingerprint", (before,))
