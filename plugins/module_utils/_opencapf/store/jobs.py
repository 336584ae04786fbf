# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduled jobs as stored: kind, status, a JSON spec and result, and their times.

Rows are returned with ``spec`` and ``result`` decoded; a spec is stored with sorted keys, so two
equal specs are equal as stored.
"""

from __future__ import annotations

import json
from typing import Any

from ..vocabulary import format_utc, utc_now
from .backend import Transaction


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["spec"], row["result"] = json.loads(row["spec"]), json.loads(row["result"])
    return row


def _encoded(value: dict) -> str:
    return json.dumps(value, sort_keys=True)


def newest(tx: Transaction, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Jobs, newest first, all of them or those in ``status``."""
    if status is not None:
        rows = tx.query("SELECT * FROM jobs WHERE status = ? ORDER BY id DESC LIMIT ?", (status, limit))
    else:
        rows = tx.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
    return [_decoded(row) for row in rows]


def get(tx: Transaction, job_id: int) -> dict[str, Any] | None:
    """One job, or None."""
    return _decoded(tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,)))


def find_scheduled(tx: Transaction, kind: str, spec: dict, run_at: str) -> dict[str, Any] | None:
    """The oldest scheduled job of ``kind`` with this spec and run time, or None."""
    return _decoded(tx.one("SELECT * FROM jobs WHERE kind = ? AND status = 'scheduled' AND spec = ? AND run_at = ? "
                           "ORDER BY id LIMIT 1", (kind, _encoded(spec), run_at)))


def schedule(tx: Transaction, kind: str, spec: dict, run_at: str) -> int:
    """Store a job to run at ``run_at``; return its id."""
    return tx.insert("INSERT INTO jobs (kind, status, spec, result, run_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (kind, "scheduled", _encoded(spec), "{}", run_at, format_utc(utc_now())))


def mark_cancelled(tx: Transaction, job_id: int) -> None:
    """A job cancelled now."""
    tx.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?", (format_utc(utc_now()), job_id))


def next_due(tx: Transaction, now: str) -> dict[str, Any] | None:
    """The scheduled job due at ``now`` that was due first (oldest first among equals), or None."""
    return _decoded(tx.one("SELECT * FROM jobs WHERE status = 'scheduled' AND run_at <= ? ORDER BY run_at, id LIMIT 1",
                           (now,)))


def finish_scheduled(tx: Transaction, job_id: int, status: str, result: dict, started_at: str) -> bool:
    """A job still ``scheduled`` finished now in ``status`` with ``result``, started at ``started_at``;
    False (nothing written) when it is no longer scheduled: cancelled, or run by another process."""
    return tx.execute("UPDATE jobs SET status = ?, result = ?, started_at = ?, finished_at = ? "
                      "WHERE id = ? AND status = 'scheduled'",
                      (status, _encoded(result), started_at, format_utc(utc_now()), job_id)) == 1
