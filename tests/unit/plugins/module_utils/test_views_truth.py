"""Every view of phones and their LSCs tells the truth: random store histories made through the engine's
own functions (issuance, installation, a phone not storing its LSC, revocations, expiry, troubleshoot
copies, phones without LSCs, removed phones), and a truth kept by the test beside them. The phone
listing (capf_info phones, ``phones list``), the CSV and HTML reports, the query filters, the
certificate monitor's findings and the metrics endpoint's store figures all agree with that truth at
moments on and around each boundary: an LSC expiring exactly at a horizon or a threshold, expired a
second ago, or not expired for one more second."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support.store_phones import create_phone
from _opencapf import monitor, phone_query, report_html, reports, revocation
from _opencapf.ca import lsc
from _opencapf.dependencies import prometheus
from _opencapf.server import metrics
from _opencapf.store import certificates
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import format_utc, parse_utc

pytestmark = pytest.mark.both_backends

NAMES = ("SEP00000000A001", "SEP00000000A002", "SEP00000000A003")
VALIDITY_DAYS = (1, 7, 30, 31, 365)
WARN_DAYS = [30, 7, 1]
SECOND = dt.timedelta(seconds=1)
DAY = dt.timedelta(days=1)
# Moments before an LSC's notAfter at which the views are read: on, just inside and just outside each
# threshold, on the notAfter second itself, and after it.
BEFORE_EXPIRY = (30 * DAY + SECOND, 30 * DAY, 30 * DAY - SECOND, 7 * DAY, 7 * DAY - SECOND, DAY, SECOND,
                 dt.timedelta(0), -SECOND, -2 * DAY)

_serial_numbers = itertools.count(1)

# Verbs listed once per weight: most histories issue and install several LSCs per phone.
VERBS = ("issue", "issue", "issue", "install", "install", "install", "not_stored", "revoke", "revoke_serial",
         "expire", "troubleshoot", "add", "delete")
actions = st.lists(st.tuples(st.sampled_from(VERBS), st.integers(0, len(NAMES) - 1), st.integers(0, 5)),
                   min_size=10, max_size=30)


class Truth:
    """What the store should hold, kept by the test: each phone's LSCs in the order they were issued."""

    def __init__(self):
        self.phones: dict[str, list[dict]] = {}

    def next_recency(self, name):
        return max((item["recency"] for item in self.phones[name]), default=0) + 1

    def current(self, name):
        """Of the phone's LSCs never found stale (never installed, overtaken or not stored), the one
        last issued or last installed."""
        held = [item for item in self.phones[name] if not item["was_stale"]]
        return max(held, key=lambda item: item["recency"]) if held else None


def _apply(store, truth, action, key):
    verb, index, pick = action
    name = NAMES[index]
    lscs = truth.phones.get(name)
    if verb == "add":
        with store.transaction() as tx:
            if phone_records.get(tx, name) is None:
                create_phone(tx, name)
        truth.phones.setdefault(name, [])
    elif verb == "issue":
        issued = lsc.issue(store, name, key, validity_days=VALIDITY_DAYS[pick % len(VALIDITY_DAYS)])
        truth.phones.setdefault(name, [])
        truth.phones[name].append({"id": issued.id, "serial": issued.serial, "not_after": issued.not_after,
                                   "status": "issued", "recency": truth.next_recency(name), "was_stale": False})
    elif lscs is None:
        return
    elif verb in ("install", "not_stored"):
        # The phone acknowledges (or refuses) an LSC it was sent: one still issued, or revoked meanwhile.
        sent = [item for item in lscs if item["status"] == "issued"
                or (verb == "install" and item["status"] == "revoked" and not item.get("installed"))]
        if not sent:
            return
        target = sent[pick % len(sent)]
        with store.transaction() as tx:
            phone = phone_records.get(tx, name)
            if verb == "not_stored":
                certificates.set_stale_if_waiting(tx, "test", phone, target["id"])
            else:
                certificates.install(tx, "test", phone, target["id"])
        if verb == "not_stored":
            target.update(status="stale", was_stale=True)
            return
        for item in lscs:
            if item is not target and item["status"] == "installed":
                item["status"] = "revoked"
            elif item is not target and item["status"] == "issued" and item["id"] < target["id"]:
                item.update(status="stale", was_stale=True)
        target.update(status="installed" if target["status"] == "issued" else "revoked", installed=True, was_stale=False,
                      recency=truth.next_recency(name))
    elif verb == "revoke":
        revocation.revoke_lsc(store, name, "key_compromise")
        for item in lscs:
            if item["status"] in ("installed", "issued"):
                item["status"] = "revoked"
    elif verb == "revoke_serial":
        # Any LSC not revoked yet, a stale one too (it stays out of the phone's LSCs once revoked).
        candidates = [item for item in lscs if item["status"] != "revoked"]
        if not candidates:
            return
        target = candidates[pick % len(candidates)]
        revocation.revoke_lsc(store, name, "superseded", serial=target["serial"])
        target["status"] = "revoked"
    elif verb == "expire":
        if not lscs:
            return
        expiry = parse_utc(lscs[pick % len(lscs)]["not_after"], "not_after")
        at = expiry + (SECOND if pick % 2 else dt.timedelta(0))
        revocation.revoke_expired(store, at)
        for items in truth.phones.values():
            for item in items:
                if item["status"] in ("installed", "issued") and parse_utc(item["not_after"], "x") < at:
                    item.update(status="revoked", revoked_for_expiry=True)
    elif verb == "troubleshoot":
        number = next(_serial_numbers)
        with store.transaction() as tx:
            certificates.record_retrieved(
                tx, "test", phone_records.get(tx, name), kind="lsc", serial=f"7{number:x}", issuer="CN=Elsewhere",
                fingerprint=f"{number:064x}", public_key_fingerprint=f"{number:064x}", pem="-",
                not_before="2026-01-01T00:00:00Z", not_after=format_utc(dt.datetime.now(dt.timezone.utc) + 2 * DAY))
    elif verb == "delete":
        with store.transaction() as tx:
            phone_records.delete(tx, "test", name)
        del truth.phones[name]


def _clear(store):
    with store.transaction() as tx:
        for name in phone_records.by_name(tx):
            phone_records.delete(tx, "test", name)


def _metrics(store, moment):
    collector = metrics.StoreCollector(store.location, store.state_dir, prometheus(), clock=lambda: moment)
    return {(sample.name, tuple(sample.labels.values())): sample.value
            for family in collector.collect() for sample in family.samples}


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(history=actions, anchor=st.integers(0, 20), before_expiry=st.sampled_from(BEFORE_EXPIRY),
       horizon=st.sampled_from((-SECOND, dt.timedelta(0), SECOND, -SECOND / 2, SECOND / 2, None)))
def test_every_view_tells_each_phone_s_current_lsc_its_status_and_its_expiry_as_they_are(
        ca_store, rsa_phone_key, history, anchor, before_expiry, horizon):
    store = ca_store
    _clear(store)
    truth = Truth()
    for action in history:
        _apply(store, truth, action, rsa_phone_key.public_key())
    current = {name: truth.current(name) for name in truth.phones}
    records = [item for items in truth.phones.values() for item in items]
    expiries = sorted({item["not_after"] for item in records}) or ["2027-01-01T00:00:00Z"]
    expiry = parse_utc(expiries[anchor % len(expiries)], "anchor")
    moment = expiry - before_expiry

    # The listing (capf_info phones, phones list) and the CSV report.
    expected = {name: None if lsc_row is None else (lsc_row["serial"], lsc_row["status"], lsc_row["not_after"])
                for name, lsc_row in current.items()}
    with store.read() as tx:
        rows = reports.phone_rows(tx, None)
        listed = {row["device_name"]: None if row["lsc"] is None else
                  (row["lsc"]["serial"], row["lsc"]["status"], row["lsc"]["not_after"]) for row in rows}
        assert listed == expected
        lines = list(csv.DictReader(io.StringIO(reports.report_csv(rows).decode("utf-8"))))
        assert {line["device_name"]: None if line["lsc_status"] == "none" else
                (line["lsc_serial"], line["lsc_status"], line["lsc_not_after"]) for line in lines} == expected
        page = report_html.context(rows, stale_lscs=[], pending_csrs=[], generated_at=format_utc(moment))
        statuses = {column["label"]: column["value"] for column in page["lsc_statuses"]["bars"]}
        wanted_statuses = {}
        for lsc_row in current.values():
            status = "none" if lsc_row is None else lsc_row["status"]
            wanted_statuses[status] = wanted_statuses.get(status, 0) + 1
        assert statuses == wanted_statuses
        assert page["summary"]["lsc_installed"] == wanted_statuses.get("installed", 0)
        for status in phone_query.LSC_STATUSES:
            found = {row["name"] for row in phone_query.select(tx, phone_query.check_query({"lsc_status": status}))}
            assert found == {name for name, lsc_row in current.items()
                             if (lsc_row["status"] if lsc_row else "none") == status}, status
        # lsc_expires_before: strictly before the horizon (a date alone is its midnight, UTC; a time may
        # name a fraction of a second).
        bound = expiry + horizon if horizon is not None else expiry.replace(hour=0, minute=0, second=0)
        given_as = (bound.date().isoformat() if horizon is None
                    else bound.isoformat().replace("+00:00", "Z") if bound.microsecond else format_utc(bound))
        query = phone_query.check_query({"lsc_expires_before": given_as})
        found = {row["name"] for row in phone_query.select(tx, query)}
        assert found == {name for name, lsc_row in current.items()
                         if lsc_row and parse_utc(lsc_row["not_after"], "x") < bound}, given_as

        # The certificate monitor: every installed LSC (the one the phone acknowledged last, whether or not
        # a newer one was issued since, and its current LSC once revoked for its expiry) with at most 30, 7 or
        # 1 days left, and threshold 0 once expired
        # (an LSC is valid through its notAfter second, RFC 5280 4.1.2.5).
        warned = {item.subject: (item.threshold, item.days_left)
                  for item in monitor.findings(tx, moment, WARN_DAYS) if item.kind == "lsc"}
    due = {}
    for name, lsc_row in ((name, item) for name, items in truth.phones.items() for item in items):
        # Watched too: the phone's current LSC, installed before or after, once revoked for its expiry.
        expired_and_revoked = (lsc_row.get("revoked_for_expiry") and lsc_row.get("installed")
                               and truth.current(name) is lsc_row)
        if lsc_row["status"] != "installed" and not expired_and_revoked:
            continue
        left = parse_utc(lsc_row["not_after"], "x") - moment
        if left < dt.timedelta(0):
            due[name] = (0, left.days)
        elif left <= dt.timedelta(days=WARN_DAYS[0]):
            due[name] = (min(days for days in WARN_DAYS if left <= dt.timedelta(days=days)), left.days)
    assert warned == due, format_utc(moment)

    # The metrics endpoint: LSC records by their status at the moment (issued or installed past its notAfter:
    # expired), and installed LSCs not expired yet with at most 30 days left.
    samples = _metrics(store, moment)
    by_status = {}
    for item in records:
        status = item["status"]
        if status in ("issued", "installed") and parse_utc(item["not_after"], "x") < moment:
            status = "expired"
        by_status[status] = by_status.get(status, 0) + 1
    assert {labels[0]: value for (metric, labels), value in samples.items() if metric == "opencapf_lscs"} == by_status
    expiring = sum(1 for item in records if item["status"] == "installed"
                   and dt.timedelta(0) <= parse_utc(item["not_after"], "x") - moment <= dt.timedelta(days=30))
    assert samples[("opencapf_lscs_expiring_30d", ())] == expiring, format_utc(moment)


def _installed(store, name, key, validity_days):
    issued = lsc.issue(store, name, key, validity_days=validity_days)
    with store.transaction() as tx:
        certificates.install(tx, "test", phone_records.get(tx, name), issued.id)
    return issued


def test_an_lsc_on_its_notafter_second_is_not_expired_in_any_view(ca_store, rsa_phone_key):
    issued = _installed(ca_store, "SEP00000000B001", rsa_phone_key.public_key(), 30)
    expiry = parse_utc(issued.not_after, "not_after")
    with ca_store.read() as tx:
        on_the_second = [(item.threshold, item.days_left) for item in monitor.findings(tx, expiry, WARN_DAYS)
                         if item.kind == "lsc"]
        after_it = [(item.threshold, item.days_left) for item in monitor.findings(tx, expiry + SECOND, WARN_DAYS)
                    if item.kind == "lsc"]
    # Still valid: the 1-day threshold, not "expired"; expired one second later.
    assert (on_the_second, after_it) == ([(1, 0)], [(0, -1)])
    assert _metrics(ca_store, expiry)[("opencapf_lscs_expiring_30d", ())] == 1
    assert revocation.revoke_expired(ca_store, expiry) == []
    assert [row["serial"] for row in revocation.revoke_expired(ca_store, expiry + SECOND)] == [issued.serial]


def test_an_lsc_with_exactly_30_days_left_is_expiring_for_the_monitor_and_the_metrics_alike(ca_store, rsa_phone_key):
    issued = _installed(ca_store, "SEP00000000B002", rsa_phone_key.public_key(), 31)
    moment = parse_utc(issued.not_after, "not_after") - 30 * DAY
    with ca_store.read() as tx:
        warned = [(item.threshold, item.days_left) for item in monitor.findings(tx, moment, WARN_DAYS)
                  if item.kind == "lsc"]
    assert warned == [(30, 30)]
    assert _metrics(ca_store, moment)[("opencapf_lscs_expiring_30d", ())] == 1
    assert _metrics(ca_store, moment - SECOND)[("opencapf_lscs_expiring_30d", ())] == 0


def test_a_stale_lsc_revoked_by_its_serial_never_becomes_the_phones_lsc(ca_store, rsa_phone_key):
    key = rsa_phone_key.public_key()
    held = _installed(ca_store, "SEP00000000B003", key, 365)
    refused = lsc.issue(ca_store, "SEP00000000B003", key, validity_days=30)
    lsc.issue(ca_store, "SEP00000000B004", key, validity_days=30)
    with ca_store.transaction() as tx:
        for name, certificate_id in (("SEP00000000B003", refused.id), ("SEP00000000B004", None)):
            phone = phone_records.get(tx, name)
            for row in certificates.for_phone(tx, phone["id"], "lsc"):
                if certificate_id in (None, row["id"]):
                    certificates.set_stale_if_waiting(tx, "test", phone, row["id"])
    for name in ("SEP00000000B003", "SEP00000000B004"):
        with ca_store.read() as tx:
            stale = certificates.stale_lscs(tx, [name])
        revocation.revoke_lsc(ca_store, name, "key_compromise", serial=stale[0]["serial"])
    with ca_store.read() as tx:
        listed = {row["device_name"]: row["lsc"] and (row["lsc"]["serial"], row["lsc"]["status"])
                  for row in reports.phone_rows(tx, None)}
    # The phone never stored either revoked LSC: it still holds its installed one, or none at all.
    assert listed == {"SEP00000000B003": (held.serial, "installed"), "SEP00000000B004": None}


def test_an_lsc_revoked_once_expired_is_still_warned_about_once_as_expired(ca_store, rsa_phone_key):
    issued = _installed(ca_store, "SEP00000000B005", rsa_phone_key.public_key(), 30)
    # The scheduler's tick revokes expired LSCs (revoke_after_expiry, the default) before the monitor checks.
    moment = parse_utc(issued.not_after, "not_after") + dt.timedelta(hours=1)
    assert [row["serial"] for row in revocation.revoke_expired(ca_store, moment)] == [issued.serial]
    with ca_store.read() as tx:
        warned = [(item.serial, item.threshold) for item in monitor.findings(tx, moment, WARN_DAYS)
                  if item.kind == "lsc"]
    assert warned == [(issued.serial, 0)]
