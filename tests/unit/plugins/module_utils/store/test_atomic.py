"""An atomic change (``Store.atomic``) is a change of several steps made all or nothing: every
transaction opened inside joins one write transaction of the store, which nobody else sees until it
commits once at the end, and which is rolled back entirely on any error (one a step caught included).
It holds the lock every writer takes for its whole length; a file it writes beside the store appears
only once it commits; and it does not nest with itself or with a rehearsal."""

from __future__ import annotations

import fcntl
import os

import pytest

from _opencapf.errors import StoreError
from _opencapf.store import open_store, postgresql
from _opencapf.store import phones as phone_records
from _opencapf.store.sqlite import WRITER_LOCK_SUFFIX
from support.store_phones import create_phone
from support.stores import dump

pytestmark = pytest.mark.both_backends


def _names(store):
    with store.read() as tx:
        return sorted(phone_records.by_name(tx))


def test_steps_join_one_transaction_that_others_see_only_once_it_commits(store):
    with open_store(store.location, state_dir=store.state_dir, actor="other") as other:
        with store.atomic():
            with store.transaction() as tx:
                create_phone(tx, "SEP0000000000A1")
            with store.transaction(durable=False) as tx:
                create_phone(tx, "SEP0000000000A2")
            assert _names(store) == ["SEP0000000000A1", "SEP0000000000A2"], "a step sees the steps before it"
            assert _names(other) == [], "nobody else sees the change before it commits"
        assert _names(other) == ["SEP0000000000A1", "SEP0000000000A2"]


def test_an_error_rolls_back_every_step(store):
    with store.transaction() as tx:
        create_phone(tx, "SEP0000000000B1")
    before = dump(store)
    with pytest.raises(ZeroDivisionError):
        with store.atomic():
            with store.transaction() as tx:
                create_phone(tx, "SEP0000000000B2")
            with store.transaction() as tx:
                phone_records.delete(tx, "test", "SEP0000000000B1")
            raise ZeroDivisionError
    assert dump(store) == before
    with store.transaction() as tx:  # the store is usable again, outside any atomic change
        create_phone(tx, "SEP0000000000B3")
    assert _names(store) == ["SEP0000000000B1", "SEP0000000000B3"]


def test_a_failed_step_whose_error_was_caught_still_fails_the_change(store):
    before = dump(store)
    with pytest.raises(StoreError, match="a step of an atomic change failed; nothing was written"):
        with store.atomic():
            with store.transaction() as tx:
                create_phone(tx, "SEP0000000000C1")
            try:
                with store.transaction() as tx:
                    create_phone(tx, "SEP0000000000C2")
                    raise ValueError("a step fails half-way")
            except ValueError:
                pass
    assert dump(store) == before


def test_nesting_with_itself_or_a_rehearsal_is_refused(store):
    with store.atomic():
        with pytest.raises(StoreError, match="already under way"):
            with store.atomic():
                pass
        with pytest.raises(StoreError, match="cannot run inside an atomic change"):
            with store.rehearsal():
                pass
        with store.transaction() as tx:
            create_phone(tx, "SEP0000000000D1")
    with store.rehearsal():
        with pytest.raises(StoreError, match="cannot run inside a rehearsal"):
            with store.atomic():
                pass
    assert _names(store) == ["SEP0000000000D1"]
    with open_store(store.location, state_dir=store.state_dir, read_only=True) as read_only:
        with pytest.raises(StoreError, match="read-only"):
            with read_only.atomic():
                pass


def _writers_lock_is_free(store) -> bool:
    """Whether another writer could take the lock every writer takes now (without waiting for it)."""
    if postgresql.is_location(store.location):
        with open_store(store.location, state_dir=store.state_dir, actor="other", read_only=True) as other:
            with other.read() as tx:
                return bool(tx.scalar("SELECT pg_try_advisory_xact_lock(?)", (postgresql.WRITE_LOCK_KEY,)))
    # Every writer queues on the writer lock file, then meets SQLite's own lock.
    fd = os.open(store.location + WRITER_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_it_holds_the_lock_every_writer_takes_for_its_whole_length(store):
    assert _writers_lock_is_free(store)
    with store.atomic():
        assert not _writers_lock_is_free(store)
        with store.transaction() as tx:
            create_phone(tx, "SEP0000000000E1")
        assert not _writers_lock_is_free(store)
    assert _writers_lock_is_free(store)


def test_a_file_written_beside_it_appears_only_once_it_commits(store, tmp_path):
    directory = tmp_path / "out"
    directory.mkdir(mode=0o700)
    path = directory / "strings.csv"
    with pytest.raises(ZeroDivisionError):
        with store.atomic():
            store.write_file(str(path), b"rolled back\n")
            raise ZeroDivisionError
    assert os.listdir(directory) == [], "nothing stays of a change that did not commit"
    with store.atomic():
        store.write_file(str(path), b"committed\n")
        assert not path.exists()
    assert path.read_bytes() == b"committed\n" and os.listdir(directory) == ["strings.csv"]
    assert os.stat(path).st_mode & 0o777 == 0o600
    store.write_file(str(path), b"outside\n")  # outside an atomic change: at once
    assert path.read_bytes() == b"outside\n"
