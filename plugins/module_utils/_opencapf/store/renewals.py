# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Automatic renewals as stored: which LSCs are due, and which were renewed when."""

from __future__ import annotations

from typing import Any

from . import certificates
from .backend import Transaction

# Operation statuses of a phone whose operation is still to run or running: renewal leaves it alone.
_BUSY = ("pending", "in_progress")


def due(tx: Transaction, expires_before: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` phones (soonest expiry first) whose current LSC is installed and expires before
    ``expires_before``, with no operation pending or in progress, not in ``auth_string`` mode (a
    person would have to type the string on the phone), and whose LSC no renewal was scheduled for
    yet. Each row is the phone's row plus ``lsc_id`` and ``lsc_not_after``."""
    if limit <= 0:
        return []
    # From the expiring installed LSCs (a range of the index certificates_status_expiry), not from every
    # phone: the scheduler asks this at every round. The LSC must be the phone's current one.
    return tx.query(
        "SELECT p.*, l.id AS lsc_id, l.not_after AS lsc_not_after FROM certificates l "
        "JOIN phones p ON p.id = l.phone_id "
        f"WHERE l.status = 'installed' AND l.not_after < ? AND {certificates.CURRENT_LSC} "
        "AND p.operation_status NOT IN (?, ?) AND p.auth_mode != 'auth_string' "
        "AND NOT EXISTS (SELECT 1 FROM renewals r WHERE r.certificate_id = l.id) "
        "ORDER BY l.not_after, p.name LIMIT ?", (expires_before, *_BUSY, limit))


def record_many(tx: Transaction, scheduled_at: str, rows) -> None:
    """Record that renewal was scheduled at ``scheduled_at`` for each ``(phone_id, certificate_id)``."""
    tx.executemany("INSERT INTO renewals (phone_id, certificate_id, scheduled_at) VALUES (?, ?, ?)",
                   [(phone_id, certificate_id, scheduled_at) for phone_id, certificate_id in rows])


def count_since(tx: Transaction, since: str) -> int:
    """Renewals scheduled at or after ``since``."""
    return int(tx.scalar("SELECT COUNT(*) FROM renewals WHERE scheduled_at >= ?", (since,)) or 0)
