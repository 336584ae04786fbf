"""What the PostgreSQL backend does its own way, against a real server: connection strings without
passwords, constraints enforced by the database, the write lock, durability, the commit counter, and
read-only opens that leave the database exactly as it was."""

from __future__ import annotations

import os

import psycopg
import pytest

from support import leads
from support.audit_vocabulary import extra_actions
from support.store_phones import create_phone
from _opencapf.errors import LeadLost, StoreError
from _opencapf.store import audit, certificates, migrate, open_store, phones, service
from _opencapf.store.migrations import LATEST_VERSION
from _opencapf.store.postgresql import WRITE_LOCK_KEY, PostgresBackend, translate


@pytest.fixture(autouse=True)
def _audit_test_actions():
    """The events these tests record of their own (``support.audit_vocabulary``)."""
    with extra_actions("test.locked"):
        yield


@pytest.fixture
def pg_store(postgres_dsn, state_dir):
    opened = open_store(postgres_dsn, state_dir=state_dir, actor="test")
    yield opened
    opened.close()


def _tables(dsn):
    with psycopg.connect(dsn) as connection:
        return {row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}


@pytest.mark.parametrize("location", [
    "postgresql://capf:s3cret-pw@db.example/capf",
    "postgres://capf@db.example/capf?password=s3cret-pw",
])
def test_a_connection_string_with_a_password_is_refused_without_repeating_it(location, state_dir):
    with pytest.raises(StoreError, match="must not contain a password") as raised:
        open_store(location, state_dir=state_dir)
    assert "s3cret-pw" not in str(raised.value)


def test_an_unreachable_server_gives_a_one_line_error(tmp_path, state_dir):
    location = f"postgresql:///capf?host={tmp_path}&connect_timeout=2"
    with pytest.raises(StoreError, match=r"^cannot connect to store postgresql:///capf\?host=") as raised:
        open_store(location, state_dir=state_dir)
    assert "\n" not in str(raised.value)


def test_placeholders_translate_outside_string_literals_and_every_percent_sign_is_doubled():
    assert translate("SELECT '?%' || ? WHERE a LIKE ? ESCAPE '\\' AND b = 'it''s ?'") == (
        "SELECT '?%%' || %s WHERE a LIKE %s ESCAPE '\\' AND b = 'it''s ?'")
    assert translate("SELECT 5 % 2") == "SELECT 5 %% 2"


def test_new_database_gets_the_schema_and_its_state_directory_the_key_files(pg_store, postgres_dsn, state_dir):
    assert pg_store.schema_version() == LATEST_VERSION and pg_store.location == postgres_dsn
    assert {"service_parameters", "capf_certificates", "trust_certificates", "phones", "certificates", "csrs",
            "jobs", "sessions", "audit_events", "schema_migrations", "commit_counter"} <= _tables(postgres_dsn)
    pg_store.secret()
    assert os.listdir(state_dir) == ["secret.key"]


def test_the_database_enforces_keys_uniqueness_and_cascades(pg_store):
    with pg_store.transaction() as tx:
        phone = create_phone(tx, "SEP001122334455")
        certificate = dict(phone_id=phone["id"], kind="lsc", serial="1f", issuer="CAPF", fingerprint="ab",
                           public_key_fingerprint="cd", status="issued", source="cli", pem="-", not_before="x",
                           not_after="y")
        certificates.insert(tx, **certificate)
    with pytest.raises(psycopg.errors.UniqueViolation):
        with pg_store.transaction() as tx:
            certificates.insert(tx, **certificate)
    with pytest.raises(psycopg.errors.UniqueViolation):
        with pg_store.transaction() as tx:
            create_phone(tx, "sep001122334455")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        with pg_store.transaction() as tx:
            certificates.insert(tx, **dict(certificate, phone_id=phone["id"] + 1, serial="20"))
    with pg_store.transaction() as tx:
        assert phones.delete(tx, "test", "SEP001122334455")
    with pg_store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM certificates") == 0
    with pytest.raises(psycopg.Error, match="append-only"):
        with pg_store.transaction() as tx:
            tx.execute("TRUNCATE audit_events")
    with pg_store.read() as tx:
        # Removing the phone revoked its issued LSC first (the CRL keeps it).
        assert [event["action"] for event in audit.events(tx)] == ["phone.delete", "certificate.revoked", "phone.create"]


def test_an_empty_database_without_create_asks_for_init(postgres_dsn, state_dir):
    with pytest.raises(StoreError, match="has no CAPF schema yet; run 'init' first"):
        open_store(postgres_dsn, state_dir=state_dir, create=False)


def test_writers_hold_the_store_write_lock_exactly_while_they_write(pg_store, postgres_dsn):
    with psycopg.connect(postgres_dsn, autocommit=True) as probe:
        def held() -> bool:
            return not probe.execute("SELECT pg_try_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,)).fetchone()[0]

        with pg_store.read() as tx:
            tx.scalar("SELECT count(*) FROM phones")
            assert not held()
        with pg_store.transaction() as tx:
            audit.record(tx, "test", "test.locked", "one")
            assert held()
        assert not held()
        with pytest.raises(RuntimeError):
            with pg_store.transaction() as tx:
                audit.record(tx, "test", "test.locked", "rolled back")
                raise RuntimeError("the caller fails")
        assert not held()
    with pg_store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM audit_events WHERE action = 'test.locked'") == 1


def test_only_non_durable_commits_skip_waiting_for_the_disk(pg_store):
    with pg_store.transaction(durable=False) as tx:
        assert tx.scalar("SHOW synchronous_commit") == "off"
        service.write(tx, "test", {"validity_days": 400})
    with pg_store.transaction() as tx:
        assert tx.scalar("SHOW synchronous_commit") == "on"


def test_deferred_durability_leaves_nothing_to_wait_for(postgres_dsn, state_dir):
    """The CAPF service defers durability on its event loop (``defer_durability``) and waits, off the loop,
    for every commit above ``durable_mark``. A PostgreSQL commit is on disk when it returns: the mark
    never rises, so no session step waits for a sync that has nothing to do."""
    with open_store(postgres_dsn, state_dir=state_dir, actor="test", group_commit=True) as grouped:
        grouped.defer_durability()
        with grouped.transaction() as tx:
            service.write(tx, "test", {"validity_days": 400})
        with grouped.transaction(durable=False) as tx:
            service.write(tx, "test", {"validity_days": 401})
        assert grouped.durable_mark == 0
        grouped.sync(grouped.durable_mark)
        grouped.defer_durability(False)


def test_data_version_changes_for_commits_of_other_connections_only(pg_store, postgres_dsn, state_dir):
    first = pg_store.data_version()
    with pg_store.transaction() as tx:
        service.write(tx, "test", {"validity_days": 400})
    with pg_store.transaction() as tx:
        tx.scalar("SELECT count(*) FROM phones")  # a write transaction that changed nothing
    assert pg_store.data_version() == first
    with open_store(postgres_dsn, state_dir=state_dir) as other:
        with other.read() as tx:
            tx.scalar("SELECT count(*) FROM phones")
        assert pg_store.data_version() == first
        with other.transaction() as tx:
            service.write(tx, "test", {"validity_days": 500})
    second = pg_store.data_version()
    assert second != first
    assert pg_store.data_version() == second


def _schema(dsn):
    with psycopg.connect(dsn) as connection:
        return sorted(connection.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()").fetchall())


def _commits(dsn):
    with psycopg.connect(dsn) as connection:
        return connection.execute("SELECT version FROM commit_counter").fetchone()[0]


def test_read_only_open_writes_nothing_at_any_schema_version(postgres_dsn, state_dir):
    """Check mode and plans: an empty database reads as an empty store, one at an older schema version
    through the pending migrations applied in a transaction that is rolled back; writes are refused."""
    with open_store(postgres_dsn, state_dir=state_dir, read_only=True) as empty:
        assert empty.schema_version() == LATEST_VERSION
        with empty.read() as tx:
            assert service.read(tx)["validity_days"] == 1825
        with pytest.raises(StoreError, match="is open read-only; nothing may be written"):
            with empty.transaction():
                pass
    assert _schema(postgres_dsn) == [] and not os.path.exists(os.path.join(state_dir, "secret.key"))
    backend = PostgresBackend(postgres_dsn)
    migrate(backend, target=LATEST_VERSION - 1)
    backend.close()
    before = _schema(postgres_dsn), _commits(postgres_dsn)
    with open_store(postgres_dsn, state_dir=state_dir, read_only=True) as older:
        assert older.schema_version() == LATEST_VERSION
        with older.read() as tx:
            assert tx.scalar("SELECT version FROM commit_counter") is not None
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                tx.execute("INSERT INTO audit_events (at, actor, action) VALUES ('now', 'x', 'y')")
    assert (_schema(postgres_dsn), _commits(postgres_dsn)) == before
    with open_store(postgres_dsn, state_dir=state_dir) as current:
        assert current.schema_version() == LATEST_VERSION
        with current.transaction() as tx:
            tx.execute("INSERT INTO schema_migrations VALUES (999, 'future', '2030-01-01T00:00:00Z')")
    with pytest.raises(StoreError, match="newer than this engine"):
        open_store(postgres_dsn, state_dir=state_dir, read_only=True)


def test_a_store_works_again_once_the_database_is_back(postgres_server, pg_store):
    """The database restarted under an open store (every connection cut): the transaction that meets
    the cut fails with a one-line StoreError, the next ones connect again, and a lead held on the
    lost connection is taken again (the database released it with that connection)."""
    assert pg_store.try_lead("scheduler")
    with pg_store.transaction() as tx:
        service.write(tx, "test", {"validity_days": 700})
    postgres_server.restart()
    failures = []
    for _attempt in range(2):
        try:
            with pg_store.transaction() as tx:
                service.write(tx, "test", {"validity_days": 800})
            break
        except StoreError as exc:
            failures.append(str(exc))
    else:
        raise AssertionError(f"the store did not recover: {failures}")
    assert all("\n" not in message and message.startswith(f"store {pg_store.location}") for message in failures)
    with pg_store.read() as tx:
        assert service.read(tx)["validity_days"] == 800
    pg_store.data_version()
    assert pg_store.try_lead("scheduler")
    other = open_store(pg_store.location, state_dir=pg_store.state_dir, actor="test")
    try:
        assert not other.try_lead("scheduler"), "the lead must be held again by the reconnected store"
    finally:
        other.close()


def test_a_lead_lost_with_the_connection_is_not_held_by_the_connection_made_again(pg_store, postgres_dsn, state_dir):
    """The session that held the lead ended (a lost connection): the store connects again at its next
    transaction, but that connection holds no lead; a duty's write there fails with ``LeadLost`` while
    another connection leads, and nothing of it is written."""
    other = open_store(postgres_dsn, state_dir=state_dir, actor="other")
    watch = psycopg.connect(postgres_dsn, autocommit=True)
    try:
        assert pg_store.try_lead("scheduler")
        pid = leads.lead_holder(watch, "scheduler")
        with pg_store.read() as tx:
            assert tx.scalar("SELECT pg_backend_pid()") == pid
        leads.cut(watch, pid)
        leads.until(lambda: other.try_lead("scheduler"), what="the other connection's lead")
        assert not pg_store.holds_lead("scheduler")
        with pg_store.leading("scheduler"):
            with pytest.raises(LeadLost):
                with pg_store.transaction() as tx:
                    service.write(tx, "test", {"validity_days": 800})
        with pg_store.read() as tx:  # connected again
            assert service.read(tx)["validity_days"] != 800
            assert tx.scalar("SELECT pg_backend_pid()") != pid
        assert not pg_store.try_lead("scheduler") and leads.lead_holder(watch, "scheduler") != pid
    finally:
        watch.close()
        other.close()
