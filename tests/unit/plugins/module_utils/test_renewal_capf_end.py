"""Automatic renewal never loops on the CAPF certificate's end, on both store backends.

An LSC never outlives the CAPF certificate that signs it, so an LSC that ends with the CAPF
certificate cannot be replaced by one that ends later while that certificate is active. Invariants
over a clock walk of ``renew run`` across the CAPF certificate's end, the phones enrolling (their LSC
issued and installed at the walk's moment) as soon as a renewal is scheduled:

* no run schedules a phone whose new LSC ends no later than the LSC it replaces;
* a run reports truthfully which phones it held back (in the renewal window, otherwise due, but their
  LSC ends no earlier than a new one would);
* once a CAPF certificate that outlives them is active, the first run renews the held-back phones.

And the certificate monitor warns about the active CAPF certificate when renewals start to be held
back (its threshold ``renew_before_days``), however late its ``monitor_warn_days`` start."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.capf_validity import PHONE_KEY, upload_capf
from support.store_phones import create_phone
from support.tools import run_cli
from _opencapf import monitor, renewal
from _opencapf.ca import certificates as c
from _opencapf.ca import lsc
from _opencapf.store import certificates as certificate_records
from _opencapf.store import open_store
from _opencapf.store import phones as phone_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import format_utc, parse_utc, utc_now

DAY = dt.timedelta(days=1)
T0 = parse_utc("2031-03-01T12:00:00Z", "now")
NAMES = ("SEP00000000D001", "SEP00000000D002", "SEP00000000D003", "SEP00000000D004")
_stores = itertools.count(1)


def _enrol(store, name: str, moment: dt.datetime):
    """The phone's session at ``moment``: an LSC issued and installed, its operation succeeded."""
    issued = lsc.issue(store, name, PHONE_KEY.public_key(), source="capf", now=moment)
    with store.transaction() as tx:
        phone = phone_records.get(tx, name)
        certificate_records.install(tx, "test", phone, issued.id)
        phone_records.set_operation_result(tx, "test", phone, "succeeded")
    return issued


def _current_end(store, name: str) -> str:
    return _current_ends(store)[name]


def _current_ends(store) -> dict[str, str]:
    """Each phone's installed LSC's notAfter."""
    with store.read() as tx:
        rows = tx.query("SELECT p.name, l.not_after FROM certificates l JOIN phones p ON p.id = l.phone_id "
                        "WHERE l.status = 'installed'")
    return {row["name"]: row["not_after"] for row in rows}


def _held_back_truth(store, moment, renew_days, validity_days, capf_end) -> list[str]:
    """The phones in the window whose LSC ends no earlier than a new one issued at ``moment`` would
    (every one in the window once the CAPF certificate has expired: it issues nothing then)."""
    fresh = format_utc(min(moment + validity_days * DAY, capf_end)) if capf_end > moment else ""
    window = format_utc(moment + renew_days * DAY)
    ends = _current_ends(store)
    return sorted((name for name in NAMES if fresh <= ends[name] < window), key=lambda name: (ends[name], name))


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(validity_days=st.sampled_from([30, 365, 1825]), renew_days=st.integers(1, 120),
       capf_left=st.integers(1, 60), ages=st.lists(st.integers(0, 900), min_size=len(NAMES), max_size=len(NAMES)),
       step_hours=st.integers(23, 97), rotate_after=st.integers(0, 90))
@example(validity_days=1825, renew_days=30, capf_left=20, ages=[365, 400, 10, 0], step_hours=24, rotate_after=40)
def test_a_walk_of_renewal_runs_across_the_capf_certificates_end(
        more_store_locations, state_dir, validity_days, renew_days, capf_left, ages, step_hours, rotate_after):
    store = open_store(more_store_locations(f"walk-{next(_stores)}"), state_dir=state_dir, actor="test")
    try:
        _walk(store, validity_days, renew_days, capf_left, ages, dt.timedelta(hours=step_hours),
              T0 + rotate_after * DAY)
    finally:
        store.close()


def _walk(store, validity_days, renew_days, capf_left, ages, step, rotate_at):
    capf_end = first_end = c.not_after(upload_capf(store, T0 - 1000 * DAY, 1000 + capf_left))
    with store.transaction() as tx:
        service_records.write(tx, "test", {"validity_days": validity_days, "renew_before_days": renew_days,
                                           "renew_max_per_day": 100})
    for name, age in zip(NAMES, ages):
        with store.transaction() as tx:
            create_phone(tx, name, operation="install_upgrade")
        _enrol(store, name, T0 - age * DAY)
    rotated = False
    moment = T0
    while moment <= max(capf_end, rotate_at) + 2 * step:
        if not rotated and moment >= rotate_at:
            capf_end = c.not_after(upload_capf(store, moment, 1825))  # a CAPF certificate renewed at last
            rotated = True
        held = _held_back_truth(store, moment, renew_days, validity_days, capf_end)
        result = renewal.run(store, moment)
        for item in result["scheduled"]:
            name = item["name"]
            before = _current_end(store, name)
            assert item["lsc_not_after"] == before
            issued = _enrol(store, name, moment)
            # The invariant: a renewal never gives a phone an LSC that ends no later than the one it had.
            assert issued.not_after > before, (name, moment, before, issued.not_after)
            assert name not in held
        assert result["held_back"]["count"] == len(held) and result["held_back"]["names"] == held, moment
        assert result["held_back"]["capf_not_after"] == format_utc(capf_end)
        moment += step
    # Once the CAPF certificate was renewed, every phone whose LSC ended with the first one and that
    # is in the renewal window got an LSC that ends later.
    last = moment - step
    window = format_utc(last + renew_days * DAY)
    ends = _current_ends(store)
    assert all(ends[name] > format_utc(first_end) or ends[name] >= window for name in NAMES), (ends, first_end)


def test_held_back_phones_are_renewed_once_the_capf_certificate_is_renewed(store_on_both, store_options):
    """The case in the brief, by the ``renew run`` command: the defaults, the CAPF certificate 20 days
    from its end and LSCs that end with it; held back every run (not renewed into LSCs that end at the
    same moment) until the CAPF certificate is renewed, then renewed into LSCs that end later. The
    store's story starts three days ago, so that each run's ``--now`` is a time the host's clock has
    reached (``renew run`` refuses a later one)."""
    store = store_on_both
    start = utc_now() - 3 * DAY
    capf_end = c.not_after(upload_capf(store, start - 1805 * DAY, 1825))
    with store.transaction() as tx:
        service_records.write(tx, "test", {"renew_before_days": 30})
    for name in NAMES[:2]:
        with store.transaction() as tx:
            create_phone(tx, name, operation="install_upgrade")
        assert _enrol(store, name, start - 365 * DAY).not_after == format_utc(capf_end)
    for day in range(3):
        done = run_cli(*store_options, "renew", "run", "--now", format_utc(start + day * DAY), check=True)
        assert "2 phone(s) held back, waiting for a CAPF certificate that outlives their LSC" in done.stdout
        assert "no renewal scheduled" in done.stdout
    upload_capf(store, start + 3 * DAY, 1825)
    result = renewal.run(store, start + 3 * DAY)
    assert [item["name"] for item in result["scheduled"]] == list(NAMES[:2])
    assert result["held_back"]["count"] == 0
    for name in NAMES[:2]:
        assert _enrol(store, name, start + 3 * DAY).not_after > format_utc(capf_end)


def test_a_third_party_issuer_is_not_held_back_for_the_capf_certificate(store_on_both):
    """The CAPF certificate does not sign a third-party CA's LSCs: its end holds nothing back then."""
    store = store_on_both
    upload_capf(store, T0 - 1805 * DAY, 1825)
    with store.transaction() as tx:
        service_records.write(tx, "test", {"renew_before_days": 30})
        create_phone(tx, NAMES[0], operation="install_upgrade")
    _enrol(store, NAMES[0], T0 - 365 * DAY)
    assert renewal.run(store, T0)["held_back"]["count"] == 1
    with store.transaction() as tx:
        service_records.write(tx, "test", {"issuer": "online_ca"})
    result = renewal.run(store, T0)
    assert [item["name"] for item in result["scheduled"]] == [NAMES[0]] and result["held_back"]["count"] == 0


def test_the_monitor_warns_of_the_capf_certificate_when_renewals_are_held_back(store_on_both):
    """``monitor_warn_days`` [30, 7, 1], ``renew_before_days`` 60: the CAPF certificate 45 days from its end
    holds back renewals, and the monitor warns of it (threshold 60), once automatic renewal is on."""
    store = store_on_both
    capf = upload_capf(store, T0 - 1780 * DAY, 1825)
    with store.read() as tx:
        assert [item.kind for item in monitor.findings(tx, T0)] == []
    with store.transaction() as tx:
        service_records.write(tx, "test", {"renew_before_days": 60})
    with store.read() as tx:
        (finding,) = monitor.findings(tx, T0)
    assert (finding.kind, finding.fingerprint, finding.threshold) == ("capf_certificate", c.fingerprint(capf), 60)
    with store.read() as tx:
        (finding,) = monitor.findings(tx, T0 + 20 * DAY)
    assert finding.thresholds == (60, 30)
