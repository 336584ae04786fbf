# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Automatic renewals as stored: which LSCs are due, and which were renewed when."""

from __future__ import annotations

from typing import Any

from ..vocabulary import REVOKED_EXPIRED
from . import certificates
from .backend import Transaction

# Operation statuses of a phone whose operation is still to run or running: renewal leaves it alone.
_BUSY = ("pending", "in_progress")
# The LSCs renewal takes (row ``l``), each kind read from an index of its own, so that a round reads
# neither every LSC nor every revoked one (an LSC replaced by its renewal is revoked as superseded:
# over the years they outnumber the fleet): installed ones, from a range of certificates_status_expiry;
# and those installed until they expired and were revoked for that (``revocation.revoke_expired``,
# which the service's tick runs before the renewals), from the partial index certificates_expired_revoked
# (the reason written out, as a partial index is only used for a query that names its condition). An
# LSC that expired installed is due all the same, also when it waited for room in the day past its
# notAfter or the service was down through the window.
_KINDS = (
    "l.status = 'installed'",
    # (A revocation reason is only ever written with the status revoked; naming the status too would
    # make SQLite read the revoked range of certificates_status_expiry instead.)
    f"l.revocation_reason = '{REVOKED_EXPIRED}' AND l.installed_at IS NOT NULL AND l.revoked_at >= l.not_after",
)


def _window(ends_before: str | None, held: bool) -> tuple[str, tuple]:
    """The condition on the LSC's end that the replacement's end ``ends_before`` sets (none: no bound):
    due when it ends strictly before it; held back (``held``) when it does not."""
    if ends_before is None:
        return "", ()
    return ("AND l.not_after >= ? " if held else "AND l.not_after < ? "), (ends_before,)


def _candidates(tx: Transaction, columns: str, expires_before: str, ends_before: str | None, held: bool,
                issued_by: str | None, limit: int | None = None) -> list[dict[str, Any]]:
    """``columns`` of the phones whose current LSC renewal takes (``_KINDS``), expiring before
    ``expires_before`` (the scheduler asks at every round), issued by ``issued_by`` (a run as at an
    earlier time knows no LSC issued after it); with ``limit``, the first so many by the LSC's expiry,
    then the phone's name (``columns`` must then give ``lsc_not_after`` and ``name``)."""
    condition, params = _window(ends_before, held)
    if issued_by is not None:
        condition, params = condition + "AND l.issued_at <= ? ", (*params, issued_by)
    tail, tail_params = ("ORDER BY l.not_after, p.name LIMIT ?", (limit,)) if limit is not None else ("", ())
    rows = []
    for kind in _KINDS:
        rows += tx.query(
            f"SELECT {columns} FROM certificates l "
            "JOIN phones p ON p.id = l.phone_id "
            f"WHERE {kind} AND l.not_after < ? {condition}AND {certificates.CURRENT_LSC} "
            "AND p.operation_status NOT IN (?, ?) AND p.auth_mode != 'auth_string' "
            "AND NOT EXISTS (SELECT 1 FROM renewals r WHERE r.certificate_id = l.id) " + tail,
            (expires_before, *params, *_BUSY, *tail_params))
    if limit is not None:
        rows.sort(key=lambda row: (row["lsc_not_after"], row["name"]))
        del rows[limit:]
    return rows


def due(tx: Transaction, expires_before: str, limit: int, ends_before: str | None = None, *,
        issued_by: str | None = None) -> list[dict[str, Any]]:
    """Up to ``limit`` phones (soonest expiry first) whose current LSC is installed (or was, until it
    expired and was revoked for that) and expires before ``expires_before``, with no operation pending
    or in progress, not in ``auth_string`` mode (a person would have to type the string on the phone),
    and whose LSC no renewal was scheduled for yet; and, when ``ends_before`` (the notAfter a
    replacement issued now would get) is given, whose LSC ends strictly before it: renewing one that
    does not would give the phone an LSC that ends no later, again at every run; and, when
    ``issued_by`` (the run's time) is given, whose LSC was issued then or before. Each row is the
    phone's row plus ``lsc_id`` and ``lsc_not_after``."""
    if limit <= 0:
        return []
    return _candidates(tx, "p.*, l.id AS lsc_id, l.not_after AS lsc_not_after", expires_before, ends_before, False,
                       issued_by, limit)


def held_back(tx: Transaction, expires_before: str, ends_before: str | None, limit: int, *,
              issued_by: str | None = None) -> tuple[int, list[str]]:
    """The phones ``due`` would give but for ``ends_before`` (their LSC ends no earlier than a
    replacement would): how many, and the names of up to ``limit`` of them, soonest expiry first."""
    if ends_before is None:
        return 0, []
    count = sum(row["n"] for row in _candidates(tx, "COUNT(*) AS n", expires_before, ends_before, True, issued_by))
    if not count or limit <= 0:
        return int(count or 0), []
    rows = _candidates(tx, "p.name, l.not_after AS lsc_not_after", expires_before, ends_before, True, issued_by,
                       limit)
    return int(count), [row["name"] for row in rows]


def record_many(tx: Transaction, scheduled_at: str, rows) -> None:
    """Record that renewal was scheduled at ``scheduled_at`` for each ``(phone_id, certificate_id)``."""
    tx.executemany("INSERT INTO renewals (phone_id, certificate_id, scheduled_at) VALUES (?, ?, ?)",
                   [(phone_id, certificate_id, scheduled_at) for phone_id, certificate_id in rows])


def count_since(tx: Transaction, since: str) -> int:
    """Renewals scheduled at or after ``since``."""
    return int(tx.scalar("SELECT COUNT(*) FROM renewals WHERE scheduled_at >= ?", (since,)) or 0)


def latest(tx: Transaction) -> str | None:
    """When the latest renewal recorded was scheduled (None: none recorded)."""
    return tx.scalar("SELECT MAX(scheduled_at) FROM renewals")


def scheduled_between(tx: Transaction, since: str, until: str) -> list[str]:
    """The times of the renewals scheduled at or after ``since`` and at or before ``until``, earliest first."""
    return [row["scheduled_at"] for row in tx.query(
        "SELECT scheduled_at FROM renewals WHERE scheduled_at >= ? AND scheduled_at <= ? ORDER BY scheduled_at",
        (since, until))]
