"""A duty runs only while its node holds the lead.

Two nodes share one PostgreSQL store. The scheduler's lead is a session-level advisory lock: when the
leading node's connection is lost in the middle of a tick, the lock goes with it and another node may
take the lead at once. The node that lost it must write nothing more for the scheduler's duties (no job
run, no CRL signed, no renewal scheduled) although its store connects again for the next transaction:
it notices the loss, skips the rest of the tick with a log line, and asks for the lead at its next tick."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import psycopg
import pytest

from support.leads import cut, lead_holder, until, waits_to_write
from support.protocol import add_phone
from _opencapf import bulk
from _opencapf.server import scheduling
from _opencapf.store import open_store
from _opencapf.store.postgresql import WRITE_LOCK_KEY
from _opencapf.vocabulary import format_utc, utc_now

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

NAME = "SEP00000000AB01"


def _written(store) -> dict:
    """What the scheduler's duties write: the jobs' statuses, the CRLs, the renewals, the audit trail."""
    with store.read() as tx:
        return {"jobs": [row["status"] for row in tx.query("SELECT status FROM jobs ORDER BY id")],
                "crls": tx.scalar("SELECT COUNT(*) FROM crls"),
                "renewals": tx.scalar("SELECT COUNT(*) FROM renewals"),
                "events": tx.scalar("SELECT COALESCE(MAX(id), 0) FROM audit_events")}


def test_a_node_whose_connection_is_lost_mid_tick_writes_nothing_while_another_leads(ca_store, caplog):
    now = utc_now()
    add_phone(ca_store, NAME)
    bulk.converge(ca_store, query={"names": [NAME]}, settings={"description": "due",
                                                               "certificate_operation": "install_upgrade"},
                  run_at=format_utc(now - dt.timedelta(minutes=5)), now=format_utc(now - dt.timedelta(minutes=10)))
    before = _written(ca_store)
    assert before["jobs"] == ["scheduled"] and before["crls"] == 0
    first = scheduling.Scheduling(ca_store)
    second = open_store(ca_store.location, state_dir=ca_store.state_dir, actor="node-b")
    watch = psycopg.connect(ca_store.location, autocommit=True)
    writer = psycopg.connect(ca_store.location, autocommit=True)  # another writer holds the store's write lock
    failures = []

    def tick():
        try:
            first.tick()
        except BaseException as exc:  # pylint: disable=broad-except  # raised again in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=tick)
    try:
        writer.execute("BEGIN")
        writer.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        with caplog.at_level(logging.INFO, logger="opencapf.server"):
            thread.start()
            # The first node took the lead and waits to write its first duty: its connection is lost there.
            pid = until(lambda: lead_holder(watch, scheduling.LEAD), what="the first node's lead")
            until(lambda: waits_to_write(watch, pid), what="the first node's first write")
            cut(watch, pid)
            until(lambda: second.try_lead(scheduling.LEAD), what="the second node's lead")
            writer.execute("COMMIT")  # the first node's tick goes on, with the second node leading
            thread.join(timeout=120)
        assert not thread.is_alive() and not failures, failures
        assert lead_holder(watch, scheduling.LEAD) != pid
        after = _written(ca_store)
        assert after == before, "the node that lost the lead wrote for the scheduler's duties while another led"
        lost = [record.getMessage() for record in caplog.records if "lost the scheduler lead" in record.getMessage()]
        assert len(lost) == 1 and "skipped: scheduled jobs, directory syncs, revocation and CRLs, automatic renewal" \
            in lost[0], lost
        assert not first.leading
        second.close()  # the second node stops: the first takes the lead again at its next tick and does the work
        until(lambda: first.tick() is not None and first.leading, what="the lead back on the first node")
        after = _written(ca_store)
        assert after["jobs"] == ["succeeded"] and after["crls"] >= 1
    finally:
        if thread.is_alive():
            writer.execute("ROLLBACK")
            thread.join(timeout=60)
        first.close()
        second.close()
        watch.close()
        writer.close()
