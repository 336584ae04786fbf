"""A burst of refused connections to the running CAPF service (a port scanner, a broken phone that
retries every few seconds) leaves its session records in the store for ``session_retention_days``,
then the service's scheduler tick removes them, rows and ``session.*`` audit events, and keeps every
other audit event. The scheduler is given its clock (``Scheduling(clock=...)``), not slept through."""

from __future__ import annotations

import datetime as dt
import socket
import time

import pytest

from _opencapf import retention
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import audit
from _opencapf.store import service as service_records
from _opencapf.vocabulary import utc_now

pytestmark = pytest.mark.both_backends

BURST = 25


def _records(store) -> tuple[list, list, list]:
    with store.read() as tx:
        sessions = tx.query("SELECT outcome FROM sessions")
        events = audit.events(tx, limit=10000)
    return (sessions, [event for event in events if event["action"].startswith("session.")],
            [event for event in events if not event["action"].startswith("session.")])


def _until(condition, seconds=20.0):
    """Wait (bounded) for the server to record what it was sent."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def _tick(store, moment) -> None:
    scheduling = Scheduling(store, clock=lambda: moment)
    try:
        scheduling.tick()
    finally:
        scheduling.close()


def test_a_burst_of_refused_connections_leaves_the_store_once_past_its_retention(ca_store, capf_server):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"max_sessions_per_address": 1, "session_retention_days": 30})
    connections = [socket.create_connection(("127.0.0.1", capf_server.port), timeout=10) for _index in range(BURST + 1)]
    try:
        assert _until(lambda: sum(row["outcome"] == "refused" for row in _records(ca_store)[0]) == BURST)
    finally:
        for connection in connections:
            connection.close()
    # The one admitted ends too (it sent nothing): every connection has its record and its event.
    assert _until(lambda: len(_records(ca_store)[0]) == len(_records(ca_store)[1]) == BURST + 1)
    sessions, events, others = _records(ca_store)
    assert {event["action"] for event in events} >= {"session.refused"}
    assert others  # the CAPF certificate's creation, the parameters' change

    now = utc_now()
    _tick(ca_store, now + dt.timedelta(days=29))  # younger than the retention: kept
    kept_sessions, kept_events, kept_others = _records(ca_store)
    assert (kept_sessions, kept_events) == (sessions, events)
    assert [event for event in kept_others if event["action"] == retention.ACTION] == []

    _tick(ca_store, now + dt.timedelta(days=31))  # older: gone, all of it, in one tick
    kept_sessions, kept_events, kept_others = _records(ca_store)
    assert (kept_sessions, kept_events) == ([], [])
    # Every other event is kept (the scheduler signed CRLs meanwhile), and one more tells of the removal.
    assert {event["id"] for event in others} <= {event["id"] for event in kept_others}
    (told,) = [event["details"] for event in kept_others if event["action"] == retention.ACTION]
    assert {key: told[key] for key in ("sessions", "events", "session_retention_days", "more")} == \
        {"sessions": BURST + 1, "events": BURST + 1, "session_retention_days": 30, "more": False}
