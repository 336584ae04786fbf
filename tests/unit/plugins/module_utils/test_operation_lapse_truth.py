"""Every view tells whether a phone's operation can still run, at the moment it is read.

Invariant: an operation declared with an ``operation_completes_by`` that has passed, while it waited
for its first session (``pending``) or for another attempt (``failed``), can no longer run (the phone's
next session refuses it). From its deadline's second on, every view reports it ``lapsed`` with the
reason ``deadline passed``: the phone listing (capf_info phones, ``phones list``), the CSV report, the
HTML report's counts, one phone's status (capf_phone, ``phones show``) and a query on
``operation_status``, whether or not the scheduler has recorded it since; and the scheduler, run at
that moment, records exactly what the views reported. An operation in progress is not lapsed by its
deadline (its session, begun in time, may complete it), nor is a finished one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from _opencapf import phone_config, phone_query, report_html, reports, scheduler
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import OPERATION_STATUSES, format_utc, parse_utc

pytestmark = pytest.mark.both_backends

NAMES = ("SEP00000000D001", "SEP00000000D002", "SEP00000000D003", "SEP00000000D004")
SECOND = dt.timedelta(seconds=1)
MOMENT = parse_utc("2027-03-01T12:00:00Z", "moment")
# Where a deadline lies from the moment the views are read.
OFFSETS = (None, -2 * dt.timedelta(days=1), -SECOND, dt.timedelta(0), SECOND, dt.timedelta(days=3))
# What became of the operation after it was declared, by the engine's own store functions.
AFTER = ("pending", "failed", "in_progress", "succeeded")

phones_strategy = st.lists(st.tuples(st.sampled_from(("install_upgrade", "delete", "troubleshoot", "none")),
                                     st.sampled_from(OFFSETS), st.sampled_from(AFTER)),
                           min_size=len(NAMES), max_size=len(NAMES))


def _clear(store):
    with store.transaction() as tx:
        for name in phone_records.by_name(tx):
            phone_records.delete(tx, "test", name)


def _declare(store, name, operation, offset, after):
    wanted = {"certificate_operation": operation}
    if offset is not None:
        wanted["operation_completes_by"] = format_utc(MOMENT + offset)
    phone_config.converge(store, name, settings=wanted)
    with store.transaction() as tx:
        phone = phone_records.get(tx, name)
        if operation == "none" or after == "pending":
            return
        if after == "in_progress":
            phone_records.record_session_start(tx, phone, True, format_utc(MOMENT + dt.timedelta(hours=1)))
        else:
            phone_records.set_operation_result(tx, "test", phone, after, "the phone refused the key" if after == "failed"
                                               else "")


def _expected(operation, offset, after):
    status = "none" if operation == "none" else after
    if status in ("pending", "failed") and offset is not None and MOMENT + offset < MOMENT:
        return "lapsed", "deadline passed"
    return status, None  # the stored reason, whatever it is


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(declared=phones_strategy)
def test_every_view_reports_an_operation_lapsed_from_its_deadline_and_the_scheduler_agrees(store, declared):
    _clear(store)
    for name, (operation, offset, after) in zip(NAMES, declared):
        _declare(store, name, operation, offset, after)
    expected = {name: _expected(*item) for name, item in zip(NAMES, declared)}

    def check(tx, reported: dict, view: str) -> None:
        """``reported``: name -> (status, reason), or (status,) for a view that shows no reason."""
        for name, (status, reason) in expected.items():
            assert reported[name][0] == status, (view, name)
            if reason is not None and len(reported[name]) > 1:
                assert reported[name][1] == reason, (view, name)

    with store.read() as tx:
        rows = reports.phone_rows(tx, None, now=MOMENT)
        check(tx, {row["device_name"]: (row["operation_status"], row["operation_reason"]) for row in rows}, "listing")
        lines = csv.DictReader(io.StringIO(reports.report_csv(rows).decode("utf-8")))
        check(tx, {line["device_name"]: (line["operation_status"],) for line in lines}, "csv")
        page = report_html.context(rows, stale_lscs=[], pending_csrs=[], generated_at=format_utc(MOMENT))
        counted = {column["label"]: column["value"] for column in page["statuses"]["bars"]}
        wanted = {}
        for status, _reason in expected.values():
            wanted[status] = wanted.get(status, 0) + 1
        assert counted == wanted
        shown = {name: phone_query.phone_status(tx, name, now=MOMENT) for name in NAMES}
        check(tx, {name: (status["operation_status"], status["operation_reason"]) for name, status in shown.items()},
              "phone status")
        for status in OPERATION_STATUSES:
            found = {row["name"] for row in phone_query.select(
                tx, phone_query.check_query({"operation_status": [status]}), now=MOMENT)}
            assert found == {name for name, (wanted_status, _reason) in expected.items() if wanted_status == status}, status

    # The scheduler, at the same moment, records what the views reported; the views then say the same.
    lapsed = scheduler.lapse_deadlines(store, MOMENT)
    assert sorted(lapsed) == sorted(name for name, (status, _reason) in expected.items() if status == "lapsed")
    with store.read() as tx:
        stored = {name: phone_records.get(tx, name) for name in NAMES}
        check(tx, {name: (row["operation_status"], row["operation_reason"]) for name, row in stored.items()}, "stored")
        rows = reports.phone_rows(tx, None, now=MOMENT)
        check(tx, {row["device_name"]: (row["operation_status"], row["operation_reason"]) for row in rows},
              "listing after the scheduler")
