"""Revocation and CRL records on both backends: every way an LSC is revoked records its RFC 5280 reason
and time with one audit event; the CRL number only grows; a store revoked under an earlier schema gets
reasons from the migration."""

from __future__ import annotations

import json
import os
import re

import pytest

from support.store_phones import create_phone
from _opencapf.errors import CertificateError
from _opencapf.store import certificates, crls, migrate, open_store, phones
from _opencapf.store.migrations import LATEST_VERSION
from _opencapf.store.postgresql import PostgresBackend
from _opencapf.store.sqlite import SqliteBackend
from _opencapf.store import Store
from _opencapf.vocabulary import REVOCATION_REASONS

NAME = "SEP0011223344AA"


def _lsc(tx, phone_id, serial, status="installed", not_after="2030-01-01T00:00:00Z", issuer="capf"):
    return certificates.insert(tx, phone_id=phone_id, kind="lsc", serial=serial, issuer=issuer, fingerprint=serial * 4,
                               public_key_fingerprint=serial, status=status, source="capf", pem="-",
                               not_before="2026-01-01T00:00:00Z", not_after=not_after)


def _old_lsc(tx, phone_id, serial, status, issuer="capf", not_after="2030-01-01T00:00:00Z", installed=False,
             revoked=None):
    """An LSC row of a store at an earlier schema version, written in its final state: the columns every
    version has (the engine's own writes follow the latest schema), and ``revoked`` (reason, time) at
    version 8 and later."""
    now = "2026-01-01T00:00:00Z"
    certificate_id = tx.insert(
        "INSERT INTO certificates (phone_id, kind, serial, issuer, fingerprint, public_key_fingerprint, status, source, "
        "pem, not_before, not_after, issued_at, installed_at, status_changed_at) "
        "VALUES (?, 'lsc', ?, ?, ?, ?, ?, 'capf', '-', ?, ?, ?, ?, ?)",
        (phone_id, serial, issuer, serial * 4, serial, status, now, not_after, now, now if installed else None, now))
    if revoked is not None:
        tx.execute("UPDATE certificates SET revocation_reason = ?, revoked_at = ? WHERE id = ?", (*revoked, certificate_id))
    return certificate_id


def _events(tx, action):
    return [json.loads(row["details"]) for row in tx.query(
        "SELECT details FROM audit_events WHERE action = ? ORDER BY id", (action,))]


def test_every_revocation_path_records_reason_time_and_one_event(store):
    with store.transaction() as tx:
        phone = create_phone(tx, NAME)
        old, new = _lsc(tx, phone["id"], "a1"), _lsc(tx, phone["id"], "a2", status="issued")
        certificates.install(tx, "test", phone, new)  # superseded
        certificates.revoke_installed(tx, "test", phone)  # deleted from the phone
        third = _lsc(tx, phone["id"], "a3", status="issued")
        certificates.revoke(tx, "test", third, NAME, "key_compromise", "2026-12-01T10:00:00Z")  # by an operator
    with store.read() as tx:
        rows = {row["serial"]: row for row in certificates.revoked_lscs(tx, "capf")}
        events = _events(tx, "certificate.revoked")
        newest = [row["serial"] for row in certificates.revoked_lscs(tx, newest=2)]
    assert newest == ["a2", "a1"]  # a3 was revoked as of an earlier time
    assert {serial: row["revocation_reason"] for serial, row in rows.items()} == {
        "a1": "superseded", "a2": "cessation_of_operation", "a3": "key_compromise"}
    assert all(row["revoked_at"] for row in rows.values())
    assert rows["a3"]["revoked_at"] == "2026-12-01T10:00:00Z"
    assert sorted(event["reason"] for event in events) == ["cessation_of_operation", "key_compromise", "superseded"]
    assert old in {event["certificate_id"] for event in events}


def test_a_reason_outside_the_vocabulary_is_refused(store):
    with store.transaction() as tx:
        phone = create_phone(tx, NAME)
        lsc = _lsc(tx, phone["id"], "b1")
    with pytest.raises(CertificateError, match="revocation reason must be one of"):
        with store.transaction() as tx:
            certificates.revoke(tx, "test", lsc, NAME, "certificate_hold")
    assert "certificate_hold" not in REVOCATION_REASONS


def test_expired_unrevoked_and_the_revocation_mark(store):
    with store.transaction() as tx:
        phone = create_phone(tx, NAME)
        expired = _lsc(tx, phone["id"], "c1", not_after="2026-01-02T00:00:00Z")
        _lsc(tx, phone["id"], "c2", status="stale", not_after="2026-01-02T00:00:00Z")
        _lsc(tx, phone["id"], "c3", not_after="2031-01-01T00:00:00Z")
        mark = certificates.revocation_mark(tx, "capf")
    with store.read() as tx:
        assert [row["id"] for row in certificates.expired_unrevoked(tx, "2026-06-01T00:00:00Z")] == [expired]
    with store.transaction() as tx:
        certificates.revoke(tx, "test", expired, NAME, "cessation_of_operation")
    with store.read() as tx:
        assert certificates.expired_unrevoked(tx, "2026-06-01T00:00:00Z") == []
        assert certificates.revocation_mark(tx, "capf") != mark


def test_crl_numbers_only_grow_and_the_newest_is_served(store):
    with store.read() as tx:
        assert crls.latest(tx) is None and crls.next_number(tx) == 1
    for _round in range(13):
        with store.transaction() as tx:
            number = crls.next_number(tx)
            crls.insert(tx, "test", number=number, signer_fingerprint="f", this_update="2026-12-01T00:00:00Z",
                        next_update="2026-12-08T00:00:00Z", entries=0, revocation_mark="0:", der=bytes([number]))
    with store.read() as tx:
        latest = crls.latest(tx)
        assert latest["number"] == 13 and latest["der"] == bytes([13])
        assert crls.next_number(tx) == 14
        assert tx.scalar("SELECT COUNT(*) FROM crls") == 11  # the newest and the ten before it


def test_migration_gives_earlier_revocations_a_reason(tmp_path):
    directory = tmp_path / "old"
    directory.mkdir(mode=0o700)
    path = str(directory / "capf.db")
    backend = SqliteBackend(path)
    migrate(backend, target=6)
    with Store(backend, str(directory), "test") as old:
        with old.transaction() as tx:
            phone = create_phone(tx, NAME)
            replaced = _old_lsc(tx, phone["id"], "d1", "revoked", installed=True)
            deleted = _old_lsc(tx, phone["id"], "d2", "revoked", installed=True)
    with open_store(path, actor="test") as store:
        assert store.schema_version() == LATEST_VERSION
        with store.read() as tx:
            rows = {row["id"]: row for row in certificates.revoked_lscs(tx)}
    assert rows[replaced]["revocation_reason"] == "superseded"
    assert rows[deleted]["revocation_reason"] == "cessation_of_operation"
    assert rows[deleted]["revoked_at"]


def test_removing_a_phone_revokes_its_lscs_and_keeps_them_on_the_crl_list(store):
    with store.transaction() as tx:
        phone = create_phone(tx, NAME)
        replaced = _lsc(tx, phone["id"], "e1", status="issued")
        current = _lsc(tx, phone["id"], "e2", status="issued")
        certificates.install(tx, "test", phone, replaced)
        certificates.install(tx, "test", phone, current)
        waiting = _lsc(tx, phone["id"], "e3", status="issued")
        mark = certificates.revocation_mark(tx, "capf")
    assert waiting
    with store.transaction() as tx:
        assert phones.delete(tx, "test", NAME)
    with store.read() as tx:
        listed = {row["serial"]: (row["device_name"], row["revocation_reason"]) for row in certificates.revoked_lscs(tx, "capf")}
        assert certificates.revocation_mark(tx, "capf") != mark
        assert tx.scalar("SELECT COUNT(*) FROM certificates") == 0
    assert listed == {"e1": (NAME, "superseded"), "e2": (NAME, "cessation_of_operation"),
                      "e3": (NAME, "cessation_of_operation")}


@pytest.mark.both_backends
def test_each_capf_certificate_has_its_own_series_of_crls(store):
    def sign(signer):
        with store.transaction() as tx:
            number = crls.next_number(tx)
            crls.insert(tx, "test", number=number, signer_fingerprint=signer, this_update="2026-12-01T00:00:00Z",
                        next_update="2026-12-08T00:00:00Z", entries=number, revocation_mark="0:", der=bytes([number]))

    with store.read() as tx:
        assert crls.newest_per_signer(tx) == [] and crls.latest(tx, "old") is None
    sign("old")
    for _round in range(12):
        sign("new")  # many CRLs of the active certificate never push out the retired one's
    sign("old")
    with store.read() as tx:
        newest = [(row["signer_fingerprint"], row["number"]) for row in crls.newest_per_signer(tx)]
        assert newest == [("old", 14), ("new", 13)]
        assert crls.latest(tx, "new")["der"] == bytes([13]) and crls.latest(tx)["number"] == 14
        assert crls.der(tx, 1) == bytes([1]) and crls.der(tx, 99) is None
        kept = [row["number"] for row in tx.query("SELECT number FROM crls WHERE signer_fingerprint = 'new' ORDER BY number")]
    assert kept == list(range(3, 14))  # the newest and the ten before it, of that certificate


def _revocation_answers(store, marks: bool = True) -> dict:
    """Every answer the CRL and the revocation listings read from the store, per issuer and overall
    (``marks``: with the revocation mark of each issuer, which reads columns of later migrations)."""
    with store.read() as tx:
        answers = {"all": certificates.revoked_lscs(tx), "newest": certificates.revoked_lscs(tx, newest=3),
                   "unrevoked": certificates.expired_unrevoked(tx, "2027-01-01T00:00:00Z")}
        for issuer in ("capf", "other", "nobody"):
            answers[issuer] = (certificates.revoked_lscs(tx, issuer, with_pem=True),
                               certificates.revocation_mark(tx, issuer) if marks else None)
    return answers


def _remove_phone_at_version_11(tx, name: str) -> None:
    """What removing a phone did at schema version 11: its revoked LSCs kept in ``removed_phone_lscs``."""
    phone = phones.get(tx, name)
    certificates.revoke_installed(tx, "test", phone, statuses=("installed", "issued"))
    tx.execute("INSERT INTO removed_phone_lscs (device_name, serial, issuer, source, pem, not_after, revoked_at, "
               "revocation_reason) SELECT ?, serial, issuer, source, pem, not_after, revoked_at, revocation_reason "
               "FROM certificates WHERE phone_id = ? AND kind = 'lsc' AND status = 'revoked'", (name, phone["id"]))
    tx.execute("DELETE FROM phones WHERE id = ?", (phone["id"],))


def test_the_revoked_index_migration_keeps_every_revocation_answer(store_location, state_dir):
    """A store at schema version 11 (before the revoked-LSC index) with revoked, installed, issued and stale LSCs of two
    issuers, and a removed phone's: after the migration the CRL and revocation queries answer as
    before, and an LSC revoked afterwards joins them."""
    if store_location.startswith("postgresql:"):
        backend = PostgresBackend(store_location)
    else:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        backend = SqliteBackend(store_location)
    migrate(backend, target=11)
    with Store(backend, state_dir, "test") as old:
        with old.transaction() as tx:
            for index, issuer in enumerate(("capf", "other", "capf")):
                phone = create_phone(tx, f"SEP00112233445{index}")
                serial = f"{index}f"
                # the first one installed, then superseded by the second one's installation
                _old_lsc(tx, phone["id"], serial + "1", "revoked", issuer, "2026-06-01T00:00:00Z", installed=True,
                         revoked=("superseded", "2026-02-01T00:00:00Z"))
                _old_lsc(tx, phone["id"], serial + "2", "installed", issuer, installed=True)
                _old_lsc(tx, phone["id"], serial + "3", "stale", issuer)
                _old_lsc(tx, phone["id"], serial + "4", "revoked", issuer,
                         revoked=("key_compromise", f"2026-11-0{index + 1}T00:00:00Z"))
                if index == 0:
                    _old_lsc(tx, phone["id"], "ex", "issued", not_after="2026-07-01T00:00:00Z")  # expired, not revoked
            _remove_phone_at_version_11(tx, "SEP001122334451")  # its revoked LSCs stay listed
        before = _revocation_answers(old, marks=False)
    assert len(before["all"]) == 7 and before["unrevoked"]
    with open_store(store_location, state_dir=state_dir, actor="test") as store:
        assert store.schema_version() == LATEST_VERSION
        assert _revocation_answers(store, marks=False) == before
        before = _revocation_answers(store)
        with store.transaction() as tx:
            phone = phones.get(tx, "SEP001122334452")
            certificates.revoke_installed(tx, "test", phone)
        after = _revocation_answers(store)
    assert [row["serial"] for row in after["capf"][0]] == [row["serial"] for row in before["capf"][0]] + ["2f2"]
    assert after["capf"][1] != before["capf"][1] and after["other"] == before["other"]


class _Explaining:
    """A read transaction that, asked a query, records the query plan of it instead."""

    def __init__(self, tx, postgresql: bool):
        self._tx, self._postgresql, self.plans = tx, postgresql, []
        if postgresql:
            tx.execute("SET LOCAL enable_seqscan = off")  # tiny tables: without it every plan scans

    def query(self, sql, params=()):
        rows = self._tx.query(("EXPLAIN " if self._postgresql else "EXPLAIN QUERY PLAN ") + sql, params)
        self.plans.append(" | ".join(str(row.get("QUERY PLAN", row.get("detail"))) for row in rows))
        return []

    def one(self, sql, params=()):
        self.query(sql, params)
        return {"n": 0, "last": None} if "COUNT(*)" in sql else None  # a revocation mark; no issuer to step to


@pytest.mark.both_backends
def test_the_revocation_queries_of_one_issuer_read_an_index(store):
    """The revocation listings, the CRL of an issuer and its revocation mark find the revoked LSCs by
    an index, never by reading every certificate: on SQLite the listings by the revoked-LSC index, the
    CRL and the mark by the index of the revoked LSCs CRLs still list (``delisted_after_crl`` NULL), and
    the CRL those delisted that are still valid by the index of the delisted ones by notAfter: neither
    reads the LSCs revoked over the years that CRLs no longer list. The newest revoked LSCs of every
    issuer (capf_info) by the index of the newest, on both backends."""
    sqlite = isinstance(store.backend, SqliteBackend)
    with store.read() as tx:
        explaining = _Explaining(tx, not sqlite)
        certificates.revoked_lscs(explaining, "capf")
        certificates.revoked_lscs(explaining, "capf", with_pem=True, newest=10)
        certificates.revoked_lscs(explaining, newest=10)  # capf_info's: every issuer's
        listings = len(explaining.plans)
        certificates.crl_entries(explaining, "capf", "2026-12-01T00:00:00Z")
        certificates.revocation_mark(explaining, "capf")
    assert len(explaining.plans) == listings + 3
    assert "certificates_revoked_newest" in explaining.plans[listings - 1], explaining.plans[listings - 1]
    for index, plan in enumerate(explaining.plans):
        if not sqlite:
            assert "Seq Scan" not in plan and "Index" in plan, plan
            continue
        # SCAN c0: of the rows a part of the newest ones keeps (LIMIT); the first step of the removed
        # phones' issuers reads one entry of their index (LIMIT 1).
        assert not [step for step in plan.split(" | ") if step.startswith("SCAN") and not re.fullmatch(
            r"SCAN [cr]\d+|SCAN removed_phone_lscs USING COVERING INDEX removed_phone_lscs_issuer", step)], plan
        if index < listings:
            assert "USING INDEX certificates_revoked" in plan or "USING COVERING INDEX removed_phone_lscs_issuer" in plan, plan
        elif index == listings:
            for index_name in ("certificates_crl_entries (issuer=?)", "certificates_delisted (issuer=? AND not_after>?)",
                               "removed_phone_lscs_crl_entries (issuer=?)", "removed_phone_lscs_delisted (issuer=? AND not_after>?)"):
                assert f"USING INDEX {index_name}" in plan, plan
        else:
            assert "INDEX certificates_crl_entries (issuer=?)" in plan or \
                "INDEX removed_phone_lscs_crl_entries (issuer=?)" in plan, plan


def test_issued_installed_and_stale_lscs_stay_out_of_the_revoked_index(sqlite_store):
    """Issuing and installing an LSC writes no page of the revoked-LSC index (each page a commit
    changes is one more page of the write-ahead log): its entries are the revoked certificates, counted
    on SQLite by the cells of its pages."""
    with sqlite_store.transaction() as tx:
        for index in range(40):
            phone = create_phone(tx, f"SEP0011223345{index:02d}")
            first = _lsc(tx, phone["id"], f"g{index}a", status="issued")
            certificates.install(tx, "test", phone, first)
            _lsc(tx, phone["id"], f"g{index}b", status="stale")
            if index % 4 == 0:
                certificates.install(tx, "test", phone, _lsc(tx, phone["id"], f"g{index}c", status="issued"))
    with sqlite_store.read() as tx:
        revoked = tx.scalar("SELECT COUNT(*) FROM certificates WHERE status = 'revoked'")
        entries = tx.scalar("SELECT SUM(ncell) FROM dbstat WHERE name = 'certificates_revoked' AND pagetype = 'leaf'")
        assert tx.scalar("SELECT COUNT(*) FROM certificates") == 90
    assert revoked == 10 and entries == revoked
