"""The write-ahead log of the service's SQLite connection is checkpointed by a thread of its own, never
by the thread that commits (the service's event loop): SQLite's automatic checkpoint would copy the
log's pages into the database and sync both files in the middle of a session's step."""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.audit_vocabulary import extra_actions
from _opencapf.store import audit, open_store
from _opencapf.store import sqlite as sqlite_backend


@pytest.fixture(autouse=True)
def _audit_test_actions():
    with extra_actions("test.written", keys=("note",)):
        yield


def _log_state(store_path: str) -> tuple[int, int]:
    """The write-ahead log's last valid frame and how many of its frames are in the database already,
    from the log's index (the ``-shm`` file: its header's ``mxFrame`` and its checkpoint information's
    ``nBackfill``, in the machine's byte order; sqlite.org/walformat.html)."""
    with open(store_path + "-shm", "rb") as shm:
        header = shm.read(136)
    return struct.unpack_from("=I", header, 16)[0], struct.unpack_from("=I", header, 96)[0]


def _checkpointer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "opencapf-sqlite-checkpoint"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(transactions=st.integers(1, 300), note_bytes=st.integers(10, 3000), durable=st.booleans())
def test_the_committing_thread_never_checkpoints_and_every_page_reaches_the_database(
        tmp_path_factory, transactions, note_bytes, durable):
    """Whatever the service's connection commits, its own commits never move a page of the log into the
    database (its automatic checkpoint is off), and once it stops committing every page of the log
    reaches the database within about a second, moved there by the checkpointer's thread."""
    store_path = str(tmp_path_factory.mktemp("checkpoints") / "capf.db")
    open_store(store_path).close()
    with open_store(store_path, group_commit=True) as store:
        with store.read() as tx:
            assert tx.scalar("PRAGMA wal_autocheckpoint") == 0
        store.defer_durability()  # as the service's event loop: durable commits are synced apart
        checkpointer = store.backend._checkpointer  # pylint: disable=protected-access
        checkpointer.wake = lambda: None  # this test wakes it: between two commits it copies nothing
        checkpointer._woken.clear()  # pylint: disable=protected-access
        last_seen = None
        for index in range(transactions):
            before = _log_state(store_path)
            with store.transaction(durable=durable) as tx:
                audit.record(tx, "test", "test.written", str(index), note="x" * note_bytes)
            frames, backfilled = _log_state(store_path)
            # A commit appends frames; the log restarts only after the checkpointer moved all of it.
            assert frames > before[0] or before[1] == before[0], (index, before, (frames, backfilled))
            last_seen = (frames, backfilled)
        store.sync(store.backend.durable_mark)
        assert last_seen[1] < last_seen[0] or transactions == 0
        # Its next turn, at the latest a second on, moves every page of the log into the database.
        deadline = time.monotonic() + 3 * sqlite_backend.CHECKPOINT_IDLE_SECONDS
        while time.monotonic() < deadline and _log_state(store_path)[1] < _log_state(store_path)[0]:
            time.sleep(0.02)
        frames, backfilled = _log_state(store_path)
        assert backfilled == frames, (frames, backfilled)
        assert checkpointer.checkpoints >= 1
    assert not os.path.exists(store_path + "-wal")  # closed last: the log was moved in whole and removed
    assert _checkpointer_threads() == []


def test_the_log_starts_again_under_a_stream_of_commits(store_path, monkeypatch):
    """However closely the service's commits follow each other, the log is moved into the database whole
    now and then (its last frames under the writer lock), so that it starts again from its beginning and
    its file stays a fraction of what the commits appended (a PASSIVE checkpoint alone, racing the next
    commit every time, would never leave it whole and the file would grow for good)."""
    monkeypatch.setattr(sqlite_backend, "CHECKPOINT_RESTART_FRAMES", 512)  # 2 MiB: a shorter test
    monkeypatch.setattr(sqlite_backend, "CHECKPOINT_EVERY_TRANSACTIONS", 64)
    open_store(store_path).close()
    appended = restarts = 0
    with open_store(store_path, group_commit=True) as store:
        frames = _log_state(store_path)[0]
        for index in range(3000):
            with store.transaction(durable=False) as tx:
                audit.record(tx, "test", "test.written", str(index), note="y" * 2000)
            now = _log_state(store_path)[0]
            restarts += now < frames
            appended += now if now < frames else now - frames
            frames = now
        size = os.path.getsize(store_path + "-wal")
    assert restarts >= 2, restarts
    assert size < appended * (4096 + 24) // 2, (size, appended)
    assert _checkpointer_threads() == []


def test_only_the_service_connection_hands_its_checkpoints_over(store_path):
    """The CLI's and the modules' connections keep SQLite's automatic checkpoint, and start no thread;
    nor does a read-only one."""
    with open_store(store_path) as store:
        with store.read() as tx:
            assert tx.scalar("PRAGMA wal_autocheckpoint") == 1000
        assert store.backend._checkpointer is None  # pylint: disable=protected-access
        assert _checkpointer_threads() == []
