"""Migration 21: a store whose earlier engine left key requests ``pending`` after their phone's operation
succeeded (an earlier session's request still at a CA when the phone got its LSC elsewhere) holds none
once migrated. Each is ``superseded`` with its ``csr.superseded`` audit event, as a success supersedes it
now; a request that may still be answered for its phone (its operation waits for the phone's next
session, or failed and runs again) is left as it is. The phone's pending requests are counted at a
session's end from the index the migration adds. On SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from _opencapf import enrolment
from _opencapf.store import migrate, open_store, phones, postgresql
from _opencapf.store import csrs as csr_records
from _opencapf.store.migrations import LATEST_VERSION, LEFT_AT_SUCCESS, MIGRATION_ACTOR
from _opencapf.store.postgresql import PostgresBackend
from _opencapf.store.sqlite import SqliteBackend

NOW = "2026-06-01T00:00:00Z"
# name: (operation status, requests as (status, online CA reference)), and the statuses after the migration
PHONES = {
    # its LSC from the CAPF after the online CA held its request: left pending for good
    "SEP0000000021A1": ("succeeded", [("superseded", None), ("pending", "held-1"), ("issued", None)],
                        ["superseded", "superseded", "issued"]),
    # the offline CA's request, never signed before the phone got its LSC elsewhere
    "SEP0000000021A2": ("succeeded", [("pending", None)], ["superseded"]),
    # deferred: the phone comes back for it
    "SEP0000000021B1": ("pending", [("pending", "held-2")], ["pending"]),
    # failed: its next session adopts it, or starts with a new key
    "SEP0000000021B2": ("failed", [("pending", None)], ["pending"]),
}


def _backend(location: str):
    return PostgresBackend(location) if postgresql.is_location(location) else SqliteBackend(location)


def test_migration_21_supersedes_the_requests_left_pending_after_a_success(store_location, state_dir):
    backend = _backend(store_location)
    migrate(backend, target=20)
    ids = {}
    with backend.transaction() as tx:
        for name, (status, requests, _after) in PHONES.items():
            phone_id = tx.insert("INSERT INTO phones (name, created_at, updated_at, operation, operation_status) "
                                 "VALUES (?, ?, ?, 'install_upgrade', ?)", (name, NOW, NOW, status))
            ids[name] = [tx.insert(
                "INSERT INTO csrs (phone_id, public_key_fingerprint, public_key, csr_pem, status, external_ref, "
                "created_at, updated_at) VALUES (?, ?, ?, 'not a request', ?, ?, ?, ?)",
                (phone_id, f"{name}-{index}", b"key", request_status, reference, NOW, NOW))
                for index, (request_status, reference) in enumerate(requests)]
    backend.close()
    with open_store(store_location, state_dir=state_dir, actor="test") as store:
        assert store.schema_version() == LATEST_VERSION >= 21
        with store.read() as tx:
            statuses = {row["id"]: (row["status"], row["reason"]) for row in tx.query("SELECT id, status, reason FROM csrs")}
            events = tx.query("SELECT at, actor, subject, details FROM audit_events WHERE action = 'csr.superseded' "
                              "ORDER BY id")
            applied = tx.scalar("SELECT applied_at FROM schema_migrations WHERE version = 21")
            waiting = {row["id"] for row in csr_records.pending_online(tx)}
            counted = {name: phones.get_for_session(tx, name, at_end=True)["pending_requests"] for name in PHONES}
        for name, (_status, _requests, after) in PHONES.items():
            assert [statuses[csr_id][0] for csr_id in ids[name]] == after, name
        superseded = [ids["SEP0000000021A1"][1], ids["SEP0000000021A2"][0]]
        assert all(statuses[csr_id][1] == LEFT_AT_SUCCESS for csr_id in superseded)
        assert [(event["at"], event["actor"], event["subject"], json.loads(event["details"])) for event in events] == [
            (applied, MIGRATION_ACTOR, name, {"csr_id": csr_id, "reason": LEFT_AT_SUCCESS})
            for name, csr_id in zip(("SEP0000000021A1", "SEP0000000021A2"), superseded)]
        # The enrolment service polls the deferred phone's request only; the offline export lists the failed one's.
        assert waiting == {ids["SEP0000000021B1"][0]}
        assert [item.device_name for item in enrolment.pending_csrs(store)] == ["SEP0000000021B2"]
        assert counted == {"SEP0000000021A1": 0, "SEP0000000021A2": 0, "SEP0000000021B1": 1, "SEP0000000021B2": 1}


@pytest.mark.both_backends
def test_a_sessions_end_counts_the_phones_pending_requests_from_their_index(store):
    """The count that ``phones.get_for_session`` asks with the phone's row at a session's end is a seek in
    ``csrs_phone_status``, not a read of the pending requests of every phone."""
    on_postgresql = store.location.startswith("postgresql:")
    with store.read() as tx:
        if on_postgresql:
            tx.execute("SET LOCAL enable_seqscan = off")  # tiny tables: without it every plan scans
        sql = phones._GET_FOR_SESSION_END  # pylint: disable=protected-access
        plan = " | ".join(str(row.get("QUERY PLAN", row.get("detail"))) for row in tx.query(
            ("EXPLAIN " if on_postgresql else "EXPLAIN QUERY PLAN ") + sql, ("SEP0000000021C1",)))
    assert "csrs_phone_status" in plan, plan
