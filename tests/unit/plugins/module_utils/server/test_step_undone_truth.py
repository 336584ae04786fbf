"""A session's step that meets the store's write lock held by another writer (``StoreBusy`` at the begin of a
write transaction) before the step has committed anything is undone: the session raises ``StepUndone``, and
the same call made again once the lock is free goes on as if the lock had never been met, however often and at
whichever of the session's writes it is met. One met after a commit of the same step is not undone: the
session fails with it, and its failure is on record.

The service's own sans-I/O ``ServerSession`` with its ``StoreDecider`` on a real store, the simulator's phone
over plain bytes; the other writer is the store's write transactions refusing to begin, as they do after
``LOOP_WRITER_LOCK_WAIT_SECONDS`` on the event loop."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, example, given, settings, strategies as st

from support.protocol import add_phone, certificate_rows, phone_row
from _opencapf.errors import StepUndone, StoreBusy
from _opencapf.protocol.phone import PhoneSession
from _opencapf.protocol.session import ServerSession
from _opencapf.server.decider import StoreDecider
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings

AUTH_STRING = "12345678"
BUSY = "store test: waited 0.25 s for its write lock, which another writer still holds; nothing was written"
_names = itertools.count(1)


def _enrol(store, monkeypatch, name: str, auth: bool, busy: dict[int, int]) -> tuple[ServerSession, int]:
    """One session of phone ``name``; the ``n``-th write transaction of the session (from 1) meets the lock
    ``busy[n]`` times before it begins. Every ``StepUndone`` is answered by the same call again. The
    session (its decider's end recorded as ``{"outcome": ...}``), and how many steps were undone."""
    real = store.backend.transaction
    refusals = dict(busy)
    counted = {"writes": 0}

    def counting(write=True, durable=True):
        if write:
            counted["writes"] += 1
            if refusals.get(counted["writes"]):
                refusals[counted["writes"]] -= 1
                counted["writes"] -= 1  # the same write comes again when the step runs again
                raise StoreBusy(BUSY)
        return real(write=write, durable=durable)

    phone_settings = PhoneSettings(name, auth_mode="auth_string", auth_string=AUTH_STRING) if auth else PhoneSettings(name)
    phone = PhoneSession(PhoneIdentity(phone_settings))
    decider = StoreDecider(store, "test", session_id=1, max_session=600,
                           recorder=lambda tx, outcome: {"outcome": outcome.outcome})
    server = ServerSession(1, decider, step_timeout=30, max_duration=600)
    undone, now = 0, 0.0
    sent = server.start(now)
    with monkeypatch.context() as patched:
        patched.setattr(store.backend, "transaction", counting)
        while not server.closed:
            reply = phone.receive_data(sent)
            now += 0.01
            while True:
                try:
                    sent = server.receive_data(reply, now)
                    break
                except StepUndone:
                    undone += 1
    phone.receive_data(sent)
    return server, undone


def _actions(store, name: str) -> list[str]:
    with store.read() as tx:
        return sorted(row["action"] for row in tx.query("SELECT action FROM audit_events WHERE subject = ?", (name,)))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.booleans(), st.dictionaries(st.integers(1, 3), st.integers(1, 3), max_size=3))
@example(True, {1: 1, 2: 1, 3: 1})
@example(False, {2: 2})
def test_a_step_undone_by_a_held_lock_runs_again_as_if_the_lock_had_never_been_met(ca_store, monkeypatch, auth, busy):
    # Install by CAPF: its writes are the authentication string's check (with one), the LSC's issuance and the
    # installation with the session's end, each the first write of its step.
    expected_name, name = f"SEP{next(_names):012X}", f"SEP{next(_names):012X}"
    for each in (expected_name, name):
        add_phone(ca_store, each, operation="install_upgrade", key_order="ec",
                  **({"auth_mode": "auth_string", "auth_string": AUTH_STRING} if auth else {}))
    expected, none_undone = _enrol(ca_store, monkeypatch, expected_name, auth, {})
    assert none_undone == 0 and expected.outcome.outcome == "succeeded", expected.outcome
    writes = 3 if auth else 2
    server, undone = _enrol(ca_store, monkeypatch, name, auth, busy)
    assert undone == sum(times for number, times in busy.items() if number <= writes)
    assert (server.outcome.outcome, server.outcome.reason) == (expected.outcome.outcome, expected.outcome.reason)
    row = phone_row(ca_store, name)
    assert row["operation_status"] == "succeeded" and row["auth_failures"] == 0, dict(row)
    assert [lsc["status"] for lsc in certificate_rows(ca_store, name)] == ["installed"]
    assert _actions(ca_store, name) == _actions(ca_store, expected_name)


def test_a_held_lock_met_after_a_commit_of_the_step_fails_the_session_on_record(ca_store, monkeypatch):
    """A phone with no pending operation and an authentication string: its one step checks the string (a
    commit) and then records the session's end; the lock met at that second write is not undone."""
    name = f"SEP{next(_names):012X}"
    add_phone(ca_store, name, operation="none", auth_mode="auth_string", auth_string=AUTH_STRING)
    server, undone = _enrol(ca_store, monkeypatch, name, True, {2: 1})
    assert undone == 0
    assert (server.outcome.outcome, server.outcome.reason) == ("failed", BUSY), server.outcome
    assert server.decider.recorded == {"outcome": "failed"}  # the session's end, committed
