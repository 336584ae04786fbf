"""Shared fixtures: the engine on sys.path, fresh stores, key material and openssl helpers."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE_PATH = os.path.join(ROOT, "plugins", "module_utils")
if ENGINE_PATH not in sys.path:
    sys.path.insert(0, ENGINE_PATH)

from _opencapf.ca import authority  # noqa: E402  pylint: disable=wrong-import-position
from _opencapf.store import open_store  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "state" / "capf.db")


@pytest.fixture
def store(store_path):
    """A fresh, migrated store with no CAPF certificate yet."""
    opened = open_store(store_path, actor="test")
    yield opened
    opened.close()


@pytest.fixture
def ca_store(store):
    """A fresh store with an RSA-2048 CAPF certificate."""
    authority.ensure(store)
    return store
