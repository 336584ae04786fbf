"""The modules with a PostgreSQL store (``store: postgresql://...``) on a real server: check mode,
run, idempotence, and the read-only views, exactly as with the SQLite default."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from ansible_collections.opencapf.capf.plugins.modules import capf_info, capf_phone

from _opencapf.ca import authority, lsc
from _opencapf.store import certificates as certificate_records
from _opencapf.store import open_store

INSTALL = {"name": "sep001122334455", "certificate_operation": "install_upgrade", "description": "Reception",
           "device_pool": "HQ", "key_order": "ec_preferred"}


@pytest.fixture
def pg_location(postgres_dsn, state_dir, monkeypatch):
    """A fresh database; the state directory (secret.key, keys/) is given as the environment would."""
    monkeypatch.setenv("OPENCAPF_STATE_DIR", state_dir)
    return postgres_dsn


def _phone_count(location):
    with open_store(location, read_only=True) as store, store.read() as tx:
        return tx.scalar("SELECT count(*) FROM phones")


def test_capf_phone_check_mode_run_and_unchanged(run, pg_location, state_dir):
    args = dict(INSTALL, store=pg_location)
    checked = run(capf_phone, args, check=True, diff=True)
    assert checked["changed"] is True and not checked["failed"] and checked["diff"]["before"] == {}
    assert _phone_count(pg_location) == 0 and not os.path.exists(os.path.join(state_dir, "secret.key"))
    first = run(capf_phone, dict(args, authentication_mode="auth_string", authentication_string="12345678"))
    assert first["changed"] is True and first["status"]["operation_status"] == "pending"
    assert "12345678" not in repr(first)
    again = run(capf_phone, dict(args, authentication_mode="auth_string", authentication_string="12345678"), diff=True)
    assert again["changed"] is False
    assert os.path.exists(os.path.join(state_dir, "secret.key"))
    with open_store(pg_location) as store, store.read() as tx:
        row = tx.one("SELECT key_order, auth_hash FROM phones WHERE name = 'SEP001122334455'")
    assert row["key_order"] == "ec_preferred" and isinstance(row["auth_hash"], bytes)
    absent = run(capf_phone, {"store": pg_location, "name": "SEP001122334455", "state": "absent"})
    assert absent["changed"] is True and _phone_count(pg_location) == 0


def test_capf_info_reads_a_postgresql_store(run, pg_location):
    with open_store(pg_location, actor="test") as store:
        authority.ensure(store)
        installed = lsc.issue(store, "SEP001122334455", ec.generate_private_key(ec.SECP256R1()).public_key())
        with store.transaction() as tx:
            certificate_records.set_status(tx, "test", installed.id, "installed")
    info = run(capf_info, {"store": pg_location}, check=True)
    assert info["changed"] is False and not info["failed"]
    assert info["capf_certificates"][0]["active"] is True
    phones = {phone["device_name"]: phone for phone in info["phones"]}
    assert phones["SEP001122334455"]["lsc"]["serial"] == installed.serial
    only = run(capf_info, {"store": pg_location, "gather": ["phones"], "query": {"name_pattern": "sep0011*",
                                                                                "lsc_status": ["installed"]}})
    assert [phone["device_name"] for phone in only["phones"]] == ["SEP001122334455"]


def test_a_password_in_the_store_option_is_refused_and_not_echoed(run, state_dir, monkeypatch):
    monkeypatch.setenv("OPENCAPF_STATE_DIR", state_dir)
    result = run(capf_info, {"store": "postgresql://capf:pw-s3cret@db.example/capf"})
    assert result["failed"] and "must not contain a password" in result["msg"]
    assert "pw-s3cret" not in repr(result)
