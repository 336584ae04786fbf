# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One row per CAPF protocol session, written with its audit record."""

from __future__ import annotations

from typing import Any

from . import audit
from .backend import Transaction


def record(tx: Transaction, actor: str, *, session_id: int, device_name: str, peer: str, operation: str,
           outcome: str, reason: str, started_at: str, duration_ms: int, **details: Any) -> int:
    row_id = tx.insert(
        "INSERT INTO sessions (session_id, device_name, peer, operation, outcome, reason, started_at, duration_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, device_name, peer, operation, outcome, reason, started_at, duration_ms))
    audit.record(tx, actor, "session." + outcome, device_name, peer=peer, operation=operation, outcome=outcome,
                 reason=reason, duration_ms=duration_ms, session_id=session_id, **details)
    return row_id


def recent(tx: Transaction, device_name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    sql = "SELECT * FROM sessions"
    params: list = []
    if device_name:
        sql += " WHERE device_name = ?"
        params.append(device_name.upper())
    return tx.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))


def last_for_device(tx: Transaction, device_name: str) -> dict[str, Any] | None:
    """The newest session of a device (outcome, reason, operation, peer, started_at), or None. Sessions
    record the device's name in capitals (as the phone's row has it), so the device's own entries of
    ``sessions_device`` are read, never every session of the store."""
    return tx.one("SELECT outcome, reason, operation, peer, started_at FROM sessions WHERE device_name = ? "
                  "ORDER BY started_at DESC, id DESC LIMIT 1", (device_name.upper(),))


def newest(tx: Transaction, limit: int = 100) -> list[dict[str, Any]]:
    """The newest sessions, by start time."""
    return tx.query("SELECT session_id, device_name, peer, operation, outcome, reason, started_at, duration_ms "
                    "FROM sessions ORDER BY started_at DESC, id DESC LIMIT ?", (limit,))


def oldest_start(tx: Transaction) -> str | None:
    """When the oldest session recorded started, or None (read from ``sessions_started``)."""
    row = tx.one("SELECT started_at FROM sessions ORDER BY started_at LIMIT 1")
    return row["started_at"] if row else None


def remove_before(tx: Transaction, before: str, limit: int) -> int:
    """Remove the oldest sessions that started before ``before``, ``limit`` at most (found from
    ``sessions_started``); how many. Their ``session.*`` audit events go with ``audit.remove_session_events``."""
    return tx.execute("DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE started_at < ? "
                      "ORDER BY started_at LIMIT ?)", (before, limit))
