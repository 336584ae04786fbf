"""Scheduled work happens while ``opencapf serve`` runs, with no other command: due bulk jobs run
and operations whose deadline passed lapse, each exactly once however many processes serve the
store (one process, ``--processes 2``, two separate ``serve`` processes), with a log line and an
audit event per job and per lapse batch."""

from __future__ import annotations

import datetime as dt
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from support.protocol import add_phone
from support.tools import ENGINE_PATH
from _opencapf import bulk
from _opencapf.server import scheduling
from _opencapf.store import open_store
from _opencapf.store import service as service_records
from _opencapf.store.sqlite import LEAD_LOCK_SUFFIX
from _opencapf.vocabulary import format_utc, utc_now

LEADER_LINE = "scheduler: this process (pid "


def _serve(store_path, log, *extra):
    process = subprocess.Popen([sys.executable, "-m", "_opencapf", "--store", store_path, "serve", "--listen",
                                "127.0.0.1", "--port", "0", "--enrolment-interval", "0", *extra],
                               stdout=subprocess.PIPE, stderr=log, text=True,
                               env={**os.environ, "PYTHONPATH": ENGINE_PATH})
    line = process.stdout.readline()
    if not line.startswith("listening on"):
        process.kill()
        raise AssertionError(f"serve did not start: {line!r}")
    return process


def _stop(processes):
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _in(seconds):
    return format_utc(utc_now() + dt.timedelta(seconds=seconds))


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.mark.parametrize("layout", ["one process", "--processes 2", "two serve processes"])
def test_the_service_runs_due_jobs_and_lapses_deadlines_exactly_once(ca_store, store_path, tmp_path, layout):
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

    logs = [tmp_path / "serve-1.log", tmp_path / "serve-2.log"]
    extra = ("--processes", "2") if layout == "--processes 2" else ()
    with open(logs[0], "w", encoding="utf-8") as log, open(logs[1], "w", encoding="utf-8") as other:
        running = [_serve(store_path, log, *extra)]
        try:
            if layout == "two serve processes":
                running.append(_serve(store_path, other))
            schedule()
            finished = _wait(done, 30)
            time.sleep(2)  # two more ticks: nothing may run a second time
        finally:
            _stop(running)
    text = "".join(path.read_text() for path in logs)
    assert finished, text
    assert all(process.returncode == 0 for process in running) and "Traceback" not in text, text

    with ca_store.read() as tx:
        statuses = {row["name"]: (row["operation"], row["operation_status"]) for row in
                    tx.query("SELECT name, operation, operation_status FROM phones")}
        events = tx.query("SELECT actor, action, subject, details FROM audit_events WHERE action LIKE 'job.%' "
                          "OR action IN ('bulk.apply', 'phone.lapse') ORDER BY id")
    assert all(statuses[name] == ("install_upgrade", "pending") for name in first)
    assert all(statuses[name] == ("delete", "pending") for name in second)
    assert statuses["SEP00000000C001"][1] == "lapsed" and statuses["SEP00000000C002"][1] == "pending"
    by_action = {}
    for event in events:
        by_action.setdefault(event["action"], []).append(event)
    assert sorted(event["subject"] for event in by_action["job.succeeded"]) == sorted(str(i) for i in job_ids)
    assert len(by_action["bulk.apply"]) == len(job_ids) and len(by_action["phone.lapse"]) == 1
    assert all(event["actor"] == scheduling.ACTOR for event in by_action["job.succeeded"] + by_action["phone.lapse"])
    for job_id in job_ids:
        assert text.count(f"scheduler: job {job_id} succeeded") == 1, text
    assert text.count("pending operation(s) lapsed, their deadline passed: SEP00000000C001") == 1, text
    assert text.count(LEADER_LINE) == 1, text  # one process leads, the others keep serving phones
    lock = store_path + LEAD_LOCK_SUFFIX.format(name=scheduling.LEAD)
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600


def test_the_lead_passes_to_another_process_when_the_leader_stops(ca_store, store_path, tmp_path):
    """A second ``serve`` takes over the scheduler once the first one has stopped."""
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"scheduler_interval_seconds": 1})
    add_phone(ca_store, "SEP00000000D001", operation="install_upgrade", auth_mode="null_string",
              operation_deadline=_in(86400))
    with open(tmp_path / "first.log", "w", encoding="utf-8") as log_1, \
            open(tmp_path / "second.log", "w", encoding="utf-8") as log_2:
        leader = _serve(store_path, log_1)
        follower = None
        try:
            assert _wait(lambda: LEADER_LINE in (tmp_path / "first.log").read_text(), 20)
            follower = _serve(store_path, log_2)
            time.sleep(1.5)
            assert LEADER_LINE not in (tmp_path / "second.log").read_text()
            _stop([leader])
            with ca_store.transaction() as tx:
                tx.execute("UPDATE phones SET operation_deadline = ? WHERE name = 'SEP00000000D001'", (_in(-1),))
            assert _wait(lambda: LEADER_LINE in (tmp_path / "second.log").read_text(), 20)
            lapsed = _wait(lambda: _status(store_path, "SEP00000000D001") == "lapsed", 20)
        finally:
            _stop([process for process in (leader, follower) if process is not None])
    assert lapsed, (tmp_path / "second.log").read_text()


def _status(store_path, name):
    store = open_store(store_path, actor="test", create=False)
    try:
        with store.read() as tx:
            return tx.scalar("SELECT operation_status FROM phones WHERE name = ?", (name,))
    finally:
        store.close()
