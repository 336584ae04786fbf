# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The append-only audit log: who changed what, when. Never a secret in it."""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Any, Iterator

from ..vocabulary import format_utc, utc_now
from .backend import Transaction

_SECRET_KEYS = ("password", "authentication_string", "auth_string", "secret", "private_key", "key_pem")


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEYS)


def _scrub(details: dict[str, Any]) -> dict[str, Any]:
    clean = {}
    for key, value in details.items():
        if _is_secret(key):
            clean[key] = "********"
        elif isinstance(value, dict):
            clean[key] = _scrub(value)
        else:
            clean[key] = value
    return clean


# json.dumps(details, sort_keys=True, default=str), its encoder made once rather than per event.
_encode_details = json.JSONEncoder(sort_keys=True, default=str).encode
_INSERT = "INSERT INTO audit_events (at, actor, action, subject, details) VALUES (?, ?, ?, ?, ?)"


def record(tx: Transaction, actor: str, action: str, subject: str = "", **details: Any) -> None:
    """Append one event in the caller's transaction, so it commits with the change it describes
    (inside ``batched(tx)``: with the other events of the batch, in order, as one statement)."""
    row = (format_utc(utc_now()), actor, action, subject, _encode_details(_scrub(details)))
    batch = getattr(tx, "audit_batch", None)
    if batch is not None:
        batch.append(row)
    else:
        tx.execute(_INSERT, row)


@contextlib.contextmanager
def batched(tx: Transaction) -> Iterator[None]:
    """Collect the events recorded in ``tx`` meanwhile and append them, in order and each with its
    own time, with one statement at the end (a transaction that records several events)."""
    tx.audit_batch = []
    try:
        yield
        if tx.audit_batch:
            tx.executemany(_INSERT, tx.audit_batch)
    finally:
        tx.audit_batch = None


def record_many(tx: Transaction, actor: str, at: str, events) -> None:
    """Append many events, each ``(action, subject, details)``, all at ``at``, with one statement in the
    caller's transaction."""
    tx.executemany(
        _INSERT,
        [(at, actor, action, subject, _encode_details(_scrub(details)))
         for action, subject, details in events],
    )


def events(tx: Transaction, limit: int = 100, action: str | None = None, subject: str | None = None) -> list[dict]:
    """The newest events first."""
    where, params = [], []
    if action:
        where.append("action = ?")
        params.append(action)
    if subject:
        where.append("subject = ?")
        params.append(subject)
    sql = "SELECT id, at, actor, action, subject, details FROM audit_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    rows = tx.query(sql, (*params, limit))
    for row in rows:
        row["details"] = json.loads(row["details"])
    return rows
