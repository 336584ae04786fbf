"""The CA tests run against both backends: ``store`` (and ``ca_store`` on it) is an SQLite file,
then a PostgreSQL database on a real server."""

from __future__ import annotations

import pytest


@pytest.fixture
def store(store_on_both):
    return store_on_both
