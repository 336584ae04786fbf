"""A node's PostgreSQL connection lost while it is idle (the database ended it: ``idle_session_timeout``,
a restart, a firewall's idle reset) costs no session and no duty: nothing was begun on it, so the node's
next transaction connects again and runs there. A transaction that meets the loss part-way still fails."""

from __future__ import annotations

import psycopg
import pytest

from support import leads
from support.sessions import SessionLeg
from _opencapf import phone_config, phone_query
from _opencapf.errors import LeadLost
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import open_store, service

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

NAME = "SEP00000000CE01"


def _ended(watch, store) -> None:
    """End ``store``'s database session as the server ends an idle one."""
    with store.read() as tx:
        pid = tx.scalar("SELECT pg_backend_pid() AS pid")
    leads.cut(watch, pid)
    leads.until(lambda: not watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone(),
                what="the end of the node's database session")


def test_a_session_whose_node_lost_its_idle_connection_ends_on_record(ca_store):
    """The session waits for the phone's key; meanwhile the node's connection is ended; the step times
    out: the session's end is recorded (the operation failed, not left in progress as by a dead node)."""
    phone_config.converge(ca_store, NAME, settings={"certificate_operation": "install_upgrade"})
    node = open_store(ca_store.location, state_dir=ca_store.state_dir, actor="node", group_commit=True)
    watch = psycopg.connect(ca_store.location, autocommit=True)
    try:
        leg = SessionLeg(node, PhoneIdentity(PhoneSettings(NAME)), 7, "loses power before its key")
        now = 1_000_000.0
        leg.step(now)
        leg.step(now)
        assert not leg.done and leg.server.deadline is not None
        _ended(watch, node)
        leg.server.time_passed(leg.server.deadline)
        assert leg.done and leg.server.outcome.outcome == "timeout"
        with ca_store.read() as tx:
            status = phone_query.phone_status(tx, NAME)
        assert status["operation_status"] == "failed", status
    finally:
        watch.close()
        node.close()


def test_an_idle_connection_lost_costs_no_transaction_and_no_lead_is_kept(ca_store):
    watch = psycopg.connect(ca_store.location, autocommit=True)
    other = open_store(ca_store.location, state_dir=ca_store.state_dir, actor="other")
    try:
        _ended(watch, ca_store)
        with ca_store.transaction() as tx:  # a write
            service.write(tx, "test", {"validity_days": 800})
        _ended(watch, ca_store)
        with ca_store.read() as tx:
            assert service.read(tx)["validity_days"] == 800
        _ended(watch, ca_store)
        ca_store.data_version()
        assert ca_store.try_lead("scheduler")
        _ended(watch, ca_store)
        assert other.try_lead("scheduler"), "the lead went with the connection"
        assert not ca_store.try_lead("scheduler") and not ca_store.holds_lead("scheduler")
        with ca_store.leading("scheduler"):
            with pytest.raises(LeadLost):
                with ca_store.transaction() as tx:
                    service.write(tx, "test", {"validity_days": 900})
    finally:
        other.close()
        watch.close()
