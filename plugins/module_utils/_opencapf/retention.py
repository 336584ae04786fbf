# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Session records kept for ``session_retention_days``, then removed by the service's scheduler.

Every connection to the CAPF service writes a session record: a ``sessions`` row and its
``session.<outcome>`` audit event, refused connections, TLS failures of port scanners and a
misconfigured phone retrying every few seconds alike. Kept for ever, a hostile or broken network
would fill the disk over the months. The scheduler's lead (``server.scheduling``) removes the rows
and the ``session.*`` events older than the retention (``session_retention_days``, default 400: a
phone that renews yearly keeps its last sessions visible; 0 keeps them for ever), and never any other
audit event (the certificates' and phones' trail; the database refuses it, migration 22).

It removes in batches: each write transaction at most ``BATCH_ROWS`` rows and ``BATCH_ROWS``
events, the oldest first, and a round ``BATCHES_PER_ROUND`` transactions at most, so that no
transaction holds the store's write lock for long and a backlog (a store upgraded after years, a
burst of refused connections) goes over the next rounds. A round runs once ``ROUND_EVERY`` has passed
on the scheduler's clock since the last one, or at the next tick while a backlog remains: each round
that removed something records one ``store.sessions_pruned`` event (kept for ever like every other
one), a few a day at most after a backlog. Most rounds find nothing older, read so from the time
indexes, and take no write lock.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from .store import Store, audit
from .store import service as service_records
from .store import sessions as session_records
from .vocabulary import format_utc

PARAMETER = "session_retention_days"
ACTION = "store.sessions_pruned"
BATCH_ROWS = 5000  # sessions rows, and session events, one write transaction removes at most
BATCHES_PER_ROUND = 4  # write transactions of one round at most
ROUND_EVERY = _dt.timedelta(hours=1)  # between two rounds, unless the last one left a backlog


class Retention:
    """The removal rounds of one scheduler: when its last round ran and whether it left a backlog."""

    def __init__(self):
        self._last: _dt.datetime | None = None
        self._backlog = False

    def due(self, now: _dt.datetime) -> bool:
        """Whether a round is due at ``now``: none ran yet, the last left a backlog, ``ROUND_EVERY`` has
        passed since it, or the clock was set back before it."""
        return self._last is None or self._backlog or not self._last <= now < self._last + ROUND_EVERY

    def run(self, store: Store, now: _dt.datetime) -> dict[str, Any] | None:
        """A round at ``now`` when one is due (``run``'s result), else None."""
        if not self.due(now):
            return None
        result = run(store, now)
        self._last, self._backlog = now, result["more"]
        return result


def run(store: Store, now: _dt.datetime) -> dict[str, Any]:
    """Remove the session records older than the retention at ``now``, ``BATCHES_PER_ROUND`` batches at
    most: ``{"days", "before", "sessions", "events", "more"}`` (the counts removed; ``more``: older
    ones are left for the next round). ``days`` 0 removes nothing."""
    with store.read() as tx:  # most rounds find nothing older: they take no write lock
        days = int(service_records.value(tx, PARAMETER))
        before = format_utc(now - _dt.timedelta(days=days)) if days else None
        older = bool(before) and _older(tx, before)
    result = {"days": days, "before": before, "sessions": 0, "events": 0, "more": False}
    if not older:
        return result
    for batch in range(BATCHES_PER_ROUND):
        with store.transaction() as tx:
            sessions = session_records.remove_before(tx, before, BATCH_ROWS)
            events = audit.remove_session_events(tx, before, BATCH_ROWS)
            result["sessions"] += sessions
            result["events"] += events
            result["more"] = sessions == BATCH_ROWS or events == BATCH_ROWS
            last = not result["more"] or batch == BATCHES_PER_ROUND - 1
            if last and (result["sessions"] or result["events"]):
                # One event for the round, committed with its last batch.
                audit.record(tx, store.actor, ACTION, "sessions", sessions=result["sessions"],
                             events=result["events"], before=before, session_retention_days=days,
                             more=result["more"])
        if last:
            break
    return result


def _older(tx, before: str) -> bool:
    """Whether a session record (row or event) older than ``before`` is kept."""
    oldest = [session_records.oldest_start(tx), audit.oldest_session_event(tx)]
    return any(at is not None and at < before for at in oldest)
