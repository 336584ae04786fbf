"""The CAPF service's wait for the disk (``server.service.Durability``): whatever happens to one
session waiting on a shared fsync, every other session it covers goes on only once its commits
are on disk, and learns of a failed fsync."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from support.audit_vocabulary import extra_actions
from _opencapf.errors import StoreError
from _opencapf.server.service import Durability
from _opencapf.store import audit, open_store
from _opencapf.store import sqlite as sqlite_backend


@pytest.fixture(autouse=True)
def _audit_test_actions():
    """The events these tests record of their own (``support.audit_vocabulary``)."""
    with extra_actions("test.durability"):
        yield


def _commit(store, detail: str) -> int:
    with store.transaction() as tx:
        audit.record(tx, "test", "test.durability", detail)
    return store.durable_mark


def test_a_cancelled_waiter_leaves_the_shared_fsync_to_the_others(store_path, monkeypatch):
    synced = []  # the commit count each finished fsync covers
    real_fsync = os.fsync

    with open_store(store_path, group_commit=True) as store:
        backend = store.backend

        def slow_fsync(fd):
            written = backend._written  # pylint: disable=protected-access
            time.sleep(0.05)
            real_fsync(fd)
            synced.append(written)

        monkeypatch.setattr(sqlite_backend.os, "fsync", slow_fsync)
        store.defer_durability()

        async def scenario():
            durability = Durability(store)
            marks = [_commit(store, str(index)) for index in range(5)]
            waiters = [asyncio.ensure_future(durability.wait(mark)) for mark in marks]
            await asyncio.sleep(0.01)  # the fsync is under way
            waiters[0].cancel()
            done = []
            for mark, waiter in zip(marks[1:], waiters[1:]):
                await waiter
                done.append(max(synced, default=0) >= mark)
            with pytest.raises(asyncio.CancelledError):
                await waiters[0]
            assert done == [True] * 4
            durability.close()

        try:
            asyncio.run(scenario())
        finally:
            store.defer_durability(False)


def test_a_failed_fsync_reaches_every_waiter_and_the_next_wait_tries_again(store_path, monkeypatch):
    real_fsync = os.fsync
    failing = [True]

    def fsync(fd):
        if failing[0]:
            time.sleep(0.02)
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    with open_store(store_path, group_commit=True) as store:
        monkeypatch.setattr(sqlite_backend.os, "fsync", fsync)
        store.defer_durability()

        async def scenario():
            durability = Durability(store)
            marks = [_commit(store, str(index)) for index in range(3)]
            results = await asyncio.gather(*(durability.wait(mark) for mark in marks), return_exceptions=True)
            assert all(isinstance(result, (StoreError, OSError)) for result in results)
            failing[0] = False
            await durability.wait(marks[-1])
            durability.close()

        try:
            asyncio.run(scenario())
        finally:
            store.defer_durability(False)
