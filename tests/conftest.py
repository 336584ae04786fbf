"""Shared fixtures: the engine on sys.path, fresh stores, key material and openssl helpers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE_PATH = os.path.join(ROOT, "plugins", "module_utils")
if ENGINE_PATH not in sys.path:
    sys.path.insert(0, ENGINE_PATH)

from _opencapf.ca import authority  # noqa: E402
from _opencapf.store import open_store  # noqa: E402

CLI = os.path.join(ROOT, "bin", "opencapf")


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


def run_cli(*args, check=False, env=None, timeout=120):
    """Run the real CLI in a child process; return the CompletedProcess (text)."""
    result = subprocess.run([sys.executable, CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"opencapf {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def openssl(*args, input_bytes=None, check=True):
    result = subprocess.run(["openssl", *args], capture_output=True, input=input_bytes, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result
