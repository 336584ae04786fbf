"""Every writer of an SQLite store queues for its write lock on the lock file beside it: a writer that
finds it held (a long ``opencapf apply``) waits its turn instead of failing after SQLite's busy
timeout, up to a bounded wait that ends in an error naming the store and the wait; opening and
reading the store never wait for it; and a connection that holds it never waits for itself.
The same with real processes and the real CLI: tests/e2e/test_writers_wait_for_a_long_apply.py."""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.store_phones import create_phone
from support.stores import held_by_another_writer
from _opencapf.errors import StoreBusy, StoreError
from _opencapf.store import open_store
from _opencapf.store import phones as phone_records
from _opencapf.store.backend import LOOP_WRITER_LOCK_WAIT_SECONDS
from _opencapf.store.sqlite import WRITER_LOCK_SUFFIX, SqliteBackend
from _opencapf.vocabulary import WRITER_LOCK_WAIT_SECONDS


def _names(store):
    with store.read() as tx:
        return sorted(phone_records.by_name(tx))


class _Probe:
    """Another open of the writer lock file: whether someone holds the lock, and holding it."""

    def __init__(self, location: str):
        self.fd = os.open(location + WRITER_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)

    def held(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return False

    def close(self) -> None:
        os.close(self.fd)


def test_a_writer_gives_up_after_a_bounded_wait_naming_the_store_and_the_wait(sqlite_store):
    backend = SqliteBackend(sqlite_store.location, create=False, writer_lock_wait=0.4)
    assert SqliteBackend(sqlite_store.location, create=False).writer_lock_wait == WRITER_LOCK_WAIT_SECONDS
    probe = _Probe(sqlite_store.location)
    try:
        fcntl.flock(probe.fd, fcntl.LOCK_EX)  # another writer holds the lock, far too long
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            with backend.transaction() as tx:
                create_phone(tx, "SEP0000000000F1")
        waited = time.monotonic() - started
        told = re.fullmatch(re.escape(f"store {sqlite_store.location}: waited ") + r"(\d+(?:\.\d)?)" + re.escape(
            " s for its write lock, which another writer (such as a long 'opencapf apply') still holds; nothing "
            "was written; try again once it is done"), str(caught.value))
        assert told, str(caught.value)
        assert 0.4 <= float(told.group(1)) <= round(waited, 1) and waited < 5
        fcntl.flock(probe.fd, fcntl.LOCK_UN)
        with backend.transaction() as tx:  # once it is free, the same connection writes
            create_phone(tx, "SEP0000000000F2")
    finally:
        probe.close()
        backend.close()
    assert _names(sqlite_store) == ["SEP0000000000F2"]


def test_a_writer_waits_for_a_change_held_in_another_thread_then_writes(sqlite_store):
    with held_by_another_writer(sqlite_store.location, sqlite_store.state_dir, "SEP0000000000A1", held_for=30) as release:
        threading.Timer(1.0, release.set).start()
        started = time.monotonic()
        with sqlite_store.transaction() as tx:
            create_phone(tx, "SEP0000000000A2")
        assert time.monotonic() - started >= 0.9, "the writer waited for the holder's commit"
    assert _names(sqlite_store) == ["SEP0000000000A1", "SEP0000000000A2"]


def test_opening_and_reading_the_store_do_not_wait_for_a_writer(sqlite_store):
    with sqlite_store.atomic() as tx:
        create_phone(tx, "SEP0000000000B1")
        started = time.monotonic()
        # Opening a store that is up to date only reads it (no migration is pending).
        with open_store(sqlite_store.location, state_dir=sqlite_store.state_dir, actor="reader") as reader:
            assert _names(reader) == []
        assert time.monotonic() - started < 5
    assert _names(sqlite_store) == ["SEP0000000000B1"]


def test_a_thread_holding_the_lock_is_refused_at_once_through_another_connection(sqlite_store):
    with open_store(sqlite_store.location, state_dir=sqlite_store.state_dir, actor="other") as other:
        with sqlite_store.atomic() as tx:
            create_phone(tx, "SEP0000000000C1")
            started = time.monotonic()
            with pytest.raises(StoreError, match="this thread is writing to it through another connection; a write "
                                                 "through this one would wait for itself"):
                with other.transaction() as other_tx:
                    create_phone(other_tx, "SEP0000000000C2")
            assert time.monotonic() - started < 5
        with other.transaction() as other_tx:  # once the first is done, the other connection writes
            create_phone(other_tx, "SEP0000000000C3")
    assert _names(sqlite_store) == ["SEP0000000000C1", "SEP0000000000C3"]


# A transaction of a connection, and the transactions tried inside it (which SQLite refuses).
_NESTINGS = st.lists(st.tuples(st.sampled_from(["write", "read", "atomic"]),
                               st.lists(st.sampled_from(["write", "read", "atomic"]), max_size=3)),
                     min_size=1, max_size=4)


@pytest.mark.parametrize("group_commit", [False, True], ids=["plain", "service"])
def test_the_lock_is_held_exactly_while_a_write_transaction_is_open_nested_tries_included(store_path, group_commit):
    """Invariant: the writer lock is held while, and only while, a write transaction of the connection
    is open; a transaction tried inside it (refused) neither takes it again nor lets it go."""
    with open_store(store_path, actor="test", group_commit=group_commit) as store:
        backend = store.backend
        probe = _Probe(store.location)
        created = []

        @settings(max_examples=30, deadline=None)
        @given(_NESTINGS)
        def check(nestings):
            for outer, inner in nestings:
                opened = backend.atomic() if outer == "atomic" else backend.transaction(write=outer != "read")
                with opened as tx:
                    for kind in inner:
                        attempt = backend.atomic() if kind == "atomic" else backend.transaction(write=kind != "read")
                        with pytest.raises(StoreError, match="within a transaction"):
                            with attempt:
                                pass
                        assert probe.held() == (outer != "read")
                    if outer != "read":
                        name = "SEP%012X" % len(created)
                        create_phone(tx, name)
                        created.append(name)
                assert not probe.held()

        try:
            check()  # pylint: disable=no-value-for-parameter
        finally:
            probe.close()
        assert _names(store) == sorted(created)


def test_the_service_event_loop_waits_a_short_bound_and_its_other_threads_read_meanwhile(store_path):
    """The service's connection (group commit): its event loop (the deferring thread) gives up on a held
    lock after ``LOOP_WRITER_LOCK_WAIT_SECONDS`` with ``StoreBusy``, nothing written; a store thread of
    the same connection waits up to ``writer_lock_wait``, without keeping the loop from reading meanwhile;
    ``writer_lock_free`` tells, without waiting and without keeping it, whether the lock is free."""
    with open_store(store_path, actor="test", group_commit=True) as store:
        backend = store.backend
        store.defer_durability()  # this thread is the event loop
        probe = _Probe(store.location)
        try:
            assert backend.writer_lock_free() and not probe.held()
            fcntl.flock(probe.fd, fcntl.LOCK_EX)  # another process's long change
            assert not backend.writer_lock_free()
            started = time.monotonic()
            with pytest.raises(StoreBusy, match="another writer .* still holds; nothing was written"):
                with store.transaction() as tx:
                    create_phone(tx, "SEP0000000000D1")
            assert time.monotonic() - started < LOOP_WRITER_LOCK_WAIT_SECONDS + 1
            outcome = {}

            def store_thread():
                try:
                    with store.transaction() as tx:
                        create_phone(tx, "SEP0000000000D2")
                except BaseException as exc:  # pylint: disable=broad-exception-caught
                    outcome["error"] = exc

            thread = threading.Thread(target=store_thread)
            thread.start()
            time.sleep(0.3)
            started = time.monotonic()
            assert _names(store) == []  # the loop reads at once while the store thread waits
            assert not backend.writer_lock_free()
            assert time.monotonic() - started < 0.2
            assert thread.is_alive()
            fcntl.flock(probe.fd, fcntl.LOCK_UN)
            thread.join(10)
            assert "error" not in outcome and _names(store) == ["SEP0000000000D2"]
            assert backend.writer_lock_free() and not probe.held()
        finally:
            store.defer_durability(False)
            probe.close()
