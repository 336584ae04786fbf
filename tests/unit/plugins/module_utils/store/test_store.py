"""The store on both backends (SQLite, PostgreSQL): creation, migrations, transactions, append-only
audit; then what each backend does its own way (SQLite's WAL and fsyncs, PostgreSQL's write lock)."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import stat

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.audit_vocabulary import extra_actions
from support.store_phones import create_phone
from _opencapf import phone_query, reports
from _opencapf.errors import StoreError
from _opencapf.store import audit, migrate, open_store, phones, service
from _opencapf.store.migrations import LATEST_VERSION, MIGRATIONS
from _opencapf.store.sqlite import SqliteBackend


@pytest.fixture(autouse=True)
def _audit_test_actions():
    """The events these tests record of their own (``support.audit_vocabulary``)."""
    with extra_actions("test.step", "test.durable", "test.deferred", "test.thread", "test.written", "test.secret",
                       keys=("password", "note")):
        yield


def test_new_store_is_private_migrated_and_in_wal_mode(sqlite_store, store_path):
    store = sqlite_store
    assert store.schema_version() == LATEST_VERSION
    assert stat.S_IMODE(os.stat(store_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(store_path)).st_mode) == 0o700
    with store.read() as tx:
        assert tx.scalar("PRAGMA journal_mode") == "wal"
        assert tx.scalar("PRAGMA foreign_keys") == 1
        tables = {row["name"] for row in tx.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"service_parameters", "capf_certificates", "trust_certificates", "phones", "certificates", "csrs",
            "jobs", "sessions", "audit_events", "schema_migrations"} <= tables


def test_reopening_applies_nothing_twice(store_location, state_dir):
    open_store(store_location, state_dir=state_dir).close()
    with open_store(store_location, state_dir=state_dir) as again:
        with again.read() as tx:
            assert tx.scalar("SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)


def _from_the_future(location, state_dir):
    with open_store(location, state_dir=state_dir) as store, store.transaction() as tx:
        tx.execute("INSERT INTO schema_migrations VALUES (999, 'future', '2030-01-01T00:00:00Z')")


def test_store_with_newer_schema_is_refused(store_location, state_dir):
    _from_the_future(store_location, state_dir)
    with pytest.raises(StoreError, match="newer than this engine"):
        open_store(store_location, state_dir=state_dir)


def test_corrupt_store_gives_a_clear_error(tmp_path):
    path = tmp_path / "capf.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        open_store(str(path))
    assert path.read_bytes() == b"this is not a database" * 100


def test_missing_store_without_create(tmp_path):
    with pytest.raises(StoreError, match="does not exist; run 'init' first"):
        open_store(str(tmp_path / "absent.db"), create=False)


def test_failed_transaction_leaves_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            service.write(tx, "test", {"validity_days": 30})
            raise RuntimeError("boom")
    with store.read() as tx:
        assert service.read(tx)["validity_days"] == 1825
        assert audit.events(tx) == []


def test_percent_and_question_marks_in_string_literals_are_text_on_both_backends(store):
    """A ``?`` in a string literal is no placeholder and a ``%`` is a character (``LIKE 'SEP%'``), with
    and without parameters; outside literals ``?`` binds a parameter and ``%`` is the modulo operator."""
    with store.transaction() as tx:
        create_phone(tx, "SEP001122334455", operation="install_upgrade")
        create_phone(tx, "CSFAABBCC", operation="install_upgrade")
    with store.read() as tx:
        assert [row["name"] for row in tx.query("SELECT name FROM phones WHERE name LIKE 'SEP%'")] == ["SEP001122334455"]
        assert tx.scalar("SELECT count(*) FROM phones WHERE name LIKE 'SEP%' AND operation = ?", ("install_upgrade",)) == 1
        assert tx.scalar("SELECT '?%' || ? || '%?'", ("x",)) == "?%x%?"
        assert tx.scalar("SELECT 7 % ?", (4,)) == 3


def test_parameters_default_then_change_is_audited_once(store):
    with store.transaction() as tx:
        assert service.read(tx)["keepalive_minutes"] == 15
        assert service.write(tx, "test", {"keepalive_minutes": 20}) == {"keepalive_minutes": (15, 20)}
        assert service.write(tx, "test", {"keepalive_minutes": 20}) == {}
    with store.read() as tx:
        assert service.read(tx)["keepalive_minutes"] == 20
        events = audit.events(tx)
    assert [event["action"] for event in events] == ["service.update"]
    assert events[0]["details"]["changes"]["keepalive_minutes"] == {"before": 15, "after": 20}


def test_audit_log_is_append_only(store):
    with store.transaction() as tx:
        audit.record(tx, "test", "test.secret", "subject", password="secret-value", note="kept")
    for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
            with store.transaction() as tx:
                tx.execute(statement)
    with store.read() as tx:
        event = audit.events(tx)[0]
    assert event["details"] == {"password": "********", "note": "kept"}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.sampled_from(("session.refused", "session.succeeded", "session.", "session", "sessions.x",
                                         "Session.refused", "xsession.a", "store.sessions_pruned", "certificate.issued")),
                        min_size=1, max_size=6))
def test_only_session_events_may_leave_the_audit_log(store, actions):
    """Session records are removed once past their retention (``retention``): the database lets a
    ``session.*`` event go, and refuses to remove any other event or to change any event."""
    with store.transaction() as tx:  # rows of any action, whatever its shape: the triggers are what is tried here
        for action in actions:
            tx.execute("INSERT INTO audit_events (at, actor, action, subject, details) VALUES (?, ?, ?, ?, ?)",
                       ("2026-01-01T00:00:00Z", "test", action, "subject", "{}"))
        ids = [row["id"] for row in tx.query("SELECT id FROM audit_events ORDER BY id DESC LIMIT ?", (len(actions),))]
    for event_id, action in zip(reversed(ids), actions):
        with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
            with store.transaction() as tx:
                tx.execute("UPDATE audit_events SET actor = 'x' WHERE id = ?", (event_id,))
        if action.startswith("session."):
            with store.transaction() as tx:
                assert tx.execute("DELETE FROM audit_events WHERE id = ?", (event_id,)) == 1
        else:
            with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
                with store.transaction() as tx:
                    tx.execute("DELETE FROM audit_events WHERE id = ?", (event_id,))
    with store.read() as tx:
        kept = {row["id"] for row in tx.query("SELECT id FROM audit_events")}
    assert {event_id for event_id, action in zip(reversed(ids), actions) if event_id in kept} == \
        {event_id for event_id, action in zip(reversed(ids), actions) if not action.startswith("session.")}


def test_secret_file_is_private_and_stable(store):
    first = store.secret()
    path = os.path.join(store.state_dir, "secret.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open_store(store.location, state_dir=store.state_dir) as again:
        assert again.secret() == first


def test_non_durable_commits_skip_only_their_own_fsync(sqlite_store, store_path):
    store = sqlite_store
    with store.transaction(durable=False) as tx:
        assert tx.scalar("PRAGMA synchronous") == 1  # NORMAL: appended to the log, not waited for
        service.write(tx, "test", {"validity_days": 400})
    with store.transaction() as tx:
        assert tx.scalar("PRAGMA synchronous") == 2  # FULL again: this commit (and the one before) is on disk
    with open_store(store_path) as other, other.read() as tx:
        assert service.read(tx)["validity_days"] == 400


def test_group_commit_shares_fsyncs_between_threads(store_path, monkeypatch):
    import threading
    import time

    from _opencapf.store import sqlite as sqlite_backend

    synced = []
    real_fsync = os.fsync

    def slow_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        time.sleep(0.05)  # a slow disk: commits arriving meanwhile wait for the next fsync together
        real_fsync(fd)

    monkeypatch.setattr(sqlite_backend.os, "fsync", slow_fsync)
    with open_store(store_path, group_commit=True) as grouped:
        with grouped.read() as tx:
            assert tx.scalar("PRAGMA synchronous") == 1
        synced.clear()  # opening migrates (durably)
        with grouped.transaction(durable=False) as tx:
            audit.record(tx, "test", "test.step", "one")
        assert synced == []
        with grouped.transaction() as tx:
            audit.record(tx, "test", "test.durable", "one")
        assert synced == [store_path + "-wal"]

        def commit(index):
            with grouped.transaction() as tx:
                audit.record(tx, "test", "test.durable", str(index))

        threads = [threading.Thread(target=commit, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert 2 <= len(synced) < 9  # eight durable commits, fewer fsyncs
        backend = grouped.backend
        assert backend._synced == backend._written  # pylint: disable=protected-access
    with open_store(store_path) as other, other.read() as tx:
        assert tx.scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'test.durable'") == 9


def test_deferred_durability_leaves_the_fsync_to_a_shared_waiter(store_path, monkeypatch):
    """The CAPF service's event loop commits without waiting for the disk and awaits one shared fsync
    (``server.service.Durability``) before it answers; commits of other threads still wait themselves."""
    import asyncio
    import threading
    import time

    from _opencapf.server.service import Durability
    from _opencapf.store import sqlite as sqlite_backend

    fsyncs = []  # the commit count each fsync started at: it covers every commit up to that one
    real_fsync = os.fsync

    with open_store(store_path, group_commit=True) as grouped:
        backend = grouped.backend

        def slow_fsync(fd):
            fsyncs.append(backend._written)  # pylint: disable=protected-access
            time.sleep(0.02)
            real_fsync(fd)

        monkeypatch.setattr(sqlite_backend.os, "fsync", slow_fsync)
        with pytest.raises(StoreError, match="group_commit"):
            with open_store(store_path + "-plain") as plain:
                plain.defer_durability()
        grouped.defer_durability()
        with grouped.transaction() as tx:
            audit.record(tx, "test", "test.deferred", "first")
        assert fsyncs == [] and grouped.durable_mark == backend._written  # pylint: disable=protected-access

        def elsewhere():
            with grouped.transaction() as tx:
                audit.record(tx, "test", "test.thread", "other")

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(30)
        assert len(fsyncs) == 1  # another thread's durable commit still waits for its own fsync

        async def sessions():
            durability = Durability(grouped)
            covered = []

            async def session(index):
                await asyncio.sleep(0.001 * (index % 5))
                with grouped.transaction() as tx:
                    audit.record(tx, "test", "test.deferred", str(index))
                mine = grouped.durable_mark
                await durability.wait(mine)
                covered.append((mine, max(fsyncs)))

            await asyncio.gather(*(session(index) for index in range(20)))
            durability.close()
            return covered

        before = len(fsyncs)
        covered = asyncio.run(sessions())
        assert all(mine <= synced for mine, synced in covered)  # none went on before its commit was on disk
        assert 1 <= len(fsyncs) - before < 20  # twenty durable commits, fewer fsyncs
        grouped.defer_durability(False)
        with grouped.transaction() as tx:
            audit.record(tx, "test", "test.deferred", "last")
        assert fsyncs[-1] == backend._written  # pylint: disable=protected-access
    with open_store(store_path) as other, other.read() as tx:
        assert tx.scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'test.deferred'") == 22


@pytest.mark.parametrize("group_commit", [False, True], ids=["plain", "service"])
def test_every_writer_queues_for_the_write_lock_on_a_private_lock_file(store_path, group_commit):
    """Every connection that writes (the CLI's and the modules' as well as the service's) holds a lock
    file exactly while it writes, so that another one waits on it instead of failing on SQLite's busy
    lock; the service's wait in flock and wake when it is released."""
    import fcntl

    from _opencapf.store.sqlite import WRITER_LOCK_SUFFIX

    lock_path = store_path + WRITER_LOCK_SUFFIX
    probe = None
    with open_store(store_path, group_commit=group_commit) as writer:
        assert stat.S_IMODE(os.stat(lock_path).st_mode) == 0o600
        probe = os.open(lock_path, os.O_RDWR)

        def held() -> bool:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(probe, fcntl.LOCK_UN)
            return False

        with writer.read() as tx:
            assert not held()  # reading takes no write lock
        with writer.transaction() as tx:
            audit.record(tx, "test", "test.written", "one")
            assert held()
        assert not held()
        with pytest.raises(RuntimeError):
            with writer.transaction() as tx:
                audit.record(tx, "test", "test.written", "rolled back")
                raise RuntimeError("the caller fails")
        assert not held()  # released on rollback too
        with writer.read() as tx:
            assert tx.scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'test.written'") == 1
    os.close(probe)


def _names(directory):
    return sorted(os.listdir(directory))


def test_read_only_store_reads_without_writing_and_refuses_writes(sqlite_store, store_path):
    """A read-only open (check mode, plans) creates no file, not even -wal/-shm or secret.key, and
    refuses write transactions; with a live writer it reads through the writer's log."""
    store = sqlite_store
    directory = os.path.dirname(store_path)
    store.close()
    before = {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in _names(directory)}
    with open_store(store_path, read_only=True) as reader:
        assert reader.schema_version() == LATEST_VERSION
        assert len(reader.secret()) == 32 and reader.keys_dir == os.path.join(directory, "keys")
        with pytest.raises(StoreError, match="is open read-only; nothing may be written"):
            with reader.transaction():
                pass
    assert {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in _names(directory)} == before
    with open_store(store_path) as writer:
        with writer.transaction() as tx:
            service.write(tx, "test", {"validity_days": 400})
        files = _names(directory)
        assert store_path + "-wal" in [os.path.join(directory, name) for name in files]
        with open_store(store_path, read_only=True) as reader, reader.read() as tx:
            assert service.read(tx)["validity_days"] == 400
        assert _names(directory) == files


def test_read_only_open_of_a_missing_or_newer_store(tmp_path, store_path):
    with pytest.raises(StoreError, match="does not exist; run 'init' first"):
        open_store(str(tmp_path / "absent.db"), read_only=True, create=False)
    with open_store(str(tmp_path / "absent.db"), read_only=True) as empty:
        assert empty.schema_version() == LATEST_VERSION
    assert os.listdir(tmp_path) == []
    _from_the_future(store_path, os.path.dirname(store_path))
    with pytest.raises(StoreError, match="newer than this engine"):
        open_store(store_path, read_only=True)


def test_store_through_a_symlink_uses_the_files_beside_the_real_store(tmp_path):
    real_dir, link_dir = tmp_path / "real", tmp_path / "link"
    real_dir.mkdir(mode=0o700)
    link_dir.mkdir(mode=0o700)
    real = str(real_dir / "capf.db")
    with open_store(real) as store:
        secret = store.secret()
    os.symlink(real, link_dir / "capf.db")
    with open_store(str(link_dir / "capf.db"), group_commit=True) as linked:
        assert linked.secret() == secret and linked.location == real and linked.state_dir == str(real_dir)
        with linked.transaction() as tx:
            service.write(tx, "test", {"validity_days": 400})
        assert os.path.exists(real + "-writer.lock") and os.path.isdir(linked.keys_dir)
    assert os.listdir(link_dir) == ["capf.db"]


def test_a_symbolic_link_at_the_writer_lock_path_is_refused(tmp_path):
    """The writer lock is opened beside the store, never through a link planted there: the store does not
    open, with an error naming the writer lock, and nothing is created where the link points."""
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    path = str(directory / "capf.db")
    open_store(path).close()
    os.unlink(path + "-writer.lock")
    target = tmp_path / "elsewhere"
    os.symlink(target, path + "-writer.lock")
    with pytest.raises(StoreError, match="cannot open the writer lock of store"):
        open_store(path)
    assert not target.exists()


def _certificate(tx, phone_id, kind, serial, status, source, installed_at):
    """A certificate row as the engine wrote it at schema version 3."""
    issuer = "CN=CAPF-test" if source == "capf" else f"troubleshoot:SEP{phone_id:012X}:CN=CAPF-test"
    return tx.insert(
        "INSERT INTO certificates (phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, status, "
        "source, pem, not_before, not_after, issued_at, installed_at, status_changed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (phone_id, kind, serial, issuer, f"fp-{serial}", f"key-{serial}", status, source, "-----BEGIN CERTIFICATE-----",
         "2026-01-01T00:00:00Z", "2031-01-01T00:00:00Z", "2026-01-01T00:00:00Z", installed_at, "2026-01-01T00:00:00Z"))


def _as_before(rows, before):
    """``rows`` reduced to the columns ``before`` had: later migrations add columns of their own."""
    columns = list(before[0]) if before else []
    return [{column: row[column] for column in columns} for row in rows]


def test_migration_4_turns_troubleshoot_copies_into_retrieved_copies_of_their_own_kind(tmp_path):
    """A version 3 store where troubleshoot copies were 'installed' LSC/MIC rows: after the migration
    they are retrieved copies, and every view shows each phone's real current LSC again."""
    path = str(tmp_path / "v3.db")
    backend = SqliteBackend(path)
    assert migrate(backend, target=3) == 3
    with backend.transaction(write=True) as tx:
        deleted, kept, mic_only = (create_phone(tx, f"SEP{index:012X}")["id"] for index in (1, 2, 3))
        # SEP...1: its LSC was deleted from the phone (revoked) after a troubleshoot session read it back.
        _certificate(tx, deleted, "lsc", "a1", "revoked", "capf", "2026-02-01T00:00:00Z")
        _certificate(tx, deleted, "lsc", "a1", "installed", "troubleshoot", "2026-03-01T00:00:00Z")
        _certificate(tx, deleted, "mic", "a2", "installed", "troubleshoot", "2026-03-01T00:00:00Z")
        # SEP...2: installed in February, read back in March.
        _certificate(tx, kept, "lsc", "b1", "installed", "capf", "2026-02-01T00:00:00Z")
        _certificate(tx, kept, "lsc", "b1", "installed", "troubleshoot", "2026-03-01T00:00:00Z")
        # SEP...3: only its MIC was read back.
        _certificate(tx, mic_only, "mic", "c1", "installed", "troubleshoot", "2026-03-01T00:00:00Z")
        before = tx.query("SELECT * FROM certificates WHERE source != 'troubleshoot' ORDER BY id")
    backend.close()
    with open_store(path, actor="test") as store:
        assert store.schema_version() == LATEST_VERSION
        with store.read() as tx:
            rows = tx.query("SELECT * FROM certificates WHERE source != 'troubleshoot' ORDER BY id")
            copies = tx.query("SELECT serial, kind, status, installed_at FROM certificates "
                              "WHERE source = 'troubleshoot' ORDER BY id")
            current = {row["device_name"]: row["lsc"] for row in reports.phone_rows(tx, None)}
            status = phone_query.phone_status(tx, "SEP000000000001")
            installed = reports.phone_rows(tx, phone_query.check_query({"lsc_status": ["installed"]}))
    assert _as_before(rows, before) == before
    assert copies == [
        {"serial": "a1", "kind": "retrieved_lsc", "status": "retrieved", "installed_at": None},
        {"serial": "a2", "kind": "retrieved_mic", "status": "retrieved", "installed_at": None},
        {"serial": "b1", "kind": "retrieved_lsc", "status": "retrieved", "installed_at": None},
        {"serial": "c1", "kind": "retrieved_mic", "status": "retrieved", "installed_at": None}]
    assert {name: lsc and (lsc["serial"], lsc["status"], lsc["installed_at"]) for name, lsc in current.items()} == {
        "SEP000000000001": ("a1", "revoked", "2026-02-01T00:00:00Z"),
        "SEP000000000002": ("b1", "installed", "2026-02-01T00:00:00Z"),
        "SEP000000000003": None}
    assert status["lsc"]["status"] == "revoked"
    assert [row["device_name"] for row in installed] == ["SEP000000000002"]


def test_migration_6_adds_the_session_bound_and_the_chain_leaving_every_row_as_it_was(tmp_path):
    """A version 5 store with an operation in progress and a waiting LSC: after the migration both rows
    are unchanged, with no bound (an older session's) and no chain recorded."""
    path = str(tmp_path / "v5.db")
    backend = SqliteBackend(path)
    assert migrate(backend, target=5) == 5
    with backend.transaction(write=True) as tx:
        phone_id = create_phone(tx, "SEP000000000005", operation="install_upgrade")["id"]
        # As a session of a version 5 engine left it (no bound), which no engine of this version writes.
        tx.execute("UPDATE phones SET operation_status = 'in_progress', last_session_at = '2026-01-01T00:00:00Z'")
        _certificate(tx, phone_id, "lsc", "e1", "issued", "offline_ca", None)
        before = (tx.query("SELECT * FROM phones"), tx.query("SELECT * FROM certificates"))
    backend.close()
    with open_store(path, actor="test") as store:
        assert store.schema_version() == LATEST_VERSION >= 6
        with store.read() as tx:
            after = (tx.query("SELECT * FROM phones"), tx.query("SELECT * FROM certificates"))
    assert [row["operation_live_until"] for row in after[0]] == [None]
    assert [row["chain_pem"] for row in after[1]] == [None]
    for old, new in zip(before, after):
        assert _as_before(new, old) == old


def test_an_operation_in_progress_is_settled_only_past_its_sessions_bound(store):
    """``phones.abandoned`` on each backend: the bound a session records, then the fallback for an
    operation put in progress before sessions recorded one."""
    with store.transaction() as tx:
        for name in ("SEP00000000AA01", "SEP00000000AA02", "SEP00000000AA03"):
            create_phone(tx, name, operation="install_upgrade")
        bounded, unbounded = phones.get(tx, "SEP00000000AA01"), phones.get(tx, "SEP00000000AA02")
        phones.record_session_start(tx, bounded, True, "2026-01-01T01:00:00Z")
        phones.record_session_start(tx, unbounded, True)
        # Its session began long ago, with no bound: a moment no engine path records for a session it starts now.
        tx.execute("UPDATE phones SET last_session_at = '2026-01-01T00:00:00Z' WHERE name = 'SEP00000000AA02'")
    skew = dt.timedelta(minutes=5)
    with store.read() as tx:
        assert phones.abandoned(tx, "2026-01-01T01:00:00Z", dt.timedelta(0)) == []
        assert [row["name"] for row in phones.abandoned(tx, "2026-01-01T01:00:01Z", dt.timedelta(0))] == [
            "SEP00000000AA01"]
        # Another host's clock may run behind by the skew: its bound is surely passed only that much later.
        assert phones.abandoned(tx, "2026-01-01T01:05:00Z", skew) == []
        assert [row["name"] for row in phones.abandoned(tx, "2026-01-01T01:05:01Z", skew)] == ["SEP00000000AA01"]
        # No bound recorded: the session's start and the longest bound (a day) with its margin (15 s).
        assert [row["name"] for row in phones.abandoned(tx, "2026-01-02T00:00:15Z", dt.timedelta(0))] == [
            "SEP00000000AA01"]
        assert [row["name"] for row in phones.abandoned(tx, "2026-01-02T00:00:16Z", dt.timedelta(0))] == [
            "SEP00000000AA01", "SEP00000000AA02"]
