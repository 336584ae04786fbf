"""A scheduled bulk job plans at the moment it acts for: its query matches the phones' operation status
as the views report it at the job's ``now``, and its converge plans each matched phone from that same
status (``phone_config.as_reported`` at that ``now``), not from the status at the wall clock. In
production the two are one moment; they differ when the job runs at a ``now`` that is not the wall
clock (``opencapf jobs run-due --now``, tests that move the clock).

The property, for operations pending with a deadline and in progress with a session bound, each
passing or not before or after the wall clock and the job's ``now``: a job that asks for the
operations ``failed`` or ``lapsed`` and arms them again (``reissue``, a new deadline) matches exactly
the phones whose operation is finished as reported at its ``now``, and arms every one of them again."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.protocol import phone_row
from support.store_phones import create_phone
from _opencapf import bulk, phone_query, scheduler
from _opencapf.vocabulary import format_utc, parse_utc, utc_now

pytestmark = pytest.mark.both_backends

FINISHED = ("failed", "lapsed")
HOUR = dt.timedelta(hours=1)
_examples = itertools.count(1)

# Offsets from the wall clock, in minutes: of the operation's deadline or session bound, and of the job's now.
_OFFSETS = st.integers(-3 * 24 * 60, 3 * 24 * 60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=st.sampled_from(["pending", "in_progress"]), bound=_OFFSETS, job_at=_OFFSETS)
def test_a_job_plans_each_phone_from_the_status_its_query_matched_at_its_now(store, state, bound, job_at):
    name = "SEP%012X" % next(_examples)
    wall = parse_utc(format_utc(utc_now()), "now")
    moment = wall + dt.timedelta(minutes=job_at)
    limit = format_utc(wall + dt.timedelta(minutes=bound))
    with store.transaction() as tx:
        if state == "pending":  # lapses at its deadline
            create_phone(tx, name, operation="install_upgrade", operation_status="pending", operation_deadline=limit)
        else:  # a session that died: failed once its bound has passed
            create_phone(tx, name, operation="install_upgrade", operation_status="in_progress",
                         last_session_at=format_utc(wall - HOUR))
            tx.execute("UPDATE phones SET operation_live_until = ? WHERE name = ?", (limit, name))
    with store.read() as tx:
        finished = bool(phone_query.select(tx, {"names": [name], "operation_status": list(FINISHED)}, with_lsc=False,
                                           now=moment, clock_skew=store.clock_skew))
    new_deadline = format_utc(max(wall, moment) + 30 * 24 * HOUR)
    job = bulk.converge(store, query={"names": [name], "operation_status": list(FINISHED)},
                        settings={"operation_completes_by": new_deadline}, reissue=True,
                        run_at=format_utc(moment), now=format_utc(moment - HOUR))["job"]
    ran = {item["id"]: item for item in scheduler.run_due(store, format_utc(moment))["jobs"]}
    counts = ran[job["id"]]["result"]["counts"]
    row = phone_row(store, name)
    assert counts["matched"] == int(finished), (counts, state, bound, job_at)
    if finished:
        assert counts["changed"] == 1
        assert (row["operation_status"], row["operation_deadline"]) == ("pending", new_deadline), \
            (dict(row), state, bound, job_at)
    else:
        assert row["operation_status"] == state and row["operation_deadline"] == (
            limit if state == "pending" else None)
