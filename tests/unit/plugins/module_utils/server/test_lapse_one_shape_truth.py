"""A lapse is recorded and reported in one shape, whoever records it.

Invariant: for a phone whose operation's deadline has passed (or not), whatever became of the operation
(pending, failed, in progress in a session that may be live, in progress in one no process serves any
more, succeeded), the phone's operation status and reason, and those of its key requests, as every view
reports them at a moment, are exactly what is recorded at that moment by each path that may record it:
the scheduler's round (``settle_abandoned``, then the lapse duty), and a session of the phone that is
refused because the deadline passed (its end records the lapse). Two twin phones in the same state, one
through each path, end alike. The session may tell the phone and its own record why it was refused in
its own words; what is stored about the phone is the views' shape (``lapsed``, ``deadline passed``), and so
are the audit events of the phone's operation and requests (a session adds its ``session_id``).

On SQLite and on PostgreSQL (``CLOCK_SKEW``), the sessions being the service's ``StoreDecider``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from _opencapf import phone_config, scheduler
from _opencapf.protocol.session import Outcome
from _opencapf.server.decider import StoreDecider, settle_abandoned
from _opencapf.store import csrs as csr_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import format_utc

pytestmark = pytest.mark.both_backends

HOUR = dt.timedelta(hours=1)
STATES = ("pending", "failed", "in progress, live", "in progress, abandoned", "succeeded")
DEADLINES = ("an hour ago", "a day ago", "tomorrow", None)
_names = itertools.count(1)


def _phone(store, state: str, deadline: str | None, request: bool, now: dt.datetime) -> str:
    """A phone in ``state`` with its deadline, and a request the CA holds or not, put there by the
    engine's own store functions; its times relative to ``now``."""
    name = f"SEP{next(_names):012X}"
    at = {"an hour ago": now - HOUR, "a day ago": now - 24 * HOUR, "tomorrow": now + 24 * HOUR, None: None}[deadline]
    completes_by = {} if at is None else {"operation_completes_by": format_utc(at)}
    phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade", "key_order": "ec",
                                                 "ec_key_size": 256, **completes_by})
    with store.transaction() as tx:
        phone = phone_records.get(tx, name)
        if state.startswith("in progress"):
            live = state.endswith("live")
            phone_records.record_session_start(tx, phone, True, format_utc(now + HOUR if live else now - 2 * HOUR))
        elif state != "pending":
            phone_records.set_operation_result(tx, "test", phone, state, "the phone refused the key"
                                               if state == "failed" else "")
        if request:
            csr_records.add(tx, phone["id"], "%064x" % phone["id"], b"key")
            if not state.startswith("in progress"):  # sent by an earlier session, before this state
                tx.execute("UPDATE csrs SET created_at = ? WHERE phone_id = ?", (format_utc(now - 3 * HOUR), phone["id"]))
    return name


def _reported(store, name: str, moment: str):
    with store.read() as tx:
        row = phone_records.get(tx, name)
        requests = [(item["status"], item["reason"]) for item in csr_records.listing(
            tx, None, now=moment, clock_skew=store.clock_skew) if item["device_name"] == name]
    return phone_records.reported_operation(row, moment, store.clock_skew), requests


def _recorded(store, name: str):
    with store.read() as tx:
        row = phone_records.get(tx, name)
        requests = [(item["status"], item["reason"]) for item in tx.query(
            "SELECT status, reason FROM csrs WHERE phone_id = ? ORDER BY id", (row["id"],))]
    return (row["operation_status"], row["operation_reason"]), requests


def _events(store, name: str, after: int) -> list:
    """The audit events of the phone's operation and requests since event ``after``: (action, details)
    without the session a session's events name, nor the twin's own request ids."""
    with store.read() as tx:
        rows = tx.query("SELECT action, details FROM audit_events WHERE subject = ? AND id > ? AND "
                        "(action LIKE 'phone.operation_%' OR action LIKE 'csr.%') ORDER BY id", (name, after))
    ignored = ("session_id", "csr_id")
    return [(row["action"], {key: value for key, value in json.loads(row["details"]).items() if key not in ignored})
            for row in rows]


def _last_event(store) -> int:
    with store.read() as tx:
        return tx.scalar("SELECT COALESCE(MAX(id), 0) FROM audit_events")


def _by_scheduler(store) -> None:
    moment = dt.datetime.now(dt.timezone.utc)
    settle_abandoned(store, moment)
    scheduler.lapse_deadlines(store, moment)


def _by_session(store, name: str) -> str:
    """A session of the phone: refused (its end records why), else it records nothing here. Its refusal."""
    decider = StoreDecider(store, max_session=60)
    plan = decider.begin(name)
    if plan.refusal:
        decider.ended(plan, Outcome(name, plan.operation, "refused", plan.refusal))
    return plan.refusal


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(state=st.sampled_from(STATES), deadline=st.sampled_from(DEADLINES), request=st.booleans())
@example(state="in progress, live", deadline="an hour ago", request=True)  # not lapsed: its session began in time
@example(state="in progress, abandoned", deadline="an hour ago", request=True)
def test_a_lapse_is_recorded_as_the_views_report_it_by_the_scheduler_and_by_a_refused_session(
        ca_store, state, deadline, request):
    store = ca_store
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    by_scheduler, by_session = (_phone(store, state, deadline, request, now) for _twin in range(2))
    moment = format_utc(dt.datetime.now(dt.timezone.utc))
    reported = _reported(store, by_scheduler, moment)
    assert _reported(store, by_session, moment) == reported
    before = _last_event(store)
    refusal = _by_session(store, by_session)  # first: the scheduler's round lapses every phone
    if reported[0][0] == "lapsed":
        assert refusal, "a session of a phone whose operation is reported lapsed is refused"
        assert reported[0] == ("lapsed", phone_records.LAPSED_REASON)
    if refusal:  # what the refused session recorded is what the views reported
        assert _recorded(store, by_session) == reported, (state, deadline, refusal)
    _by_scheduler(store)
    assert _recorded(store, by_scheduler) == reported, (state, deadline)
    if refusal:  # the same events of the phone, whoever recorded the lapse
        assert _events(store, by_session, before) == _events(store, by_scheduler, before), (state, deadline)
