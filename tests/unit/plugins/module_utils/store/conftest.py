"""Every store test runs against both backends: the ``store`` here is an SQLite file, then a
PostgreSQL database on a real server; ``sqlite_store`` is for what only SQLite has (WAL, fsyncs)."""

from __future__ import annotations

import pytest

from _opencapf.store import open_store


@pytest.fixture
def store(store_on_both):
    return store_on_both


@pytest.fixture
def sqlite_store(store_path):
    opened = open_store(store_path, actor="test")
    yield opened
    opened.close()
