"""Listing phones with their current LSC (capf_info phones, the CAPF report): which LSC is current,
the order by LSC expiry, the result's shape, and the index the listing reads on a migrated store."""

from __future__ import annotations

import gc

import pytest

from support.store_phones import change_phone
from _opencapf import phone_query, reports
from _opencapf.store import certificates, migrate, open_store, phones, postgresql, renewals
from _opencapf.store.migrations import LATEST_VERSION
from _opencapf.store.postgresql import PostgresBackend
from _opencapf.store.sqlite import SqliteBackend

NOW = "2026-11-27T08:00:00Z"
# Each phone's certificates in the order they were recorded, and the LSC expected to be current.
CERTIFICATES = {
    "SEP000000000001": [("lsc", "revoked", "2026-01-01T00:00:00Z"), ("lsc", "installed", "2030-01-01T00:00:00Z")],
    "SEP000000000002": [("lsc", "installed", "2029-01-01T00:00:00Z"), ("lsc", "stale", "2031-01-01T00:00:00Z")],
    "SEP000000000003": [("lsc", "stale", "2031-01-01T00:00:00Z")],
    "SEP000000000004": [("mic", "installed", "2040-01-01T00:00:00Z")],
    "SEP000000000005": [("lsc", "installed", "2032-01-01T00:00:00Z"), ("lsc", "issued", "2028-05-01T00:00:00Z")],
    "SEP000000000006": [("lsc", "expired", "2029-01-01T00:00:00Z")],
    "SEP000000000007": [],
}
CURRENT = {"SEP000000000001": "2030-01-01T00:00:00Z", "SEP000000000002": "2029-01-01T00:00:00Z",
           "SEP000000000005": "2028-05-01T00:00:00Z", "SEP000000000006": "2029-01-01T00:00:00Z"}
# No current LSC first (by name), then soonest expiry first, equal expiries by name.
BY_EXPIRY = ["SEP000000000003", "SEP000000000004", "SEP000000000007", "SEP000000000005", "SEP000000000002",
             "SEP000000000006", "SEP000000000001"]


def _store_at_version_2(location: str) -> None:
    """A store one migration behind, holding the phones and certificates above (rows only: their
    issuer is not ``capf``, so the run's certificate lint does not take them for issued LSCs)."""
    backend = PostgresBackend(location) if postgresql.is_location(location) else SqliteBackend(location)
    migrate(backend, target=2)
    with backend.transaction() as tx:
        for name, certificates in CERTIFICATES.items():
            phone_id = tx.insert("INSERT INTO phones (name, created_at, updated_at) VALUES (?, ?, ?)", (name, NOW, NOW))
            for index, (kind, status, not_after) in enumerate(certificates):
                serial = f"{name[-1]}{index}"
                tx.execute(
                    "INSERT INTO certificates (phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, "
                    "status, source, pem, not_before, not_after, issued_at, installed_at, status_changed_at) "
                    "VALUES (?, ?, ?, 'fixture', ?, ?, ?, 'protocol', 'not a certificate', ?, ?, ?, ?, ?)",
                    (phone_id, kind, serial, "f" + serial, "k" + serial, status, NOW, not_after, NOW,
                     NOW if status in ("installed", "expired") else None, NOW))
    backend.close()


@pytest.fixture
def migrated(store_location, state_dir):
    """The store above, migrated at open; once per backend."""
    _store_at_version_2(store_location)
    with open_store(store_location, state_dir=state_dir, actor="test") as store:
        yield store


@pytest.fixture
def migrated_sqlite(store_path):
    """The store above on SQLite, whose query plans the index test reads."""
    _store_at_version_2(store_path)
    with open_store(store_path, actor="test") as store:
        yield store


def _names(rows):
    return [row["device_name"] for row in rows]


def test_migration_adds_the_index_the_listing_reads_instead_of_certificate_rows(migrated_sqlite):
    assert migrated_sqlite.schema_version() == LATEST_VERSION >= 3
    sql, params, _wanted = phones.listing_statement(None, order="lsc_expiry")
    with migrated_sqlite.read() as tx:
        indexes = {row["name"] for row in tx.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
        plan = [row["detail"] for row in tx.query("EXPLAIN QUERY PLAN " + sql, params)]
    assert "certificates_current_lsc" in indexes
    certificate_steps = [step for step in plan if step.startswith(("SEARCH l ", "SEARCH x ", "SCAN l ", "SCAN x "))]
    assert len(certificate_steps) == 2, plan
    assert all("USING COVERING INDEX certificates_current_lsc" in step for step in certificate_steps), plan


def test_current_lsc_is_the_newest_that_is_not_stale_and_orders_the_listing(migrated):
    with migrated.read() as tx:
        by_name = reports.phone_rows(tx, None)
        by_expiry = reports.phone_rows(tx, None, order="lsc_expiry")
        without = reports.phone_rows(tx, {"lsc_status": ["none"]}, order="lsc_expiry")
        soon = reports.phone_rows(tx, {"lsc_expires_before": "2029-06-01"}, order="lsc_expiry")
        selected = phone_query.select(tx, {"lsc_status": ["issued", "expired"]})
    assert _names(by_name) == sorted(CERTIFICATES)
    assert {row["device_name"]: (row["lsc"] or {}).get("not_after") for row in by_name} == {
        name: CURRENT.get(name) for name in CERTIFICATES}
    assert _names(by_expiry) == BY_EXPIRY
    assert sorted(by_expiry, key=lambda row: row["device_name"]) == by_name
    assert _names(without) == ["SEP000000000003", "SEP000000000004", "SEP000000000007"]
    assert _names(soon) == ["SEP000000000005", "SEP000000000002", "SEP000000000006"]
    assert [(row["name"], row["lsc_serial"]) for row in selected] == [("SEP000000000005", "51"),
                                                                      ("SEP000000000006", "60")]


def test_a_listed_phone_has_its_settings_and_current_lsc(migrated):
    with migrated.read() as tx:
        first, second = reports.phone_rows(tx, {"names": ["SEP000000000001", "SEP000000000007"]})
    assert first == {
        "device_name": "SEP000000000001", "description": "", "model": "", "device_pool": "",
        "security_mode": "non_secure", "certificate_operation": "none", "operation_status": "none",
        "operation_reason": "", "authentication_mode": "null_string", "operation_completes_by": None,
        "locked": False,
        "lsc": {"serial": "11", "status": "installed", "not_after": "2030-01-01T00:00:00Z", "issued_at": NOW,
                "installed_at": NOW},
    }
    assert second["device_name"] == "SEP000000000007" and second["lsc"] is None and second["locked"] is False


def test_named_phones_and_authentication_strings_narrow_the_listing(migrated):
    secret = migrated.secret()
    with migrated.transaction() as tx:
        for name, value in (("SEP000000000001", "1234"), ("SEP000000000005", "1234"), ("SEP000000000002", "5678")):
            change_phone(tx, name, secret=secret, auth_string=value, auth_mode="auth_string")
    # More names than one statement lists: the rows are narrowed after the query.
    names = list(CERTIFICATES) + ["SEP0000000A%04X" % index for index in range(600)]
    with migrated.read() as tx:
        everything = reports.phone_rows(tx, None, order="lsc_expiry")
        named = reports.phone_rows(tx, {"names": names}, order="lsc_expiry")
        matching = reports.phone_rows(tx, {"names": names}, secret=secret, authentication_string="1234",
                                      order="lsc_expiry")
    assert named == everything
    assert matching == [row for row in everything if row["device_name"] in ("SEP000000000001", "SEP000000000005")]
    assert _names(matching) == ["SEP000000000005", "SEP000000000001"]


def test_the_listing_leaves_the_cycle_collector_as_it_found_it(migrated):
    with migrated.read() as tx:
        reports.phone_rows(tx, None, order="lsc_expiry")
        assert gc.isenabled()
        gc.disable()
        try:
            reports.phone_rows(tx, None, order="lsc_expiry")
            assert not gc.isenabled()
        finally:
            gc.enable()


# Histories of a store at schema version 12, each LSC as (serial, status, revocation reason), in the order
# of their ids, and the LSC each phone's current one must be after migration 13. Before it, the current
# LSC was the newest by id that is not stale.
HISTORIES = {
    # two overlapping sessions installed in the other order: the phone holds the older LSC
    "SEP0000000000A1": ([("a1", "installed", None), ("a2", "revoked", "superseded")], "a1"),
    # the usual order: the newer LSC replaced the older one
    "SEP0000000000A2": ([("b1", "revoked", "superseded"), ("b2", "installed", None)], "b2"),
    # a newer LSC sent and not acknowledged yet: it is current, as issued
    "SEP0000000000A3": ([("c1", "installed", None), ("c2", "issued", None)], "c2"),
    # the overlapping order, then an LSC issued later still
    "SEP0000000000A4": ([("d1", "installed", None), ("d2", "revoked", "superseded"), ("d3", "issued", None)], "d3"),
    # revoked on the phone by an operator (the phone still holds it): it stays current
    "SEP0000000000A5": ([("e1", "revoked", "superseded"), ("e2", "revoked", "key_compromise")], "e2"),
}


def test_migration_13_makes_the_lsc_a_phone_installed_last_its_current_one(store_location, state_dir):
    backend = PostgresBackend(store_location) if postgresql.is_location(store_location) else SqliteBackend(store_location)
    migrate(backend, target=12)
    with backend.transaction() as tx:
        for name, (history, _current) in HISTORIES.items():
            phone_id = tx.insert("INSERT INTO phones (name, created_at, updated_at, operation_status) "
                                 "VALUES (?, ?, ?, 'succeeded')", (name, NOW, NOW))
            for serial, status, reason in history:
                tx.execute(
                    "INSERT INTO certificates (phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, "
                    "status, source, pem, not_before, not_after, issued_at, installed_at, status_changed_at, "
                    "revocation_reason, revoked_at) "
                    "VALUES (?, 'lsc', ?, 'fixture', ?, ?, ?, 'protocol', 'not a certificate', ?, ?, ?, ?, ?, ?, ?)",
                    (phone_id, serial, "f" + serial, "k" + serial, status, NOW, "2027-01-01T00:00:00Z", NOW,
                     None if status == "issued" else NOW, NOW, reason, NOW if reason else None))
    backend.close()
    with open_store(store_location, state_dir=state_dir, actor="test") as store:
        assert store.schema_version() == LATEST_VERSION >= 13
        with store.read() as tx:
            current = {row["device_name"]: row["lsc"]["serial"] for row in reports.phone_rows(tx, None)}
            due = {row["name"]: row["lsc_id"] for row in renewals.due(tx, "2028-01-01T00:00:00Z", 100)}
            serials = {row["id"]: row["serial"] for row in tx.query("SELECT id, serial FROM certificates")}
        assert current == {name: expected for name, (_history, expected) in HISTORIES.items()}
        # The renewal scheduler sees the same current LSC: due when it is installed.
        assert {name: serials[lsc_id] for name, lsc_id in due.items()} == {"SEP0000000000A1": "a1",
                                                                           "SEP0000000000A2": "b2"}
        # An LSC issued after the migration is more recent than every one before it.
        with store.transaction() as tx:
            phone = phones.get(tx, "SEP0000000000A1")
            certificates.insert(tx, phone_id=phone["id"], kind="lsc", serial="a3", issuer="fixture", fingerprint="fa3",
                                public_key_fingerprint="ka3", status="issued", source="protocol", pem="-",
                                not_before=NOW, not_after="2027-01-01T00:00:00Z")
        with store.read() as tx:
            (row,) = reports.phone_rows(tx, {"names": ["SEP0000000000A1"]})
        assert (row["lsc"]["serial"], row["lsc"]["status"]) == ("a3", "issued")


def test_migration_14_keeps_a_stale_lsc_out_of_the_phones_lscs_once_revoked(store_location, state_dir):
    """A store at version 13 with a stale LSC newer than the installed one: after migration 14 an
    operator's revocation of it by its serial leaves the installed LSC the phone's current one."""
    backend = PostgresBackend(store_location) if postgresql.is_location(store_location) else SqliteBackend(store_location)
    migrate(backend, target=13)
    with backend.transaction() as tx:
        phone_id = tx.insert("INSERT INTO phones (name, created_at, updated_at) VALUES (?, ?, ?)",
                             ("SEP0000000000B1", NOW, NOW))
        for serial, status, recency in (("f1", "installed", 2), ("f2", "stale", 4)):
            tx.execute(
                "INSERT INTO certificates (phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, "
                "status, source, pem, not_before, not_after, issued_at, installed_at, status_changed_at, recency) "
                "VALUES (?, 'lsc', ?, 'fixture', ?, ?, ?, 'protocol', 'not a certificate', ?, ?, ?, ?, ?, ?)",
                (phone_id, serial, "f" + serial, "k" + serial, status, NOW, "2027-01-01T00:00:00Z", NOW,
                 NOW if status == "installed" else None, NOW, recency))
    backend.close()
    with open_store(store_location, state_dir=state_dir, actor="test") as store:
        assert store.schema_version() == LATEST_VERSION >= 14
        with store.transaction() as tx:
            stale = tx.one("SELECT id, recency FROM certificates WHERE serial = 'f2'")
            assert stale["recency"] == 0
            certificates.revoke(tx, "test", stale["id"], "SEP0000000000B1", "key_compromise")
        with store.read() as tx:
            (row,) = reports.phone_rows(tx, {"names": ["SEP0000000000B1"]})
        assert (row["lsc"]["serial"], row["lsc"]["status"]) == ("f1", "installed")
