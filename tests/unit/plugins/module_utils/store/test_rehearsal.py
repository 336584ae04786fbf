"""A rehearsal (``Store.rehearsal``) is the real change of several steps, rolled back: every
transaction opened inside it sees what the steps before did, and after it the store is as it was,
with nothing written to it or beside it, on a read-only store too."""

from __future__ import annotations

import os

import pytest

from support.store_phones import create_phone
from _opencapf.errors import StoreError
from _opencapf.store import open_store
from _opencapf.store import phones as phone_records

pytestmark = pytest.mark.both_backends


def _files(directory):
    if not os.path.isdir(directory):
        return {}
    return {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in sorted(os.listdir(directory))}


def test_steps_of_a_rehearsal_see_each_other_and_nothing_stays(store):
    with store.transaction() as tx:
        create_phone(tx, "SEP0000000000D1")
    location, state_dir = store.location, store.state_dir
    files = _files(state_dir)
    with open_store(location, state_dir=state_dir, read_only=True) as read_only:
        with read_only.rehearsal():
            assert read_only.rehearsing
            with read_only.transaction() as tx:
                create_phone(tx, "SEP0000000000D2")
                phone_records.delete(tx, "test", "SEP0000000000D1")
            with read_only.read() as tx:
                assert sorted(phone_records.by_name(tx)) == ["SEP0000000000D2"]
            with pytest.raises(StoreError, match="already under way"):
                with read_only.rehearsal():
                    pass
        assert not read_only.rehearsing
        with read_only.read() as tx:
            assert sorted(phone_records.by_name(tx)) == ["SEP0000000000D1"]
        with pytest.raises(StoreError, match="read-only"):
            with read_only.transaction():
                pass
    with store.read() as tx:
        assert sorted(phone_records.by_name(tx)) == ["SEP0000000000D1"]
    assert _files(state_dir) == files


def test_an_error_in_a_rehearsal_leaves_the_store_usable(store):
    with pytest.raises(ZeroDivisionError):
        with store.rehearsal():
            with store.transaction() as tx:
                create_phone(tx, "SEP0000000000D3")
            raise ZeroDivisionError
    with store.transaction() as tx:
        create_phone(tx, "SEP0000000000D4")
    with store.read() as tx:
        assert sorted(phone_records.by_name(tx)) == ["SEP0000000000D4"]
