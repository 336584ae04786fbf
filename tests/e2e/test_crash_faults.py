"""Crash safety of the CAPF service: SIGKILL at named crash points and at random moments during
1,000+ enrolments, restart, and the invariants of docs/reliability.md ("Crash safety").

The named crash points, the session outcomes and the killed bulk update run on both backends. The
fleet run killed at random moments stays on SQLite (1,000 enrolments, too dear to run twice; the
PostgreSQL crash recovery is the killed service of test_abandoned_operations.py and the crash between
signing and commit here). The killed migration runs every case on SQLite (it checks the file itself as
well) and a representative few on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from types import SimpleNamespace

import pytest

from support.crash import SEED_ENV, CrashConfig, check_invariants, crash_run
from support.phones import phone, run_enrol
from support.protocol import add_phone, certificate_rows, phone_row
from support.serving import Serving
from support.tools import ENGINE_PATH
from _opencapf import bulk
from _opencapf.faults import ENV_CRASH_AT
from _opencapf.protocol.session import AuthOffer, Outcome
from _opencapf.server.decider import StoreDecider
from _opencapf.ca import authority
from _opencapf.store import LATEST_VERSION, audit, migrate, open_store, opened
from _opencapf.store.migrations import MIGRATIONS
from _opencapf.store.postgresql import PostgresBackend
from _opencapf.store.sqlite import SqliteBackend


def test_service_killed_at_random_points_during_a_fleet_keeps_every_invariant(tmp_path):
    """SQLite only: one fleet run of 1,000+ enrolments is what CI can afford."""
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2 ** 32))
    config = CrashConfig()
    report, store_path, capf_pem, phones = asyncio.run(crash_run(str(tmp_path), config, seed))
    report.problems.extend(check_invariants(store_path, capf_pem, phones, report, str(tmp_path)))
    summary = report.summary()
    print(summary)
    print("  kill sequence: " + " ".join(report.history))
    assert not report.problems, summary
    assert report.enrolments >= config.min_enrolments, summary
    assert report.service_kills >= config.min_kills, summary
    assert report.kills["bulk.updated"] >= 1, summary
    assert report.kills["migration.statement"] == 1, summary
    assert report.fleet.interrupted, summary


# -- the defects the run found, and the two crash points outside the service ------------------

@pytest.mark.both_backends
def test_a_phone_checking_in_after_its_operation_succeeded_does_not_reopen_it(capf_server, ca_store, tmp_path):
    """After a crash cost the phone its END_SESSION, its retry finds the operation done: it must
    stay done (it used to go back to in_progress, and the phone's next contact re-enrolled it)."""
    add_phone(ca_store, "SEP00000000C001", operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, "SEP00000000C001")
    assert run_enrol(identity, capf_server).outcome == "ok"
    for _contact in range(2):
        assert run_enrol(identity, capf_server).outcome == "no_operation"
        assert phone_row(ca_store, "SEP00000000C001")["operation_status"] == "succeeded"
    assert [row["status"] for row in certificate_rows(ca_store, "SEP00000000C001")] == ["installed"]


@pytest.mark.both_backends
def test_an_operation_result_names_its_session_in_the_audit_log(capf_server, ca_store, tmp_path):
    add_phone(ca_store, "SEP00000000C004", operation="install_upgrade", key_order="ec")
    result = run_enrol(phone(tmp_path, "SEP00000000C004"), capf_server)
    assert result.outcome == "ok"
    with ca_store.read() as tx:
        recorded = tx.scalar("SELECT session_id FROM sessions WHERE device_name = 'SEP00000000C004'")
    with ca_store.read() as tx:
        events = audit.events(tx, action="phone.operation_succeeded", subject="SEP00000000C004")
    assert [event["details"]["session_id"] for event in events] == [recorded] == [result.session_id]


@pytest.mark.both_backends
def test_the_failure_of_an_abandoned_session_does_not_undo_a_newer_success(ca_store):
    """A phone that gave up on a slow connection retries and succeeds; when the old session then
    notices the closed connection, its failure must not overwrite that success."""
    add_phone(ca_store, "SEP00000000C002", operation="install_upgrade")
    add_phone(ca_store, "SEP00000000C003", operation="install_upgrade")
    old, current = StoreDecider(ca_store), StoreDecider(ca_store)
    lost = Outcome(outcome="aborted", reason="peer closed the connection")
    plan = old.begin("SEP00000000C002")
    assert old.authenticate(plan, AuthOffer(b"SEP00000000C002", None)).ok
    with ca_store.transaction() as tx:  # the retrying session's success, written directly between the old one's steps
        tx.execute("UPDATE phones SET operation_status = 'succeeded' WHERE name = 'SEP00000000C002'")
    old.ended(plan, lost)
    assert phone_row(ca_store, "SEP00000000C002")["operation_status"] == "succeeded"
    plan = current.begin("SEP00000000C003")
    assert current.authenticate(plan, AuthOffer(b"SEP00000000C003", None)).ok
    current.ended(plan, lost)  # no newer session: failed
    assert phone_row(ca_store, "SEP00000000C003")["operation_status"] == "failed"


@pytest.mark.both_backends
def test_a_crash_between_signing_and_commit_leaves_neither_the_lsc_nor_its_key_request(ca_store, tmp_path):
    """The key request (csrs row) is written in the LSC's own transaction; it used to be committed
    before the signing and stay pending for ever when the service died in between."""
    add_phone(ca_store, "SEP00000000C005", operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, "SEP00000000C005")
    server = SimpleNamespace(port=0, capf_pem=authority.current(ca_store)["pem"])
    serving = Serving.on(ca_store, tmp_path / "serve.log")
    server.port = serving.start("--enrolment-interval", "0", crash_at="lsc.signed:1").port
    result = run_enrol(identity, server)
    assert (result.outcome, serving.process.wait(30)) == ("communication_failure", -signal.SIGKILL)
    with ca_store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM certificates") == 0
        assert tx.scalar("SELECT count(*) FROM csrs") == 0
    with serving.start("--enrolment-interval", "0"):
        assert run_enrol(identity, server).outcome == "ok"
    with ca_store.read() as tx:
        rows = tx.query("SELECT r.status, c.status AS lsc FROM csrs r JOIN certificates c ON c.id = r.certificate_id")
    assert rows == [{"status": "issued", "lsc": "installed"}]


OPEN_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); from _opencapf.store import open_store; "
              "open_store(sys.argv[2], state_dir=(sys.argv[3:] or [None])[0])")


def _schema(path):
    connection = sqlite3.connect(path)
    try:
        return sorted(row for row in connection.execute("SELECT type, name, sql FROM sqlite_master"))
    finally:
        connection.close()


def _statements(number):
    return sum(2 if statement.startswith("{append_only:") else 1 for statement in MIGRATIONS[number - 1][2])


@pytest.mark.parametrize("start, crash", [(0, 1), (0, 9), (0, _statements(1)), (1, 1), (1, _statements(2)),
                                          (2, _statements(3)), (3, _statements(4)), (4, 1), (4, _statements(5)),
                                          (5, 1), (5, _statements(6))])
def test_a_migration_killed_between_its_statements_leaves_the_previous_version(tmp_path, start, crash):
    """SQLite only: it checks the file itself (integrity_check, sqlite_master)."""
    fresh = str(tmp_path / "fresh.db")
    open_store(fresh).close()
    path = str(tmp_path / "killed.db")
    backend = SqliteBackend(path)
    migrate(backend, target=start)
    backend.close()
    env = dict(os.environ, PYTHONPATH=ENGINE_PATH, **{ENV_CRASH_AT: f"migration.statement:{crash}"})
    child = subprocess.run([sys.executable, "-c", OPEN_CHILD, ENGINE_PATH, path], env=env, check=False, timeout=120)
    assert child.returncode == -signal.SIGKILL
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = connection.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] if tables else 0
    finally:
        connection.close()
    assert (version or 0) == start
    with opened(path) as store:
        assert store.schema_version() == LATEST_VERSION
    assert _schema(path) == _schema(fresh)


PG_SCHEMA = ("SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
             "WHERE table_schema = current_schema() UNION ALL "
             "SELECT tablename, indexname, indexdef, '', '' FROM pg_indexes WHERE schemaname = current_schema()")


def _pg_schema(dsn):
    import psycopg

    with psycopg.connect(dsn) as connection:
        return sorted(connection.execute(PG_SCHEMA).fetchall())


def _pg_version(dsn):
    import psycopg

    with psycopg.connect(dsn) as connection:
        if connection.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
            return 0
        return connection.execute("SELECT COALESCE(max(version), 0) FROM schema_migrations").fetchone()[0]


@pytest.mark.parametrize("start, crash", [(0, 9), (5, _statements(6))])
def test_a_migration_killed_between_its_statements_leaves_a_postgresql_store_at_the_previous_version(
        postgres_server, postgres_dsn, state_dir, start, crash):
    """A representative few of the SQLite cases above: each migration is one PostgreSQL transaction."""
    backend = PostgresBackend(postgres_dsn)
    migrate(backend, target=start)
    backend.close()
    env = dict(os.environ, PYTHONPATH=ENGINE_PATH, **{ENV_CRASH_AT: f"migration.statement:{crash}"})
    child = subprocess.run([sys.executable, "-c", OPEN_CHILD, ENGINE_PATH, postgres_dsn, state_dir], env=env, check=False, timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert _pg_version(postgres_dsn) == start
    with opened(postgres_dsn, state_dir=state_dir) as store:
        assert store.schema_version() == LATEST_VERSION
    fresh = postgres_server.create_database()
    try:
        open_store(postgres_server.dsn(fresh), state_dir=state_dir).close()
        assert _pg_schema(postgres_dsn) == _pg_schema(postgres_server.dsn(fresh))
    finally:
        postgres_server.drop_database(fresh)


BULK_CHILD = """import sys
sys.path.insert(0, sys.argv[1])
from _opencapf import bulk
from _opencapf.store import open_store
with open_store(sys.argv[2], state_dir=sys.argv[3], actor="bulk-test") as store:
    bulk.converge(store, query={"name_pattern": "SEP*"}, settings={"certificate_operation": "install_upgrade"})
"""


@pytest.mark.both_backends
def test_a_bulk_update_killed_mid_transaction_changes_nothing(store):
    for index in range(30):
        add_phone(store, "SEP00000000D%03X" % index)

    def state():
        with store.read() as tx:
            return (tx.query("SELECT name, operation, operation_status, updated_at FROM phones ORDER BY name"),
                    tx.scalar("SELECT count(*) FROM audit_events"))

    before = state()
    env = dict(os.environ, PYTHONPATH=ENGINE_PATH, **{ENV_CRASH_AT: "bulk.updated:1"})
    child = subprocess.run([sys.executable, "-c", BULK_CHILD, ENGINE_PATH, store.location, store.state_dir], env=env, check=False,
                           timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert state() == before
    result = bulk.converge(store, query={"name_pattern": "SEP*"}, settings={"certificate_operation": "install_upgrade"})
    assert result["counts"]["changed"] == 30
    with store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM phones WHERE operation_status = 'pending'") == 30
