"""Automatic renewal and the store's figures for the metrics endpoint, on both store backends."""

from __future__ import annotations

import bisect
import datetime
import itertools
import json

import prometheus_client as client
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.capf_validity import PHONE_KEY, upload_capf
from support.store_phones import create_phone
from support.stores import vm_steps
from _opencapf import renewal
from _opencapf.ca import lsc
from _opencapf.server import metrics
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import certificates as certificate_records
from _opencapf.store import phones as phone_records
from _opencapf.store import renewals as renewal_records
from _opencapf.store import open_store
from _opencapf.store import service as service_records
from _opencapf.vocabulary import format_utc, parse_utc

T0 = parse_utc("2031-03-01T12:00:00Z", "now")
DAY = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)
_examples = itertools.count(1)


@pytest.fixture
def store(store_on_both):
    return store_on_both


def _phone(store, name, *, expires, status="installed", issued=None, **settings):
    """A phone whose operation succeeded, with an LSC of ``status`` that expires at ``expires`` (issued at
    ``issued``, default: now)."""
    settings.setdefault("operation", "install_upgrade")
    settings.setdefault("operation_status", "succeeded")
    secret = store.secret() if "auth_string" in settings else b""
    with store.transaction() as tx:
        phone = create_phone(tx, name, secret=secret, **settings)
        _lsc(tx, phone, expires, status, issued)
    return phone


def _lsc(tx, phone, expires, status="installed", issued=None):
    serial = f"{phone['id']:x}{int(expires.timestamp()):x}"
    return certificate_records.insert(tx, phone_id=phone["id"], kind="lsc", serial=serial, issuer="CN=CAPF-test",
                                      fingerprint="f" + serial, public_key_fingerprint="k" + serial, status=status,
                                      source="capf", pem="-", not_before=format_utc(expires - 365 * DAY),
                                      not_after=format_utc(expires), issued_at=issued and format_utc(issued))


def _enable(store, days=30, per_day=4):
    with store.transaction() as tx:
        service_records.write(tx, "test", {"renew_before_days": days, "renew_max_per_day": per_day})


def _names(result):
    return [item["name"] for item in result["scheduled"]]


def test_off_by_default_and_changes_nothing(store):
    _phone(store, "SEP000000000001", expires=T0 + DAY)
    result = renewal.run(store, T0)
    assert result == {"enabled": False, "changed": False, "at": format_utc(T0), "scheduled": []}
    with store.read() as tx:
        assert phone_records.get(tx, "SEP000000000001")["operation_status"] == "succeeded"


def test_only_phones_whose_installed_lsc_expires_in_the_window_and_that_are_idle(store):
    _phone(store, "SEP000000000001", expires=T0 + 5 * DAY)
    _phone(store, "SEP000000000002", expires=T0 + 2 * DAY)
    _phone(store, "SEP000000000003", expires=T0 + 40 * DAY)  # outside the window
    _phone(store, "SEP000000000004", expires=T0 + DAY, operation_status="pending")
    _phone(store, "SEP000000000005", expires=T0 + DAY, operation_status="in_progress")
    _phone(store, "SEP000000000006", expires=T0 + DAY, auth_mode="auth_string", auth_string="12345678")
    _phone(store, "SEP000000000007", expires=T0 + DAY, status="revoked")
    _phone(store, "SEP000000000008", expires=T0 + DAY, operation="none", operation_status="none")
    _phone(store, "SEP000000000009", expires=T0 - DAY, operation_status="lapsed")  # expired already: renew too
    _enable(store, per_day=10)
    result = renewal.run(store, T0)
    assert _names(result) == ["SEP000000000009", "SEP000000000008", "SEP000000000002", "SEP000000000001"]
    assert result["changed"] is True and result["more_due"] is False and result["left_today"] == 6
    with store.read() as tx:
        rows = phone_records.by_name(tx)
        events = tx.query("SELECT subject, details FROM audit_events WHERE action = 'phone.update' ORDER BY subject")
        summary = tx.query("SELECT details FROM audit_events WHERE action = 'renewal.schedule'")
    assert {name for name, row in rows.items() if row["operation_status"] == "pending"} == \
        {"SEP000000000001", "SEP000000000002", "SEP000000000004", "SEP000000000008", "SEP000000000009"}
    assert rows["SEP000000000008"]["operation"] == "install_upgrade"
    assert [json.loads(event["details"]) for event in events] == [
        {"operation_status": "pending", "via": "renewal"},
        {"operation_status": "pending", "via": "renewal"},
        {"certificate_operation": "install_upgrade", "operation_status": "pending", "via": "renewal"},
        {"operation_status": "pending", "via": "renewal"},
    ]
    assert json.loads(summary[0]["details"])["scheduled"] == 4
    again = renewal.run(store, T0)
    assert again["changed"] is False and again["scheduled"] == []


def test_at_most_so_many_in_any_rolling_day_until_every_lsc_is_renewed_once(store):
    """The invariant over a walk of runs every 5 hours for ten days, phones enrolling in between: no
    24 hours hold more than ``renew_max_per_day`` renewals, the soonest expiry goes first, every LSC
    in the window is renewed exactly once, and once all are renewed a run changes nothing."""
    per_day, fleet = 3, 14
    for index in range(fleet):
        _phone(store, f"SEP{index + 1:012X}", expires=T0 + (index % 7 + 2) * DAY)
    _enable(store, days=30, per_day=per_day)
    moments, scheduled = [], []
    moment = T0
    while moment < T0 + 10 * DAY:
        result = renewal.run(store, moment)
        with store.read() as tx:
            due_before = [row["lsc_not_after"] for row in renewal_records.due(tx, result["expires_before"], fleet)]
        names = _names(result)
        moments.append(moment)
        scheduled.append(names)
        assert all(item["lsc_not_after"] <= later for item in result["scheduled"] for later in due_before)
        _enrol(store, names, moment)
        moment += datetime.timedelta(hours=5)
    for at in moments:
        in_day = sum(len(scheduled[j]) for j, other in enumerate(moments) if at - DAY < other <= at)
        assert in_day <= per_day, (at, in_day)
    renewed = [name for names in scheduled for name in names]
    assert sorted(renewed) == sorted(f"SEP{index + 1:012X}" for index in range(fleet))
    assert renewal.run(store, moments[-1] + DAY)["scheduled"] == []
    with store.read() as tx:
        assert renewal_records.count_since(tx, format_utc(T0)) == fleet


def _enrol(store, names, moment):
    """The phones' sessions: each gets a new LSC valid for a year and its operation succeeds."""
    with store.transaction() as tx:
        for name in names:
            phone = phone_records.get(tx, name)
            certificate_records.install(tx, "test", phone, _lsc(tx, phone, moment + 365 * DAY, "issued"))
            phone_records.set_operation_result(tx, "test", phone, "succeeded")


def test_a_deleted_phone_takes_its_renewals_along(store):
    _phone(store, "SEP000000000001", expires=T0 + DAY)
    _enable(store)
    assert _names(renewal.run(store, T0)) == ["SEP000000000001"]
    with store.transaction() as tx:
        phone_records.delete(tx, "test", "SEP000000000001")
    with store.read() as tx:
        assert renewal_records.count_since(tx, format_utc(T0 - DAY)) == 0


def _recorded(store) -> list:
    """When each renewal recorded was scheduled, earliest first."""
    with store.read() as tx:
        return sorted(parse_utc(row["scheduled_at"], "scheduled_at")
                      for row in tx.query("SELECT scheduled_at FROM renewals"))


def _most_in_a_day_holding(times: list, moment) -> int:
    """The most of ``times`` (sorted) within any 24 hours (both ends included) that hold ``moment``."""
    starts = [time for time in times if moment - DAY <= time <= moment] + [moment]
    return max(bisect.bisect_right(times, start + DAY) - bisect.bisect_left(times, start) for start in starts)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(issued=st.lists(st.integers(0, 6 * 24), min_size=1, max_size=8),
       runs=st.lists(st.integers(0, 6 * 24), min_size=1, max_size=8), per_day=st.integers(1, 3))
# A run as at an hour before the LSC was issued: the LSC is no candidate yet.
@example(issued=[10], runs=[9, 10], per_day=1)
# Renewals recorded three days after a run's time never fill that run's day.
@example(issued=[0, 0], runs=[80, 5], per_day=1)
# Renewals recorded 10 hours after a run's time share 24 hours with it: they fill its day.
@example(issued=[0, 0], runs=[15, 5], per_day=1)
def test_a_run_as_at_an_earlier_time_decides_as_at_it(store, issued, runs, per_day):
    """Runs as at any times, later ones before earlier ones (``renew run --now``, hosts whose clocks
    differ). A run as at ``T`` decides as the store stood at ``T``: only LSCs issued at or before ``T``
    are candidates, and its renewals, recorded at ``T``, leave every 24 hours at most
    ``renew_max_per_day`` renewals, so it schedules as many candidates as the fullest 24 hours holding
    ``T`` leave room for; renewals recorded more than 24 hours after ``T`` do not count."""
    example_number = next(_examples)
    base = T0 + example_number * 30 * DAY
    _enable(store, days=30, per_day=per_day)
    phones = {}
    for index, hours in enumerate(issued):
        name = f"SEP{example_number:06X}{index:06X}"
        phones[name] = base + hours * HOUR
        _phone(store, name, expires=base + 10 * DAY, issued=phones[name])
    renewed: set = set()
    try:
        for hours in runs:
            moment = base + hours * HOUR
            times = _recorded(store)
            candidates = sorted(name for name, at in phones.items() if at <= moment and name not in renewed)
            room = max(0, per_day - _most_in_a_day_holding(times, moment))
            scheduled = _names(renewal.run(store, moment))
            assert all(phones[name] <= moment for name in scheduled), (
                f"a run as at {format_utc(moment)} renewed an LSC issued after it: {scheduled}")
            assert len(scheduled) == min(len(candidates), room), (format_utc(moment), candidates, room, scheduled)
            renewed.update(scheduled)
            times = _recorded(store)
            assert all(_most_in_a_day_holding(times, time) <= per_day for time in times), "a day over the bound"
    finally:
        with store.transaction() as tx:
            for name in phones:
                phone_records.delete(tx, "test", name)


def test_store_figures_of_the_metrics_endpoint(store):
    _phone(store, "SEP000000000001", expires=T0 + 10 * DAY)
    _phone(store, "SEP000000000002", expires=T0 + 29 * DAY)
    _phone(store, "SEP000000000003", expires=T0 + 31 * DAY)
    _phone(store, "SEP000000000004", expires=T0 - DAY)  # expired: not "expiring"
    _phone(store, "SEP000000000005", expires=T0 + DAY, status="revoked")
    _phone(store, "SEP000000000006", expires=T0 + DAY, status="stale", locked=1)
    with store.read() as tx:
        assert certificate_records.lsc_counts(tx, format_utc(T0)) == {"installed": 3, "expired": 1, "revoked": 1,
                                                                      "stale": 1}
        assert certificate_records.installed_lscs_expiring_count(tx, format_utc(T0), format_utc(T0 + 30 * DAY)) == 2
        assert phone_records.locked_count(tx) == 1
    collector = metrics.StoreCollector(store.location, store.state_dir, client, clock=lambda: T0)
    samples = {(sample.name, tuple(sample.labels.values())): sample.value
               for family in collector.collect() for sample in family.samples}
    assert samples == {("opencapf_store_up", ()): 1, ("opencapf_lscs", ("installed",)): 3,
                       ("opencapf_lscs", ("expired",)): 1, ("opencapf_lscs", ("revoked",)): 1, ("opencapf_lscs", ("stale",)): 1,
                       ("opencapf_lscs_expiring_30d", ()): 2, ("opencapf_phones_locked", ()): 1}


def _enrolled(store, name: str, moment, validity_days: int):
    """Phone ``name`` whose session at ``moment`` installed an LSC valid ``validity_days`` (real, signed)."""
    with store.transaction() as tx:
        create_phone(tx, name, operation="install_upgrade", auth_mode="null_string")
    issued = lsc.issue(store, name, PHONE_KEY.public_key(), source="capf", validity_days=validity_days, now=moment)
    with store.transaction() as tx:
        phone = phone_records.get(tx, name)
        certificate_records.install(tx, "test", phone, issued.id)
        phone_records.set_operation_result(tx, "test", phone, "succeeded")
    return issued


def _tick(store, moment) -> None:
    part = Scheduling(store, clock=lambda: moment)
    try:
        part.tick()
    finally:
        part.close()


@pytest.mark.parametrize("case", ["waits for room", "service down"])
def test_the_service_renews_an_lsc_that_expired_before_its_turn(store, case):
    """``revoke_after_expiry`` (the default) revokes an LSC at the service's first tick past its notAfter,
    before the renewals are scheduled. An LSC that expired installed is due all the same (the renewal
    rule: one that expired already counts too), so the service renews it once its turn comes: when it
    waited for room in the day (``renew_max_per_day``) and expired meanwhile, or when the service was
    down through the window."""
    upload_capf(store, T0 - 30 * DAY, 1825)
    with store.transaction() as tx:
        service_records.write(tx, "test", {"renew_before_days": 7, "renew_max_per_day": 1})
    first = _enrolled(store, "SEP00000000F001", T0 - 10 * DAY + 2 * HOUR, 10)  # ends at T0 + 2 h
    second = _enrolled(store, "SEP00000000F002", T0 - 10 * DAY + 3 * HOUR, 10)  # ends at T0 + 3 h
    if case == "waits for room":
        _tick(store, T0)  # the first is scheduled; the second waits for the next 24 hours
        with store.read() as tx:
            assert phone_records.get(tx, "SEP00000000F002")["operation_status"] == "succeeded"
        again = lsc.issue(store, "SEP00000000F001", PHONE_KEY.public_key(), source="capf", now=T0)
        with store.transaction() as tx:
            phone = phone_records.get(tx, "SEP00000000F001")
            certificate_records.install(tx, "test", phone, again.id)
            phone_records.set_operation_result(tx, "test", phone, "succeeded")
    _tick(store, T0 + DAY + HOUR)  # both expired by now; the day has room for one again
    with store.read() as tx:
        rows = phone_records.by_name(tx)
        statuses = {row["serial"]: row["status"] for row in tx.query("SELECT serial, status FROM certificates")}
        renewed = {row["certificate_id"] for row in tx.query("SELECT certificate_id FROM renewals")}
    due = "SEP00000000F002" if case == "waits for room" else "SEP00000000F001"
    expired = second if case == "waits for room" else first
    assert statuses[expired.serial] == "revoked"  # revoked for its expiry, by the same tick
    assert rows[due]["operation_status"] == "pending", "renewed all the same"
    assert expired.id in renewed


def test_a_round_reads_none_of_the_lscs_their_renewals_replaced(store_path):
    """LSCs revoked as superseded by their renewals outnumber the fleet over the years; the scheduler's
    renewal round (SQLite's virtual machine steps, counted by its progress handler) reads the LSCs it
    may renew, installed or revoked for their expiry, and none of those."""
    store = open_store(store_path, actor="test")
    try:
        with store.transaction() as tx:
            for index in range(4):
                phone = create_phone(tx, f"SEP0000000{index:05X}", operation="install_upgrade",
                                     operation_status="succeeded")
                for number in range(1200):  # each replaced by the next one's renewal
                    old = _lsc(tx, phone, T0 - DAY * (number + 2) + index * HOUR)
                    certificate_records.revoke(tx, "test", old, phone["name"], "superseded",
                                               at=format_utc(T0 - DAY * (number + 1)))
            _lsc(tx, phone, T0 + DAY)
        _enable(store)
        with store.read() as tx, vm_steps(store) as counted:
            due = renewal_records.due(tx, format_utc(T0 + 30 * DAY), 10, format_utc(T0 + 365 * DAY))
            held = renewal_records.held_back(tx, format_utc(T0 + 30 * DAY), format_utc(T0 + 365 * DAY), 10)
    finally:
        store.close()
    assert [row["name"] for row in due] == ["SEP000000000003"] and held == (0, [])
    # A few hundred steps for the candidates; reading the 4,800 replaced LSCs takes far more than 20,000.
    assert counted[0] < 20000, counted[0]
