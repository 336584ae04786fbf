"""Scheduled work happens while ``opencapf serve`` runs, with no other command: due bulk jobs run
and operations whose deadline passed lapse, each exactly once however many processes serve the
store (one process, ``--processes 2``, two separate ``serve`` processes), with a log line and an
audit event per job and per lapse batch. The hand-over of the lead runs on PostgreSQL too (whose lead
is an advisory lock, not a lock file); due jobs on a PostgreSQL store served by three nodes are
test_cluster.py's."""

from __future__ import annotations

import datetime as dt
import os
import stat
import time

import pytest

from support.protocol import add_phone, phone_row
from support.serving import Serving, stop_all, wait_for
from _opencapf import bulk
from _opencapf.server import scheduling
from _opencapf.store import service as service_records
from _opencapf.store.sqlite import LEAD_LOCK_SUFFIX
from _opencapf.vocabulary import format_utc, utc_now

LEADER_LINE = "scheduler: this process (pid "
OPTIONS = ("--enrolment-interval", "0")


def _in(seconds):
    return format_utc(utc_now() + dt.timedelta(seconds=seconds))


@pytest.mark.parametrize("layout", ["one process", "--processes 2", "two serve processes"])
def test_the_service_runs_due_jobs_and_lapses_deadlines_exactly_once(ca_store, tmp_path, layout):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"scheduler_interval_seconds": 1})
    first = [f"SEP00000000A{i:03X}" for i in range(3)]
    second = [f"SEP00000000B{i:03X}" for i in range(2)]
    for name in first + second:
        add_phone(ca_store, name)
    job_ids = []

    def schedule():
        """Everything falls due seconds after the service has started."""
        add_phone(ca_store, "SEP00000000C001", operation="install_upgrade", auth_mode="null_string",
                  operation_deadline=_in(1))
        add_phone(ca_store, "SEP00000000C002", operation="install_upgrade", auth_mode="null_string",
                  operation_deadline=_in(86400))
        for names, operation, seconds in ((first, "install_upgrade", 2), (second, "delete", 3)):
            job = bulk.converge(ca_store, query={"names": names}, run_at=_in(seconds),
                                settings={"certificate_operation": operation, "authentication_mode": "null_string"})
            assert job["job"]["status"] == "scheduled"
            job_ids.append(job["job"]["id"])

    def done():
        with ca_store.read() as tx:
            finished = tx.scalar("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'")
            lapsed = tx.scalar("SELECT operation_status FROM phones WHERE name = 'SEP00000000C001'")
        return finished == len(job_ids) and lapsed == "lapsed"

    running = [Serving.on(ca_store, tmp_path / f"serve-{index}.log")
               for index in range(2 if layout == "two serve processes" else 1)]
    try:
        for serving in running:
            serving.start(*OPTIONS, *(("--processes", "2") if layout == "--processes 2" else ()))
        schedule()
        finished = wait_for(done, 30)
        time.sleep(2)  # two more ticks: nothing may run a second time
    finally:
        codes = stop_all(running)
    text = "".join(serving.log() for serving in running)
    assert finished, text
    assert codes == [0] * len(running) and "Traceback" not in text, text

    with ca_store.read() as tx:
        statuses = {row["name"]: (row["operation"], row["operation_status"]) for row in
                    tx.query("SELECT name, operation, operation_status FROM phones")}
        events = tx.query("SELECT actor, action, subject, details FROM audit_events WHERE action LIKE 'job.%' "
                          "OR action IN ('bulk.apply', 'phone.operation_lapsed') ORDER BY id")
    assert all(statuses[name] == ("install_upgrade", "pending") for name in first)
    assert all(statuses[name] == ("delete", "pending") for name in second)
    assert statuses["SEP00000000C001"][1] == "lapsed" and statuses["SEP00000000C002"][1] == "pending"
    by_action = {}
    for event in events:
        by_action.setdefault(event["action"], []).append(event)
    assert sorted(event["subject"] for event in by_action["job.succeeded"]) == sorted(str(i) for i in job_ids)
    assert len(by_action["bulk.apply"]) == len(job_ids)
    assert [event["subject"] for event in by_action["phone.operation_lapsed"]] == ["SEP00000000C001"]  # once: one leader
    assert all(event["actor"] == scheduling.ACTOR
               for event in by_action["job.succeeded"] + by_action["phone.operation_lapsed"])
    for job_id in job_ids:
        assert text.count(f"scheduler: job {job_id} succeeded") == 1, text
    assert text.count("operation(s) lapsed, their deadline passed: SEP00000000C001") == 1, text
    assert text.count(LEADER_LINE) == 1, text  # one process leads, the others keep serving phones
    lock = ca_store.location + LEAD_LOCK_SUFFIX.format(name=scheduling.LEAD)
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600


@pytest.mark.both_backends
def test_the_lead_passes_to_another_process_when_the_leader_stops(ca_store, tmp_path):
    """A second ``serve`` takes over the scheduler once the first one has stopped."""
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"scheduler_interval_seconds": 1})
    add_phone(ca_store, "SEP00000000D001", operation="install_upgrade", auth_mode="null_string",
              operation_deadline=_in(86400))
    leader = Serving.on(ca_store, tmp_path / "first.log")
    follower = Serving.on(ca_store, tmp_path / "second.log")
    try:
        leader.start(*OPTIONS)
        assert wait_for(lambda: LEADER_LINE in leader.log(), 20)
        follower.start(*OPTIONS)
        time.sleep(1.5)
        assert LEADER_LINE not in follower.log()
        leader.stop()
        with ca_store.transaction() as tx:  # the deadline passes now, not a day later: time moved, not a setting
            tx.execute("UPDATE phones SET operation_deadline = ? WHERE name = 'SEP00000000D001'", (_in(-1),))
        assert wait_for(lambda: LEADER_LINE in follower.log(), 20)
        lapsed = wait_for(lambda: phone_row(ca_store, "SEP00000000D001")["operation_status"] == "lapsed", 20)
    finally:
        stop_all([leader, follower])
    assert lapsed, follower.log()
