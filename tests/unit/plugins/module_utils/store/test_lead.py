"""``Store.try_lead``: of every connection to one store, in this process or in others, one leads a
duty at a time, until it closes the store or its process ends; the lock file is private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from support.tools import ENGINE_PATH
from _opencapf.errors import LeadLost, StoreError
from _opencapf.store import open_store, service
from _opencapf.store.sqlite import LEAD_LOCK_SUFFIX


def _lock_path(store_path, name="scheduler"):
    return store_path + LEAD_LOCK_SUFFIX.format(name=name)


CHILD = """
import os, sys
from _opencapf.store import open_store
store = open_store(sys.argv[1], create=False)
led = store.try_lead(sys.argv[2])
if sys.argv[3] == "close":
    store.close()
os._exit(0 if led else 1)  # without closing (\"keep\"): the kernel releases the lock with the process
"""


def _in_child(store_path, name="scheduler", end="close"):
    """Whether a fresh connection in another process can take the lead (its exit status says)."""
    done = subprocess.run([sys.executable, "-c", CHILD, store_path, name, end], env={**os.environ,
                          "PYTHONPATH": ENGINE_PATH}, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def _taken_eventually(store, name, seconds=15.0) -> bool:
    """Ask for the lead until given: a PostgreSQL server ends the session of a client that went away
    (and with it that session's advisory locks) a moment after the client, not at once."""
    deadline = time.monotonic() + seconds
    while not store.try_lead(name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_connection_leads_until_it_closes(store, store_location, state_dir, store_path):
    other = open_store(store_location, state_dir=state_dir, create=False)
    try:
        assert store.try_lead("scheduler") and store.try_lead("scheduler")  # kept, asked again
        assert not other.try_lead("scheduler")  # another connection of this process
        assert not _in_child(store_location)  # another process
        assert other.try_lead("expiry")  # each duty has its own lead
        if store_location == store_path:
            assert stat.S_IMODE(os.stat(_lock_path(store_path)).st_mode) == 0o600
        store.close()
        deadline = time.monotonic() + 15  # the server ends the closed session's locks a moment later
        while not _in_child(store_location) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.monotonic() < deadline  # the lead is free again (and the child's ended with it)
        assert _taken_eventually(other, "scheduler")
    finally:
        other.close()


def test_the_lead_of_a_process_that_ends_is_free(store_location, store):
    assert _in_child(store_location, end="keep")
    assert _taken_eventually(store, "scheduler")


def test_a_symbolic_link_at_the_lock_path_is_refused(sqlite_store, store_path, tmp_path):
    store = sqlite_store
    target = tmp_path / "elsewhere"
    os.symlink(target, _lock_path(store_path))
    with pytest.raises(StoreError, match="cannot open the scheduler lead lock"):
        store.try_lead("scheduler")
    assert not target.exists()


@pytest.mark.parametrize("name", ["", "../x", "Scheduler", "a" * 33])
def test_a_lead_name_must_be_a_plain_word(store, name):
    with pytest.raises(StoreError, match="lead name"):
        store.try_lead(name)


def test_a_duty_writes_only_while_this_connection_holds_its_lead(store_location, state_dir):
    """``Store.leading``: every write begun inside verifies the lead on the connection it commits on; one
    not held fails with ``LeadLost`` and writes nothing; reads are not asked for it."""
    first = open_store(store_location, state_dir=state_dir, actor="first")
    second = open_store(store_location, state_dir=state_dir, actor="second")
    try:
        assert first.try_lead("scheduler") and first.holds_lead("scheduler")
        assert not second.holds_lead("scheduler") and not second.holds_lead("monitor")
        with second.leading("scheduler"):
            with pytest.raises(LeadLost, match="no longer leads the scheduler duty"):
                with second.transaction() as tx:
                    service.write(tx, "second", {"validity_days": 800})
            with pytest.raises(LeadLost):
                with second.atomic() as tx:
                    service.write(tx, "second", {"validity_days": 800})
            with second.read() as tx:
                assert service.read(tx)["validity_days"] != 800
        with first.leading("scheduler"):
            with first.transaction() as tx:
                service.write(tx, "first", {"validity_days": 700})
            with pytest.raises(StoreError, match="cannot run inside it"):
                with first.leading("monitor"):
                    pass
        with second.read() as tx:
            assert service.read(tx)["validity_days"] == 700
    finally:
        first.close()
        second.close()
