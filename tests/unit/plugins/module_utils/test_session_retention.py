"""Session records are kept for ``session_retention_days``, then removed by the service's scheduler
tick (``Scheduling`` with the clock given to it, as ``test_years_unattended`` walks it), on both
backends. Every connection writes a record (a ``sessions`` row and its ``session.*`` audit event),
refused ones too: kept for ever, a hostile network fills the disk.

Invariants, after every tick of a walk of clock moves (minutes to months forward, or back by up to an
hour), sessions recorded, other audit events recorded and the retention changed:

* no session record younger than the retention at the tick is removed; with retention 0 none is;
* no audit event but a ``session.*`` one is ever removed;
* a tick at least ``ROUND_EVERY`` after every tick before it removes the oldest records older than the
  retention, all of them up to ``BATCH_ROWS * BATCHES_PER_ROUND`` of each kind: so each is removed
  within a bounded number of ticks (a backlog is taken on at every tick, see below);
* no write transaction of the tick removes more than ``BATCH_ROWS`` rows of either kind, and a tick
  runs ``BATCHES_PER_ROUND`` of them at most;
* each tick that removed something records one ``store.sessions_pruned`` event with the counts;
* finding the records past the retention reads none of the younger ones (the time indexes)."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.audit_vocabulary import extra_actions
from support.stores import vm_steps
from _opencapf import retention
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import Store, open_store
from _opencapf.store import audit as audit_records
from _opencapf.store import service as service_records
from _opencapf.store import sessions as session_records
from _opencapf.vocabulary import format_utc

pytestmark = pytest.mark.both_backends

BATCH, BATCHES = 3, 2  # small, so that a walk's few records fill batches
START = dt.datetime(2027, 1, 4, 8, 0, tzinfo=dt.timezone.utc)
RETENTIONS = (0, 1, 2, 30, 400)
# Events that are not session records, with names a prefix match could take for one (``support.audit_vocabulary``).
OTHER_ACTIONS = ("test.kept", "sessions", "session", "sessionx.y", "test.session.z")

VERBS = ("sessions", "sessions", "other", "retention", "none")
jumps = st.one_of(st.integers(1, 59), st.integers(60, 3 * 24 * 60), st.integers(3 * 24 * 60, 500 * 24 * 60),
                  st.integers(-60, -1))
steps = st.lists(st.tuples(st.sampled_from(VERBS), st.integers(0, 7), jumps), min_size=1, max_size=25)
_stores = itertools.count(1)


@pytest.fixture(autouse=True)
def _other_actions():
    with extra_actions(*OTHER_ACTIONS, keys=("note",)):
        yield


def _counts(tx) -> tuple[int, int]:
    return (tx.scalar("SELECT count(*) FROM sessions"),
            tx.scalar("SELECT count(*) FROM audit_events WHERE action LIKE 'session.%'"))


@contextlib.contextmanager
def _removals_per_transaction(monkeypatch):
    """The session rows and session events each write transaction of the scheduler removed, counted
    inside it (under its write lock) when it begins and before it commits."""
    original = Store.transaction
    seen: list[tuple[int, int]] = []

    @contextlib.contextmanager
    def transaction(self, write=True, durable=True):
        with original(self, write, durable) as tx:
            counted = write and self.actor == "scheduler"
            before = _counts(tx) if counted else None
            yield tx
            if counted:
                after = _counts(tx)
                seen.append((before[0] - after[0], before[1] - after[1]))

    monkeypatch.setattr(Store, "transaction", transaction)
    yield seen


class _Walk:
    def __init__(self, store, monkeypatch):
        self.store = store
        self.now = START
        self.ticked: list[dt.datetime] = []
        monkeypatch.setattr(audit_records, "utc_now", lambda: self.now)  # events recorded at the walk's clock
        self.scheduling = Scheduling(store, clock=lambda: self.now)
        self.days = 400
        self.session_id = 0

    def apply(self, verb: str, pick: int) -> None:
        with self.store.transaction() as tx:
            if verb == "sessions":
                for offset in range(pick + 1):
                    self.session_id += 1
                    started = self.now - dt.timedelta(minutes=offset * 11)  # recorded at its end, after it started
                    session_records.record(tx, "capf-server", session_id=self.session_id, device_name="",
                                           peer="192.0.2.9:40000", operation="", outcome=("refused", "tls_failed")[offset % 2],
                                           reason="", started_at=format_utc(started),
                                           duration_ms=offset * 660000)
            elif verb == "other":
                audit_records.record(tx, "test", OTHER_ACTIONS[pick % len(OTHER_ACTIONS)], "SEP00000000E001", note=pick)
            elif verb == "retention":
                self.days = RETENTIONS[pick % len(RETENTIONS)]
                service_records.write(tx, "test", {"session_retention_days": self.days})

    def _records(self) -> tuple[dict, dict, dict]:
        with self.store.read() as tx:
            sessions = {row["id"]: row["started_at"] for row in tx.query("SELECT id, started_at FROM sessions")}
            events = tx.query("SELECT id, at, action, details FROM audit_events")
        session_events = {row["id"]: row["at"] for row in events if row["action"].startswith("session.")}
        others = {row["id"]: row for row in events if not row["action"].startswith("session.")}
        return sessions, session_events, others

    def tick(self, seen: list) -> None:
        sure = not self.ticked or self.now >= max(self.ticked) + retention.ROUND_EVERY
        sessions, events, others = self._records()
        before = format_utc(self.now - dt.timedelta(days=self.days))
        del seen[:]
        self.scheduling.tick()
        self.ticked.append(self.now)
        kept_sessions, kept_events, kept_others = self._records()
        now = format_utc(self.now)
        removed = ({key: at for key, at in sessions.items() if key not in kept_sessions},
                   {key: at for key, at in events.items() if key not in kept_events})
        for kind, (gone, held) in zip(("sessions", "events"), zip(removed, (sessions, events))):
            # Nothing younger than the retention, nothing at all with retention 0.
            assert self.days or not gone, (kind, "removed with retention 0", now)
            assert all(at < before for at in gone.values()), (kind, "removed before its time", before, now)
            # A tick surely due removes the oldest, all of them up to the round's bound.
            older = sorted(at for at in held.values() if at < before)
            if sure and self.days:
                assert len(gone) == min(len(older), BATCH * BATCHES), (kind, len(gone), len(older), now)
                kept_older = sorted(at for key, at in held.items() if at < before and key not in gone)
                assert not kept_older or min(kept_older) >= max(gone.values()), (kind, "not the oldest first", now)
        # No other event is ever removed; one event tells of each tick that removed something.
        assert set(others) <= set(kept_others), ("an audit event removed", now)
        told = [row for key, row in kept_others.items() if key not in others and row["action"] == retention.ACTION]
        if removed[0] or removed[1]:
            assert len(told) == 1, told
            details = json.loads(told[0]["details"])
            assert (details["sessions"], details["events"], details["before"], details["session_retention_days"]) == \
                (len(removed[0]), len(removed[1]), before, self.days)
        else:
            assert told == []
        # One batch per transaction at most, and a bounded number of them per tick.
        assert all(rows <= BATCH and gone_events <= BATCH for rows, gone_events in seen), seen
        assert sum(1 for rows, gone_events in seen if rows or gone_events) <= BATCHES, seen

    def close(self) -> None:
        self.scheduling.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(walk=steps)
# A burst of refused connections, a day later, then past the retention: removed over three ticks.
@example(walk=[("sessions", 7, 24 * 60), ("sessions", 7, 401 * 24 * 60), ("none", 0, 60), ("none", 0, 60)])
# Retention 0 keeps everything, however old.
@example(walk=[("retention", 0, 0), ("sessions", 3, 5000 * 24 * 60), ("none", 0, 120)])
# A retention of one day: what is older goes at the next round, the day's sessions stay.
@example(walk=[("retention", 1, 0), ("sessions", 2, 60), ("other", 1, 25 * 60), ("sessions", 1, 61), ("none", 0, 0)])
def test_session_records_are_kept_their_retention_and_removed_in_bounded_batches(
        more_store_locations, state_dir, monkeypatch, walk):
    monkeypatch.setattr(retention, "BATCH_ROWS", BATCH)
    monkeypatch.setattr(retention, "BATCHES_PER_ROUND", BATCHES)
    store = open_store(more_store_locations(f"retention-{next(_stores)}"), state_dir=state_dir, actor="test")
    walker = _Walk(store, monkeypatch)
    try:
        with _removals_per_transaction(monkeypatch) as seen:
            for verb, pick, minutes in walk:
                walker.apply(verb, pick)
                walker.tick(seen)
                walker.now += dt.timedelta(minutes=minutes)
            walker.tick(seen)
    finally:
        walker.close()
        store.close()
        monkeypatch.undo()


def test_a_backlog_goes_over_the_next_ticks_a_round_at_each(store, monkeypatch):
    """Twenty old records, six a tick (three per transaction, two transactions): four ticks at one
    moment remove them all, each with its event; the fifth finds nothing and records nothing."""
    monkeypatch.setattr(retention, "BATCH_ROWS", BATCH)
    monkeypatch.setattr(retention, "BATCHES_PER_ROUND", BATCHES)
    now = START
    monkeypatch.setattr(audit_records, "utc_now", lambda: now - dt.timedelta(days=500))
    with store.transaction() as tx:
        for index in range(20):
            session_records.record(tx, "capf-server", session_id=index + 1, device_name="", peer="192.0.2.9:40000",
                                   operation="", outcome="refused", reason="", duration_ms=0,
                                   started_at=format_utc(now - dt.timedelta(days=500, seconds=index)))
    scheduling = Scheduling(store, clock=lambda: now)
    left = []
    try:
        for _tick in range(5):
            scheduling.tick()
            with store.read() as tx:
                left.append(_counts(tx))
    finally:
        scheduling.close()
    assert left == [(14, 14), (8, 8), (2, 2), (0, 0), (0, 0)]
    with store.read() as tx:
        told = [event["details"] for event in audit_records.events(tx, action=retention.ACTION)]
    assert [(item["sessions"], item["more"]) for item in reversed(told)] == [(6, True), (6, True), (6, True), (2, False)]


def test_finding_the_records_past_the_retention_reads_no_young_one(store_path, state_dir):
    """SQLite's virtual machine steps (a bound that does not depend on the machine's speed) of a round
    among 20,000 records younger than the retention: with none older it only reads the two time indexes'
    first entries, and with ten older it removes them without walking the young ones."""
    store = open_store(store_path, state_dir=state_dir, actor="test")
    now = START
    try:
        with store.transaction() as tx:
            for index in range(20000):
                session_records.record(tx, "capf-server", session_id=index + 1, device_name="", peer="192.0.2.9:40000",
                                       operation="", outcome="refused", reason="", duration_ms=0,
                                       started_at=format_utc(now - dt.timedelta(seconds=index)))
        steps = []
        for old in (0, 10):
            with store.transaction() as tx:
                for index in range(old):
                    session_records.record(tx, "capf-server", session_id=30000 + index, device_name="", peer="", operation="",
                                           outcome="refused", reason="", duration_ms=0,
                                           started_at=format_utc(now - dt.timedelta(days=401, seconds=index)))
            # Their events are recorded now: only the rows are older, as after a clock set right.
            with vm_steps(store) as counted:
                result = retention.run(store, now)
            steps.append(counted[0])
            assert (result["sessions"], result["events"]) == (old, 0)
    finally:
        store.close()
    # Each read or removal takes a few hundred steps; a walk of 20,000 rows and as many events, millions.
    assert max(steps) < 5000, steps
