# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The append-only audit log: who changed what, when. Never a secret in it."""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import json.encoder
from typing import Any, Iterator

from ..vocabulary import format_utc, utc_now
from .audit_actions import check
from .backend import Transaction

_SECRET_KEYS = ("password", "authentication_string", "auth_string", "secret", "private_key", "key_pem")


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEYS)


@functools.lru_cache(maxsize=1024)
def _names_secret(keys: tuple) -> bool:
    return any(_is_secret(key) for key in keys)


# Values ``_scrub`` keeps as they are: it looks into dicts only.
_LEAVES = frozenset((str, int, bool, float, type(None), list, tuple))


def _scrub(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` with every secret replaced, in dicts within it too; ``details`` itself when it holds
    none and no dict (most events: a test of its keys, once per set of keys, and of its values' types)."""
    if _names_secret(tuple(details)) or not _LEAVES.issuperset(map(type, details.values())):
        return _scrub_each(details)
    return details


def _scrub_each(details: dict[str, Any]) -> dict[str, Any]:
    clean = {}
    for key, value in details.items():
        if _is_secret(key):
            clean[key] = "********"
        elif isinstance(value, dict):
            clean[key] = _scrub(value)
        else:
            clean[key] = value
    return clean


def _details_encoder():
    """``json.dumps(details, sort_keys=True, default=str)``. ``JSONEncoder.encode`` makes the json
    module's C encoder anew for each call (a third of its cost for an event's details): it is made
    once here, as ``JSONEncoder`` makes it but without the check for circular references (an
    event's details are keyword arguments of plain values). Where the json module has no C encoder
    or makes it otherwise, or the two differ on a sample, ``JSONEncoder.encode`` it is."""
    encode = json.JSONEncoder(sort_keys=True, default=str).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encode
    try:
        made = make(None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", True, False, True)

        def encode_once(details: dict[str, Any]) -> str:
            return "".join(made(details, 0))

        # Not JSON (encoded by ``default``), not ASCII, not sorted, nested.
        sample = {"b": [1, 2.5, None, True], "a": {"z": "\u00e9\"\n", "y": float("nan")}, "c": datetime.date(2026, 1, 1)}
        if encode_once(sample) == encode(sample):
            return encode_once
    except (TypeError, ValueError):
        pass
    return encode


_encode_details = _details_encoder()
_INSERT = "INSERT INTO audit_events (at, actor, action, subject, details) VALUES (?, ?, ?, ?, ?)"


def record(tx: Transaction, actor: str, action: str, subject: str = "", **details: Any) -> None:
    """Append one event in the caller's transaction, so it commits with the change it describes
    (inside ``batched(tx)``: with the other events of the batch, in order, as one statement). The event
    must have its action's shape (``audit_actions``): else ``AuditShapeError``, and nothing is appended."""
    check(action, details)
    row = (format_utc(utc_now()), actor, action, subject, _encode_details(_scrub(details)))
    batch = getattr(tx, "audit_batch", None)
    if batch is not None:
        batch.append(row)
    else:
        tx.execute(_INSERT, row)


@contextlib.contextmanager
def batched(tx: Transaction) -> Iterator[None]:
    """Collect the events recorded in ``tx`` meanwhile and append them, in order and each with its
    own time, with one statement at the end (a transaction that records several events). Within
    another ``batched(tx)``, they go with that one's."""
    if getattr(tx, "audit_batch", None) is not None:
        yield
        return
    tx.audit_batch = []
    try:
        yield
        if tx.audit_batch:
            tx.executemany(_INSERT, tx.audit_batch)
    finally:
        tx.audit_batch = None


def record_many(tx: Transaction, actor: str, at: str, events) -> None:
    """Append many events, each ``(action, subject, details)``, all at ``at``, with one statement in the
    caller's transaction; each with its action's shape (``audit_actions``), else ``AuditShapeError``."""
    tx.executemany(_INSERT, [_checked_row(at, actor, action, subject, details) for action, subject, details in events])


def _checked_row(at: str, actor: str, action: str, subject: str, details: dict[str, Any]) -> tuple:
    check(action, details)
    return (at, actor, action, subject, _encode_details(_scrub(details)))


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


# The only events ever removed: the ``session.*`` event of each session record (``store/sessions``),
# which the database lets go (migration 22) and the index ``audit_events_session_at`` finds by time.
SESSION_EVENTS = "substr(action, 1, 8) = 'session.'"


def oldest_session_event(tx: Transaction) -> str | None:
    """When the oldest ``session.*`` event was recorded, or None."""
    row = tx.one(f"SELECT at FROM audit_events WHERE {SESSION_EVENTS} ORDER BY at LIMIT 1")
    return row["at"] if row else None


def remove_session_events(tx: Transaction, before: str, limit: int) -> int:
    """Remove the oldest ``session.*`` events recorded before ``before``, ``limit`` at most; how many.
    No other event is removed (the database refuses it)."""
    return tx.execute(f"DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE {SESSION_EVENTS} "
                      "AND at < ? ORDER BY at LIMIT ?)", (before, limit))
