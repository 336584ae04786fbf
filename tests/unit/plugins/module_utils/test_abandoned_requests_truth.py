"""What the operator sees of a phone's key requests, and of its operation, is what the engine acts on.

Invariant (a): at any moment, every view of the key requests (CSRs) reports for each the status and
reason that the scheduler's round records if it runs at that same moment: ``settle_abandoned`` (the
requests a session left ``pending`` when no process serves it any more are failed with its operation,
"the CAPF service stopped mid-session", also one an online CA holds), then the lapse duty (the
requests still at a CA of a phone whose operation lapses are failed with it). The views: capf_info's
``pending_csrs`` (and the HTML report's list), one phone's ``pending_csrs`` (``phones show``), the
CSR listing (``csr list``, with and without ``--all``), and what the enrolment service polls and the
offline export lists: a request reported failed is never picked up.

Invariant (b): a change of a phone's settings (``phone_config.converge_many``: capf_phone, bulk jobs,
CSV imports, declarative files, templates) decides on the operation's status as every view reports
it: on a phone whose operation is reported ``failed`` (abandoned) or ``lapsed`` (abandoned past its
deadline, or pending past its deadline) the same request gives the same result as on the same phone
after the scheduler recorded that status: the same ``changed``, the same diff, the same rows after
(but for times and ids), its requests included. An operation in progress in a live session is not
armed again by a new deadline.

The operations are put in progress by real sessions of the service's ``StoreDecider`` with a
third-party CA (the offline CA's CSR recorded, or a loopback EST CA holding the request), whose
process died before their end; on SQLite (no clock skew) and on PostgreSQL (``CLOCK_SKEW``).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support.third_party_ca import EnterprisePki, pem, use_online_est
from support.tools import run_cli
from _opencapf import csr as csr_module
from _opencapf import enrolment, phone_config, reports, scheduler, service_config, trust
from _opencapf.dependencies import ec, serialization
from _opencapf.protocol.session import AuthOffer, Deferred, KeyChoice
from _opencapf.server.decider import StoreDecider, settle_abandoned
from _opencapf.store import csrs as csr_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import LIVENESS_MARGIN_SECONDS, format_utc, parse_utc

pytestmark = pytest.mark.both_backends

NAMES = ("SEP00000000F001", "SEP00000000F002", "SEP00000000F003")
SECOND = dt.timedelta(seconds=1)
MAX_SESSION = 60
READ_AT = (-SECOND, dt.timedelta(0), SECOND, dt.timedelta(days=3))
DEADLINES = (None, "before bound", "at settling", "a day later")
# What else the phone has: a request of an earlier session the CA still holds; whether the dead
# session's request is held by an online CA (it has the CA's reference).
EXTRAS = st.fixed_dictionaries({"earlier": st.booleans(), "online": st.booleans(), "deadline": st.sampled_from(DEADLINES)})
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
ABANDONED = ("session ended without a result: the CAPF service stopped mid-session (no process serves it any more; "
             "its time bound passed at {bound})")


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


def _offline(store, pki) -> None:
    trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    service_config.converge(store, parameters_wanted={"issuer": "offline_ca"})


def _clear(store):
    with store.transaction() as tx:
        for name in phone_records.by_name(tx):
            phone_records.delete(tx, "test", name)


def _earlier_request(store, name, key) -> int:
    """A request an earlier session left at the CA (it deferred: the phone keeps the key), an hour ago."""
    der = key.public_key().public_bytes(*_SPKI)
    with store.transaction() as tx:
        csr_id = csr_records.add(tx, phone_records.get(tx, name)["id"], "%064x" % len(der), der)
        tx.execute("UPDATE csrs SET created_at = ? WHERE id = ?",
                   (format_utc(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)), csr_id))
    return csr_id


def _send_request_and_die(store, name) -> tuple:
    """A session of ``name`` that authenticates and sends its CSR (held by the CA: deferred), then ends
    with no end recorded: its process died. Its decider and plan (a test may end it after all)."""
    decider = StoreDecider(store, max_session=MAX_SESSION)
    plan = decider.begin(name)
    assert decider.authenticate(plan, AuthOffer(name.encode(), None)).ok
    key = ec.generate_private_key(ec.SECP256R1())
    request = decider.prepare_csr(plan, key.public_key().public_bytes(*_SPKI), KeyChoice("ec", 256))
    signature = csr_module.phone_sign(request.info, key, "sha256", request.key_type_code)
    assert isinstance(decider.submit_csr(plan, request, signature), Deferred)
    return decider, plan


def _dead_session(store, name, deadline_choice, *, earlier=False, online_ref=None) -> dict:
    """A phone whose install_upgrade a session with the offline CA put in progress: it sent its CSR (recorded
    ``pending``; with ``online_ref``, as an online CA holding it under that reference records it) and its
    process died before the session's end. Returns the phone's row."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    bound = now + dt.timedelta(seconds=MAX_SESSION + LIVENESS_MARGIN_SECONDS)
    deadline = {None: None, "before bound": now + dt.timedelta(seconds=30),
                "at settling": bound + store.clock_skew + SECOND,
                "a day later": bound + store.clock_skew + dt.timedelta(days=1)}[deadline_choice]
    wanted = {"certificate_operation": "install_upgrade", "key_order": "ec", "ec_key_size": 256}
    if deadline is not None:
        wanted["operation_completes_by"] = format_utc(deadline)
    phone_config.converge(store, name, settings=wanted)
    if earlier:
        _earlier_request(store, name, ec.generate_private_key(ec.SECP256R1()))
    _send_request_and_die(store, name)
    with store.transaction() as tx:
        phone = phone_records.get(tx, name)
        if online_ref is not None:
            (own,) = csr_records.pending_since(tx, phone["id"], phone["last_session_at"])
            csr_records.set_status(tx, own, "pending", "the online CA has not signed the request yet",
                                   external_ref=online_ref)
        return phone


def _settles_at(row, clock_skew) -> dt.datetime:
    return parse_utc(row["operation_live_until"], "bound") + clock_skew + SECOND


def _csr_views(store, moment) -> dict:
    """view -> {csr id: (status, reason)} or {csr id: (status,)}, or a set of ids for the views that list
    the requests still waiting."""
    when = format_utc(moment)
    seen: dict = {}
    with store.read() as tx:
        everything = csr_records.listing(tx, None, now=when, clock_skew=store.clock_skew)
        seen["csr list --all"] = {row["id"]: (row["status"], row["reason"]) for row in everything}
        seen["csr list"] = {row["id"] for row in csr_records.listing(tx, now=when, clock_skew=store.clock_skew)}
        seen["enrolment service"] = {
            row["id"] for row in csr_records.pending_online(tx, now=when, clock_skew=store.clock_skew)}
        seen["offline export"] = {row["id"] for row in csr_records.offline_signed(tx, "pending", now=when,
                                                                                  clock_skew=store.clock_skew)}
        seen["offline import (no longer waiting)"] = {
            row["id"] for row in csr_records.offline_signed(tx, "failed", now=when, clock_skew=store.clock_skew)}
    seen["capf_info pending_csrs"] = {row["id"] for row in reports.gather(store, ["pending_csrs"], now=moment)["pending_csrs"]}
    seen["phones show"] = {row["id"] for name in NAMES
                           for row in (reports.phone_detail(store, name, now=moment) or {}).get("pending_csrs", [])}
    return seen


def _stored(store) -> dict:
    with store.read() as tx:
        return {row["id"]: dict(row) for row in tx.query("SELECT id, status, reason, csr_pem, external_ref FROM csrs")}


def _expected(stored) -> dict:
    return {
        "csr list --all": {csr_id: (row["status"], row["reason"]) for csr_id, row in stored.items()},
        "csr list": {csr_id for csr_id, row in stored.items() if row["status"] == "pending"},
        "enrolment service": {csr_id for csr_id, row in stored.items()
                              if row["status"] == "pending" and row["external_ref"] is not None},
        "offline export": {csr_id for csr_id, row in stored.items()
                           if row["status"] == "pending" and row["csr_pem"] and row["external_ref"] is None},
        "offline import (no longer waiting)": {csr_id for csr_id, row in stored.items()
                                               if row["status"] == "failed" and row["csr_pem"]
                                               and row["external_ref"] is None},
        "capf_info pending_csrs": {csr_id for csr_id, row in stored.items() if row["status"] == "pending"},
        "phones show": {csr_id for csr_id, row in stored.items() if row["status"] == "pending"},
    }


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(phones=st.lists(EXTRAS, min_size=len(NAMES), max_size=len(NAMES)), read_at=st.sampled_from(READ_AT))
def test_every_csr_view_reports_what_the_scheduler_records_at_that_moment(ca_store, pki, phones, read_at):
    store = ca_store
    _offline(store, pki)
    _clear(store)
    rows = {}
    for index, (name, extra) in enumerate(zip(NAMES, phones)):
        rows[name] = _dead_session(store, name, extra["deadline"], earlier=extra["earlier"],
                                   online_ref=f"REF-{index}" if extra["online"] else None)
        assert rows[name]["operation_status"] == "in_progress"
    moment = _settles_at(rows[NAMES[0]], store.clock_skew) + read_at
    seen = _csr_views(store, moment)

    # The scheduler's round at that moment records what the views reported; the views then say the same.
    settle_abandoned(store, moment)
    scheduler.lapse_deadlines(store, moment)
    expected = _expected(_stored(store))
    for view, reported in seen.items():
        assert reported == expected[view], (view, format_utc(moment))
    assert _csr_views(store, moment) == expected
    failed_now = {csr_id for csr_id, (status, _r) in expected["csr list --all"].items() if status == "failed"}
    if moment >= _settles_at(rows[NAMES[0]], store.clock_skew):
        assert failed_now, "the first phone's session request is failed from its settling on"


def _hour_old_bound(store, name) -> str:
    """The hour that passed since the session's node recorded its bound (more than any clock skew)."""
    past = format_utc(dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1))
    with store.transaction() as tx:
        tx.execute("UPDATE phones SET operation_live_until = ? WHERE name = ?", (past, name))
    return past


def test_capf_info_and_the_cli_report_the_request_of_an_abandoned_session_failed_now(ca_store, pki, store_cli):
    """The views read at the current time (capf_info, ``phones show``, the CLI's ``csr list``): the request
    of a session whose bound passed an hour ago is failed with its operation, as the scheduler records it."""
    _offline(ca_store, pki)
    name = NAMES[0]
    _dead_session(ca_store, name, None)
    past = _hour_old_bound(ca_store, name)
    reason = ABANDONED.format(bound=past)
    assert reports.gather(ca_store, ["pending_csrs"])["pending_csrs"] == []
    assert reports.phone_detail(ca_store, name)["pending_csrs"] == []
    assert json.loads(run_cli(*store_cli, "--json", "csr", "list", check=True).stdout) == []
    (listed,) = json.loads(run_cli(*store_cli, "--json", "csr", "list", "--all", check=True).stdout)
    assert (listed["status"], listed["reason"]) == ("failed", reason)
    assert enrolment.pending_csrs(ca_store) == []
    assert settle_abandoned(ca_store) == [name]
    (again,) = json.loads(run_cli(*store_cli, "--json", "csr", "list", "--all", check=True).stdout)
    assert (again["status"], again["reason"]) == ("failed", reason)


def _held_by_online_ca(store, est, name) -> int:
    """A session whose request the online CA holds: its process died before the session's end."""
    est.pending_first = 10 ** 6
    phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade", "key_order": "ec",
                                                 "ec_key_size": 256})
    _send_request_and_die(store, name)
    with store.read() as tx:
        (row,) = csr_records.listing(tx)
    return row["id"]


def test_the_enrolment_service_never_picks_up_a_request_the_views_report_failed(ca_store, pki, est):
    """The online CA holds the request of a session that died; once the views report it failed, the CA
    signing it changes nothing: the enrolment service's pass does not ask for it, no LSC waits for the
    phone, and the scheduler records the request failed as reported."""
    use_online_est(ca_store, pki, est)
    name = NAMES[0]
    csr_id = _held_by_online_ca(ca_store, est, name)
    past = _hour_old_bound(ca_store, name)
    est.pending_first = 0  # the CA would now sign what it is asked about
    assert enrolment.worker_step(ca_store) == {"issued": 0, "pending": 0, "failed": 0}
    with ca_store.read() as tx:
        assert csr_records.status_of(tx, csr_id) == "pending"  # as stored: the scheduler has not run
        (listed,) = csr_records.listing(tx, None, clock_skew=ca_store.clock_skew)
        assert tx.query("SELECT id FROM certificates WHERE kind = 'lsc'") == []
    assert (listed["status"], listed["reason"]) == ("failed", ABANDONED.format(bound=past))
    settle_abandoned(ca_store)
    with ca_store.read() as tx:
        assert csr_records.status_of(tx, csr_id) == "failed"


class _Late:
    """The real client of the loopback CA, whose answer reaches the service only after ``meanwhile()`` ran
    (the moment the views report the request failed passes while the HTTP answer is on its way)."""

    def __init__(self, issuer, meanwhile):
        self.issuer, self.meanwhile = issuer, meanwhile

    def poll(self, reference, request_der):
        answer = self.issuer.poll(reference, request_der)
        self.meanwhile()
        return answer

    def close(self):
        self.issuer.close()


def test_an_answer_that_arrives_once_the_request_is_reported_failed_is_stale(ca_store, pki, est):
    """The enrolment service asks the CA about a held request while its session may still be live; the
    CA's answer arrives once the session's bound has passed: the request is reported failed then, so the
    answer's certificate is recorded stale and never waits for the phone, as when the scheduler had
    already failed it."""
    use_online_est(ca_store, pki, est)
    name = NAMES[0]
    csr_id = _held_by_online_ca(ca_store, est, name)
    est.pending_first = 0
    issuer = enrolment.online_issuer(ca_store)
    try:
        counts = enrolment.poll_pending(ca_store, "enrolment-service",
                                        issuer=_Late(issuer, lambda: _hour_old_bound(ca_store, name)))
    finally:
        issuer.close()
    assert counts == {"issued": 0, "pending": 0, "failed": 0, "stale": 1}, counts
    with ca_store.read() as tx:
        assert [row["status"] for row in tx.query("SELECT status FROM certificates WHERE kind = 'lsc'")] == ["stale"]
        (listed,) = csr_records.listing(tx, None, clock_skew=ca_store.clock_skew)
    assert listed["status"] == "failed"
    settle_abandoned(ca_store)
    with ca_store.read() as tx:
        assert csr_records.status_of(tx, csr_id) == "failed"


def test_a_new_session_settles_the_abandoned_one_first(ca_store, pki, est):
    """The phone comes back before the scheduler ran: its new session records the abandoned operation as
    the views reported it (failed, its request with it) before it starts, so the request reported failed
    is not picked up again by the new session's poll of the CA, and no view reports it pending again."""
    use_online_est(ca_store, pki, est)
    name = NAMES[0]
    csr_id = _held_by_online_ca(ca_store, est, name)
    _hour_old_bound(ca_store, name)
    est.pending_first = 0
    decider = StoreDecider(ca_store, max_session=MAX_SESSION)
    plan = decider.begin(name)
    assert decider.authenticate(plan, AuthOffer(name.encode(), None)).ok
    assert decider.third_party_state(plan) is None  # nothing waits for the phone: it starts with a new key
    with ca_store.read() as tx:
        assert csr_records.status_of(tx, csr_id) == "failed"
        assert phone_records.get(tx, name)["operation_status"] == "in_progress"
        assert tx.query("SELECT id FROM certificates WHERE kind = 'lsc'") == []


# -- (b) a converge decides on the status views report ---------------------------------------------------

KINDS = ("abandoned", "overdue")
# Deadlines, relative to now, of a phone whose session's bound passed two hours ago.
PHONE_DEADLINES = (None, "three hours ago", "an hour ago", "tomorrow")
REQUESTS = st.fixed_dictionaries({}, optional={
    "operation_completes_by": st.sampled_from(("tomorrow", "next week", "an hour ago", "none")),
    "description": st.sampled_from(("", "lobby")),
    "certificate_operation": st.sampled_from(("install_upgrade", "delete", "none")),
})


def _at(choice, now):
    return {None: None, "three hours ago": now - dt.timedelta(hours=3), "an hour ago": now - dt.timedelta(hours=1),
            "tomorrow": now + dt.timedelta(days=1), "next week": now + dt.timedelta(days=7)}[choice]


def _twin_phone(store, name, kind, deadline, earlier, now) -> None:
    """A phone left abandoned by a dead session (with its request), or pending with no session; with a
    request an earlier session left at the CA or not; its times set relative to ``now``."""
    if kind == "abandoned":
        _dead_session(store, name, None, earlier=earlier)
    else:
        phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade", "key_order": "ec",
                                                     "ec_key_size": 256})
        if earlier:
            _earlier_request(store, name, ec.generate_private_key(ec.SECP256R1()))
    at = _at(deadline, now)
    with store.transaction() as tx:
        tx.execute("UPDATE phones SET operation_deadline = ?, operation_live_until = ?, updated_at = ? WHERE name = ?",
                   (None if at is None else format_utc(at),
                    format_utc(now - dt.timedelta(hours=2)) if kind == "abandoned" else None,
                    format_utc(now - dt.timedelta(hours=2)), name))


def _state(store, name) -> dict:
    with store.read() as tx:
        row = phone_records.get(tx, name)
        requests = tx.query("SELECT status, reason FROM csrs WHERE phone_id = ? ORDER BY id", (row["id"],))
    kept = {key: value for key, value in row.items()
            if key not in ("id", "name", "incarnation", "created_at", "updated_at", "last_session_at",
                           "auth_salt", "auth_hash")}
    return {"phone": kept, "csrs": [dict(item) for item in requests]}


def _without_name(view):
    return None if view is None else {key: value for key, value in view.items() if key != "name"}


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), deadline=st.sampled_from(PHONE_DEADLINES), earlier=st.booleans(),
       wanted=REQUESTS, reissue=st.booleans(), check_mode=st.booleans())
def test_a_converge_acts_on_the_reported_status_as_on_the_same_status_stored(
        ca_store, pki, kind, deadline, earlier, wanted, reissue, check_mode):
    store = ca_store
    _offline(store, pki)
    _clear(store)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    as_read, recorded = NAMES[0], NAMES[1]
    _twin_phone(store, recorded, kind, deadline, earlier, now)
    settle_abandoned(store)  # the scheduler's round, before the phone read as is exists
    scheduler.lapse_deadlines(store, dt.datetime.now(dt.timezone.utc))
    _twin_phone(store, as_read, kind, deadline, earlier, now)
    first, second = _state(store, as_read), _state(store, recorded)
    assert first["phone"]["operation_status"] == ("in_progress" if kind == "abandoned" else "pending")
    # Every view reports the one phone's operation as the other's is recorded.
    reported = phone_records.reported_operation(_row(store, as_read), format_utc(now), store.clock_skew)
    assert reported == (second["phone"]["operation_status"], second["phone"]["operation_reason"])
    settings_ = {key: format_utc(_at(value, now)) if key == "operation_completes_by" and value != "none" else value
                 for key, value in wanted.items()}
    results = {name: phone_config.converge(store, name, settings=settings_, reissue=reissue, check_mode=check_mode)
               for name in (as_read, recorded)}
    one, other = results[as_read], results[recorded]
    assert one["changed"] == other["changed"], (one, other)
    assert _without_name(one["before"]) == _without_name(other["before"])
    assert _without_name(one["after"]) == _without_name(other["after"])
    assert {key: value for key, value in one["status"].items() if key != "last_session"} == \
        {key: value for key, value in other["status"].items() if key != "last_session"}
    if not check_mode and one["changed"]:
        assert _state(store, as_read) == _state(store, recorded)
    # What every view reports after is the same for both, whether written or not.
    with store.read() as tx:
        for name in (as_read, recorded):
            assert phone_records.get(tx, name) is not None
    views = {name: (phone_config.settings_view(_row(store, name), clock_skew=store.clock_skew),
                    [(row["status"], row["reason"]) for row in _listed(store, name)])
             for name in (as_read, recorded)}
    assert _without_name(views[as_read][0]) == _without_name(views[recorded][0])
    assert views[as_read][1] == views[recorded][1]


def _row(store, name):
    with store.read() as tx:
        return phone_records.get(tx, name)


def _listed(store, name):
    with store.read() as tx:
        return [row for row in csr_records.listing(tx, None, clock_skew=store.clock_skew) if row["device_name"] == name]


def test_a_new_deadline_does_not_arm_again_an_operation_a_live_session_runs(ca_store, pki):
    """In progress in a session that may still be live, the operation keeps running: a new deadline is
    recorded, the operation stays in progress, and its request stays at the CA."""
    _offline(ca_store, pki)
    name = NAMES[0]
    _dead_session(ca_store, name, None)  # its bound is still ahead: the session may be live
    tomorrow = format_utc(dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=1))
    result = phone_config.converge(ca_store, name, settings={"operation_completes_by": tomorrow}, reissue=True)
    assert result["changed"] and result["after"]["operation_status"] == "in_progress"
    row = _row(ca_store, name)
    assert (row["operation_status"], row["operation_deadline"]) == ("in_progress", tomorrow)
    assert [item["status"] for item in _listed(ca_store, name)] == ["pending"]
