"""An LSC's status is true at the moment it is read: an issued or installed LSC whose notAfter is
before that moment is ``expired`` (valid through its notAfter second, RFC 5280 4.1.2.5); revoked,
stale (and a stored ``expired``) stay as stored. Every view says so (the listing of capf_info and
``phones list``, its order by expiry, the CSV and HTML reports, one phone's detail of ``phones show``)
and every ``lsc_status`` query matches by it (capf_info's query, a bulk job's selection), at the
moment the caller reads: random phones whose LSCs have random stored statuses and notAfters on, just
before and just after that moment, or days from it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support.store_phones import create_phone
from _opencapf import bulk, phone_query, report_html, reports, scheduler
from _opencapf.store import certificates
from _opencapf.vocabulary import format_utc

pytestmark = pytest.mark.both_backends

NOW = dt.datetime(2027, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
DAY = 86400
STORED = ("issued", "installed", "revoked", "stale", "expired")
# Seconds from NOW to an LSC's notAfter: on the second, one either side, or anywhere within days.
OFFSETS = st.one_of(st.sampled_from((-1, 0, 1, -DAY, DAY)), st.integers(-3 * DAY, 3 * DAY))
# Each phone's LSCs, oldest first: the newest not stale is its current one.
fleets = st.lists(st.lists(st.tuples(st.sampled_from(STORED), OFFSETS), max_size=3), min_size=1, max_size=8)

_numbers = itertools.count(1)


def _reported(stored: str, not_after: dt.datetime, now: dt.datetime) -> str:
    """The truth: what an LSC is at ``now``."""
    return "expired" if stored in ("issued", "installed") and not_after < now else stored


def _fill(store, fleet) -> dict[str, tuple[str, str] | None]:
    """Replace the store's phones with ``fleet``; each phone's current LSC as (reported status at NOW,
    notAfter), or None."""
    truth = {}
    with store.transaction() as tx:
        tx.execute("DELETE FROM certificates")
        tx.execute("DELETE FROM phones")
        for index, lscs in enumerate(fleet):
            name = f"SEP0000000{index:05X}"
            phone = create_phone(tx, name)
            current = None
            for stored, offset in lscs:
                number = next(_numbers)
                not_after = NOW + dt.timedelta(seconds=offset)
                certificates.insert(tx, phone_id=phone["id"], kind="lsc", serial=f"{number:x}", issuer="CN=CAPF-test",
                                    fingerprint=f"{number:064x}", public_key_fingerprint=f"{number:064x}",
                                    status=stored, source="capf", pem="-", not_before="2026-01-01T00:00:00Z",
                                    not_after=format_utc(not_after))
                if stored != "stale":
                    current = (_reported(stored, not_after, NOW), format_utc(not_after))
            truth[name] = current
    return truth


def _status(lsc) -> str:
    return "none" if lsc is None else lsc["status"]


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fleet=fleets, wanted=st.sets(st.sampled_from(phone_query.LSC_STATUSES), min_size=1))
def test_every_view_and_query_tells_an_lsc_expired_once_its_notafter_has_passed(store, fleet, wanted):
    truth = _fill(store, fleet)
    expected = {name: "none" if current is None else current[0] for name, current in truth.items()}

    with store.read() as tx:
        rows = reports.phone_rows(tx, None, now=NOW)
        assert {row["device_name"]: _status(row["lsc"]) for row in rows} == expected
        # By expiry: phones without an LSC first, then soonest first, whatever the status.
        by_expiry = reports.phone_rows(tx, None, order="lsc_expiry", now=NOW)
        assert [row["device_name"] for row in by_expiry] == sorted(
            truth, key=lambda name: (truth[name][1] if truth[name] else "", name))
        # lsc_expires_before is about the notAfter alone: expired or not, revoked or not.
        before = phone_query.check_query({"lsc_expires_before": format_utc(NOW)})
        assert {row["name"] for row in phone_query.select(tx, before, now=NOW)} == {
            name for name, current in truth.items() if current and current[1] < format_utc(NOW)}
        for status in phone_query.LSC_STATUSES:
            query = phone_query.check_query({"lsc_status": status})
            assert {row["name"] for row in phone_query.select(tx, query, now=NOW)} == {
                name for name, reported in expected.items() if reported == status}, status
        query = phone_query.check_query({"lsc_status": sorted(wanted)})
        # A bulk job selects the phones alone (no LSC columns), by the same statuses.
        assert {row["name"] for row in phone_query.select(tx, query, with_lsc=False, now=NOW)} == {
            name for name, reported in expected.items() if reported in wanted}

    lines = csv.DictReader(io.StringIO(reports.report_csv(rows).decode("utf-8")))
    assert {line["device_name"]: line["lsc_status"] for line in lines} == expected
    page = report_html.context(rows, stale_lscs=[], pending_csrs=[], generated_at=format_utc(NOW))
    counts = {status: list(expected.values()).count(status) for status in set(expected.values())}
    assert {column["label"]: column["value"] for column in page["lsc_statuses"]["bars"]} == counts
    assert page["summary"]["lsc_installed"] == counts.get("installed", 0)
    for name, reported in expected.items():
        assert _status(reports.phone_detail(store, name, now=NOW)["lsc"]) == reported, name

    matched = {name for name, reported in expected.items() if reported in wanted}
    listed = reports.gather(store, ["phones"], query={"lsc_status": sorted(wanted)}, now=NOW)["phones"]
    assert {row["device_name"] for row in listed} == matched
    assert {row["device_name"]: _status(row["lsc"]) for row in listed} == {name: expected[name] for name in matched}
    if matched:
        job = bulk.converge(store, query={"lsc_status": sorted(wanted)}, settings={"description": "checked"},
                            check_mode=True, now=NOW)
        assert job["counts"]["matched"] == len(matched)


def test_a_scheduled_bulk_job_selects_by_the_status_at_the_moment_it_runs(store):
    truth = _fill(store, [[("installed", 0)], [("installed", 2 * DAY)]])
    assert truth == {"SEP000000000000": ("installed", format_utc(NOW)),
                     "SEP000000000001": ("installed", format_utc(NOW + dt.timedelta(days=2)))}
    for run_at, matched in ((NOW, 0), (NOW + dt.timedelta(seconds=1), 1), (NOW + dt.timedelta(days=3), 2)):
        bulk.converge(store, query={"lsc_status": "expired"}, settings={"description": "renew"}, run_at=run_at,
                      now=NOW - dt.timedelta(days=1))
        (job,) = scheduler.run_due(store, run_at)["jobs"]
        assert (job["status"], job["result"]["counts"]["matched"]) == ("succeeded", matched), format_utc(run_at)
