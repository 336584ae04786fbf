"""Every session has a time bound, and only an operation whose session is past that bound is settled
as abandoned: the scheduler never touches the operation of a live session, also when it runs on a node
whose clock is ahead of the session's node by up to ``CLOCK_SKEW`` (a PostgreSQL store, which several
hosts share). On both backends."""

from __future__ import annotations

import datetime as dt

import pytest

from support.protocol import add_phone, phone_row
from _opencapf.dependencies import ec, serialization
from _opencapf.protocol import codec
from _opencapf.protocol.codec import Decoder, Message
from _opencapf.protocol.constants import Command
from _opencapf.protocol.phone import PhoneSession
from _opencapf.protocol.session import AuthOffer, KeyChoice, Outcome, ServerSession
from _opencapf.server import scheduling
from _opencapf.server.decider import LIVENESS_MARGIN_SECONDS, StoreDecider, settle_abandoned
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import audit
from _opencapf.store import service as service_records
from _opencapf.vocabulary import CLOCK_SKEW, parse_utc, utc_now

NAME = "SEP0011223344BB"
pytestmark = pytest.mark.both_backends


def _keep_alive(session_id: int) -> bytes:
    return codec.encode(Message(Command.REQUEST_IN_PROGRESS, session_id, ()))


def test_a_phone_that_keeps_sending_keep_alives_is_ended_at_the_session_bound(ca_store):
    """Without the bound the key-generation wait would last keygen_timeout_minutes (30 min)."""
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    server = ServerSession(9, StoreDecider(ca_store, "test", max_session=60), step_timeout=5, max_duration=60)
    phone = PhoneSession(PhoneIdentity(PhoneSettings(NAME)))
    (key_request,) = Decoder().feed(server.receive_data(phone.receive_data(server.start(0.0)), 1.0))
    assert key_request.command == Command.KEY_GENERATE_REQUEST
    now = 1.0
    while not server.closed:
        assert server.deadline <= 60.0
        now += 4.0
        if now >= server.deadline:
            server.time_passed(now)
        else:
            assert server.receive_data(_keep_alive(9), now) == b""
    assert now <= 61.0 + 4.0
    assert server.outcome.outcome == "timeout" and "time bound of 60 s" in server.outcome.reason
    row = phone_row(ca_store, NAME)
    assert (row["operation_status"], row["operation_reason"]) == ("failed", server.outcome.reason)


def test_a_phone_that_never_falls_silent_is_ended_at_the_bound_too(ca_store):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    server = ServerSession(9, StoreDecider(ca_store, "test", max_session=30), step_timeout=5, max_duration=30)
    phone = PhoneSession(PhoneIdentity(PhoneSettings(NAME)))
    server.receive_data(phone.receive_data(server.start(0.0)), 0.5)
    (end,) = Decoder().feed(server.receive_data(_keep_alive(9), 30.0))
    assert end.command == Command.END_SESSION and server.outcome.outcome == "timeout"


def _authenticated(store, name, max_session):
    """A session that authenticated and issued an LSC: its first durable write put the operation in progress."""
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    decider = StoreDecider(store, max_session=max_session)
    plan = decider.begin(name)
    assert decider.authenticate(plan, AuthOffer(name.encode(), None)).ok
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    decider.issue(plan, key, KeyChoice("ec", 256))
    return decider, plan


def test_a_live_session_is_never_settled_and_an_abandoned_one_is_once(ca_store):
    decider, plan = _authenticated(ca_store, NAME, max_session=600)
    row = phone_row(ca_store, NAME)
    assert row["operation_status"] == "in_progress"
    live_until = parse_utc(row["operation_live_until"], "operation_live_until")
    started = parse_utc(row["last_session_at"], "last_session_at")
    assert live_until == started + dt.timedelta(seconds=600 + LIVENESS_MARGIN_SECONDS)
    # The session's node may be another host whose clock runs behind this one's by up to clock_skew.
    assert ca_store.clock_skew == (CLOCK_SKEW if ca_store.location.startswith("postgresql") else dt.timedelta(0))
    for moment in (utc_now(), started + dt.timedelta(seconds=600), live_until, live_until + ca_store.clock_skew):
        assert settle_abandoned(ca_store, moment) == []  # the session may still be live
        assert phone_row(ca_store, NAME)["operation_status"] == "in_progress"
    past = live_until + ca_store.clock_skew + dt.timedelta(seconds=1)
    assert settle_abandoned(ca_store, past) == [NAME]
    assert settle_abandoned(ca_store, past) == []
    row = phone_row(ca_store, NAME)
    assert row["operation_status"] == "failed"
    assert row["operation_reason"].startswith("session ended without a result: the CAPF service stopped mid-session")
    with ca_store.read() as tx:
        events = audit.events(tx, action="phone.operation_failed", subject=NAME)
    assert len(events) == 1 and events[0]["details"]["live_until"] == row["operation_live_until"]
    decider.ended(plan, Outcome(outcome="aborted", reason="peer closed the connection"))  # a late end changes nothing
    assert phone_row(ca_store, NAME)["operation_reason"] == row["operation_reason"]


@pytest.mark.parametrize("ahead", [LIVENESS_MARGIN_SECONDS + 1, 60, int(CLOCK_SKEW.total_seconds())])
def test_a_node_whose_clock_runs_ahead_never_settles_a_live_session(ca_store, ahead):
    """The session's node recorded its bound by its own clock; the scheduler of another node, whose clock
    runs ``ahead`` seconds ahead (within ``CLOCK_SKEW``, which the nodes' clocks may differ by), looks
    while the session is in its last seconds before its bound: the session is live, its operation stays
    ``in_progress``, and no event says that its service stopped."""
    if not ca_store.location.startswith("postgresql"):
        # The processes of an SQLite store run on one host, with one clock: no margin for another's.
        assert ca_store.clock_skew == dt.timedelta(0)
        return
    decider, plan = _authenticated(ca_store, NAME, max_session=600)
    started = parse_utc(phone_row(ca_store, NAME)["last_session_at"], "last_session_at")
    for elapsed in (0, 300, 599):  # seconds of the session, by the session's node's clock
        moment = started + dt.timedelta(seconds=elapsed + ahead)  # what the other node's clock reads then
        assert settle_abandoned(ca_store, moment) == [], (elapsed, ahead)
        assert phone_row(ca_store, NAME)["operation_status"] == "in_progress"
    with ca_store.read() as tx:
        assert audit.events(tx, action="phone.operation_failed", subject=NAME) == []
    decider.ended(plan, Outcome(outcome="aborted", reason="peer closed the connection"))


def test_the_service_scheduler_leaves_a_live_session_alone(ca_store):
    """A scheduler pass of the service while a session is under way (its default bound: an hour)."""
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"scheduler_interval_seconds": 1})
    decider, plan = _authenticated(ca_store, NAME, max_session=3600)
    part = scheduling.Scheduling(ca_store)
    try:
        part.tick()
    finally:
        part.close()
    assert phone_row(ca_store, NAME)["operation_status"] == "in_progress"
    decider.ended(plan, Outcome(outcome="succeeded"))


def test_an_operation_in_progress_from_before_sessions_had_a_bound_is_settled_after_the_longest_bound(ca_store):
    add_phone(ca_store, NAME, operation="install_upgrade")
    with ca_store.transaction() as tx:  # as a session of an older engine left it: no bound recorded
        tx.execute("UPDATE phones SET operation_status = 'in_progress', last_session_at = ? WHERE name = ?",
                   ("2026-01-01T00:00:00Z", NAME))
    assert settle_abandoned(ca_store, parse_utc("2026-01-01T12:00:00Z", "now")) == []
    assert settle_abandoned(ca_store, parse_utc("2026-01-03T00:00:00Z", "now")) == [NAME]
    assert "unknown" in phone_row(ca_store, NAME)["operation_reason"]
