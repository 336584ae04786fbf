"""Every view tells what became of an operation whose session no process serves any more.

Invariant: at any moment, for every phone, every view reports the operation status and reason that
the scheduler's duties record if they run at that same moment: ``settle_abandoned`` (an operation a
session left ``in_progress`` is settled ``failed``, "the CAPF service stopped mid-session", once the
session's ``operation_live_until`` has passed by more than the store's clock skew), then the lapse
duty (a failed operation whose deadline has passed is ``lapsed``). The views: the phone listing
(capf_info phones, ``phones list``), the CSV report, the HTML report's counts, one phone's status
(capf_phone, ``phones show``) and its settings as a diff shows them, and a query on
``operation_status`` (bulk jobs). Until that moment the operation is ``in_progress``, as its session
may still be live, whatever its deadline; a session that died leaves nobody to settle it but the
scheduler, which does not run while the service is down.

The operations are put in progress by real sessions (an LSC issued, the session never ended), on
SQLite (one host: no clock skew) and on PostgreSQL (several hosts: ``CLOCK_SKEW``); an operation from
before sessions recorded their bound is judged by its start and the longest bound there can be.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from _opencapf import phone_config, phone_query, report_html, reports, scheduler
from _opencapf.dependencies import ec, serialization
from _opencapf.protocol.session import AuthOffer, KeyChoice
from _opencapf.server import scheduling
from _opencapf.server.decider import StoreDecider, settle_abandoned
from _opencapf.store import phones as phone_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import LIVENESS_MARGIN_SECONDS, MAX_SESSION_SECONDS, OPERATION_STATUSES, format_utc, parse_utc

pytestmark = pytest.mark.both_backends

NAMES = ("SEP00000000E001", "SEP00000000E002", "SEP00000000E003")
SECOND = dt.timedelta(seconds=1)
MAX_SESSION = 60
# Where the views are read, from the moment the scheduler would first settle the first phone's operation.
READ_AT = (-SECOND, dt.timedelta(0), SECOND, dt.timedelta(days=3))
# Where a phone's deadline lies: none; before its session's bound (the session began in time); at the
# moment its operation would be settled; a day after it.
DEADLINES = (None, "before bound", "at settling", "a day later")
# How the operation's session recorded its bound: as sessions do, or not at all (an older engine's).
KINDS = ("bounded", "unbounded")

phones_strategy = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(DEADLINES)),
                           min_size=len(NAMES), max_size=len(NAMES))
_KEY = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _clear(store):
    with store.transaction() as tx:
        for name in phone_records.by_name(tx):
            phone_records.delete(tx, "test", name)


def _started(store, name, deadline_choice) -> dict:
    """A phone whose install_upgrade a session put in progress (it issued the LSC) and never ended: its
    process died. Returns the phone's row."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    # The session's bound, as it will record it (a second more, should the clock turn meanwhile).
    bound = now + dt.timedelta(seconds=MAX_SESSION + LIVENESS_MARGIN_SECONDS)
    deadline = {None: None, "before bound": now + dt.timedelta(seconds=30),
                "at settling": bound + store.clock_skew + SECOND,
                "a day later": bound + store.clock_skew + dt.timedelta(days=1)}[deadline_choice]
    wanted = {"certificate_operation": "install_upgrade", "key_order": "ec", "ec_key_size": 256}
    if deadline is not None:
        wanted["operation_completes_by"] = format_utc(deadline)
    phone_config.converge(store, name, settings=wanted)
    decider = StoreDecider(store, max_session=MAX_SESSION)
    plan = decider.begin(name)
    assert decider.authenticate(plan, AuthOffer(name.encode(), None)).ok
    decider.issue(plan, _KEY, KeyChoice("ec", 256))
    with store.read() as tx:
        return phone_records.get(tx, name)


def _unbound(store, name):
    """As an older engine's session left it: no bound recorded, judged by its start."""
    with store.transaction() as tx:
        tx.execute("UPDATE phones SET operation_live_until = NULL, last_session_at = ? WHERE name = ?",
                   (format_utc(parse_utc(phone_records.get(tx, name)["operation_live_until"], "bound")
                               - dt.timedelta(seconds=MAX_SESSION_SECONDS[1] + LIVENESS_MARGIN_SECONDS)), name))
        return phone_records.get(tx, name)


def _settles_at(row, clock_skew) -> dt.datetime:
    """The first second at which the scheduler settles the operation: its session's bound (or, with none
    recorded, its start and the longest bound) passed by more than the clock skew."""
    if row["operation_live_until"] is not None:
        return parse_utc(row["operation_live_until"], "bound") + clock_skew + SECOND
    longest = dt.timedelta(seconds=MAX_SESSION_SECONDS[1] + LIVENESS_MARGIN_SECONDS)
    return parse_utc(row["last_session_at"], "start") + longest + clock_skew + SECOND


def _expected(row, moment, clock_skew):
    """What the scheduler's duties record at ``moment``, by the rules as documented."""
    if moment < _settles_at(row, clock_skew):
        return "in_progress", row["operation_reason"]
    deadline = parse_utc(row["operation_deadline"], "deadline")
    if deadline is not None and deadline < moment:
        return "lapsed", "deadline passed"
    bound = row["operation_live_until"] or "unknown (recorded before sessions had a bound)"
    return "failed", ("session ended without a result: the CAPF service stopped mid-session (no process serves it "
                      f"any more; its time bound passed at {bound})")


def _views(store, moment) -> dict[str, dict]:
    """view -> name -> (status, reason), or (status,) for a view that shows no reason."""
    seen: dict[str, dict] = {}
    gathered = reports.gather(store, ["phones"], now=moment)["phones"]
    seen["capf_info phones"] = {row["device_name"]: (row["operation_status"], row["operation_reason"])
                                for row in gathered}
    lines = csv.DictReader(io.StringIO(reports.report_csv(gathered).decode("utf-8")))
    seen["csv"] = {line["device_name"]: (line["operation_status"],) for line in lines}
    seen["phones show"] = {}
    seen["settings (diff)"] = {}
    for name in NAMES:
        detail = reports.phone_detail(store, name, now=moment)
        seen["phones show"][name] = (detail["operation"]["status"], detail["operation"]["reason"])
        seen["settings (diff)"][name] = (detail["settings"]["operation_status"],)
    with store.read() as tx:
        rows = reports.phone_rows(tx, None, now=moment, clock_skew=store.clock_skew)
        seen["listing"] = {row["device_name"]: (row["operation_status"], row["operation_reason"]) for row in rows}
        seen["phone status"] = {}
        for name in NAMES:
            status = phone_query.phone_status(tx, name, now=moment, clock_skew=store.clock_skew)
            seen["phone status"][name] = (status["operation_status"], status["operation_reason"])
        seen["operation_status query"] = {}
        for status in OPERATION_STATUSES:
            for row in phone_query.select(tx, phone_query.check_query({"operation_status": [status]}), now=moment,
                                          clock_skew=store.clock_skew):
                assert row["name"] not in seen["operation_status query"], (row["name"], status)
                seen["operation_status query"][row["name"]] = (status,)
    page = report_html.context(gathered, stale_lscs=[], pending_csrs=[], generated_at=format_utc(moment))
    seen["html counts"] = {column["label"]: column["value"] for column in page["statuses"]["bars"]}
    return seen


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(declared=phones_strategy, read_at=st.sampled_from(READ_AT))
def test_every_view_reports_an_abandoned_operation_as_the_scheduler_settles_it_at_that_moment(
        ca_store, declared, read_at):
    store = ca_store
    _clear(store)
    rows = {}
    for name, (kind, deadline) in zip(NAMES, declared):
        rows[name] = _started(store, name, deadline)
        if kind == "unbounded":
            rows[name] = _unbound(store, name)
        assert rows[name]["operation_status"] == "in_progress"
    moment = _settles_at(rows[NAMES[0]], store.clock_skew) + read_at
    expected = {name: _expected(row, moment, store.clock_skew) for name, row in rows.items()}

    seen = _views(store, moment)
    wanted_counts: dict[str, int] = {}
    for status, _reason in expected.values():
        wanted_counts[status] = wanted_counts.get(status, 0) + 1
    assert seen.pop("html counts") == wanted_counts, ("html counts", moment)
    for view, reported in seen.items():
        for name, (status, reason) in expected.items():
            assert reported[name][0] == status, (view, name, format_utc(moment), reported[name])
            if len(reported[name]) > 1:
                assert reported[name][1] == reason, (view, name, format_utc(moment))

    # The scheduler's duties, at that moment, record what the views reported; the views then say the same.
    settled = settle_abandoned(store, moment)
    assert sorted(settled) == sorted(name for name, (status, _reason) in expected.items() if status != "in_progress")
    scheduler.lapse_deadlines(store, moment)
    with store.read() as tx:
        stored = {name: phone_records.get(tx, name) for name in NAMES}
    assert {name: (row["operation_status"], row["operation_reason"]) for name, row in stored.items()} == expected
    again = _views(store, moment)
    again.pop("html counts")
    for view, reported in again.items():
        assert {name: reported[name][0] for name in NAMES} == {name: status for name, (status, _r) in expected.items()}, view


def test_capf_phone_and_capf_info_report_an_abandoned_operation_settled_now(ca_store):
    """The modules' views read at the current time: a session whose bound passed an hour ago (more than
    any clock skew) left its operation in progress; capf_phone's status and diff and capf_info's phones
    report it failed, as the scheduler then records it."""
    name = NAMES[0]
    _started(ca_store, name, None)
    past = format_utc(dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1))
    with ca_store.transaction() as tx:  # the hour that passed since the session's node recorded its bound
        tx.execute("UPDATE phones SET operation_live_until = ? WHERE name = ?", (past, name))
    reason = ("session ended without a result: the CAPF service stopped mid-session (no process serves it any more; "
              f"its time bound passed at {past})")
    result = phone_config.converge(ca_store, name, settings={"description": "lobby"}, check_mode=True)
    assert (result["status"]["operation_status"], result["status"]["operation_reason"]) == ("failed", reason)
    assert result["before"]["operation_status"] == result["after"]["operation_status"] == "failed"
    (phone,) = reports.gather(ca_store, ["phones"])["phones"]
    assert (phone["operation_status"], phone["operation_reason"]) == ("failed", reason)
    assert settle_abandoned(ca_store) == [name]
    with ca_store.read() as tx:
        row = phone_records.get(tx, name)
    assert (row["operation_status"], row["operation_reason"]) == ("failed", reason)


def test_one_scheduler_round_records_what_the_views_report(ca_store):
    """The service's scheduler settles abandoned operations before it lapses passed deadlines: one round
    records an abandoned operation whose deadline has passed as ``lapsed``, as every view reports it."""
    name = NAMES[0]
    _started(ca_store, name, "before bound")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with ca_store.transaction() as tx:  # the hours that passed since: the bound, then the deadline
        tx.execute("UPDATE phones SET operation_live_until = ?, operation_deadline = ? WHERE name = ?",
                   (format_utc(now - dt.timedelta(hours=2)), format_utc(now - dt.timedelta(hours=1)), name))
        service_records.write(tx, "test", {"scheduler_interval_seconds": 1})
    (phone,) = reports.gather(ca_store, ["phones"])["phones"]
    assert (phone["operation_status"], phone["operation_reason"]) == ("lapsed", "deadline passed")
    part = scheduling.Scheduling(ca_store)
    try:
        part.tick()
    finally:
        part.close()
    with ca_store.read() as tx:
        row = phone_records.get(tx, name)
    assert (row["operation_status"], row["operation_reason"]) == ("lapsed", "deadline passed")
