"""A CAPF CRL stays as large as its live entries over years of renewals, and never drops one early.

Every renewal revokes the LSC it supersedes and every expired LSC is revoked, so a CRL that listed each
revoked LSC until its signer retires would grow by one entry per renewal, and each refresh would read
every LSC ever revoked. RFC 5280 3.3: "An entry MUST NOT be removed from the CRL until it appears on one
regularly scheduled CRL issued beyond the revoked certificate's validity period." A walk of renewals,
revocations, removals, expiries, CAPF certificate rotations and renewals (a new certificate for the
same name and key: the same CRL issuer for relying parties) and CRL refreshes at a clock moving forward
keeps, on both backends, for every CRL of a CAPF certificate:

1. every revoked LSC of its issuer (name and key) whose validity has not ended at its thisUpdate is on
   it: none is dropped early;
2. a revoked LSC left out of it was on an earlier CRL of that issuer issued after its notAfter and
   after its revocation time (that CRL listed it: one issued after a revocation committed while it was
   being signed does not count);
3. once a CRL listed it so, no later CRL of that issuer lists it; and nothing not revoked is listed;

and after every LSC's validity the CRLs end up empty. And (4) the work of a refresh is bounded by the
entries CRLs list: thousands of LSCs revoked and expired long ago add no SQLite VM steps to it.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.capf_validity import upload_capf
from support.stores import steps_per_transaction
from support.store_phones import create_phone
from support.tools import openssl
from _opencapf import revocation
from _opencapf.ca import crl as crl_module
from _opencapf.ca import keys, lsc
from _opencapf.dependencies import NameOID, x509
from _opencapf.store import certificates as certificate_records
from _opencapf.store import open_store
from _opencapf.store import phones as phone_records
from _opencapf.store.sqlite import SqliteBackend
from _opencapf.vocabulary import format_utc, utc_now

NAMES = ("SEP0000000C0001", "SEP0000000C0002", "SEP0000000C0003")
SUBJECTS = tuple(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Growth CAPF {n}")]) for n in (1, 2))
_runs = itertools.count(1)

STEPS = st.one_of(
    st.tuples(st.just("renew"), st.integers(0, len(NAMES) - 1), st.integers(1, 3)),  # a new LSC of 1-3 days
    st.tuples(st.sampled_from(["revoke", "remove", "stale"]), st.integers(0, len(NAMES) - 1), st.just(0)),
    st.tuples(st.just("tick"), st.just(0), st.integers(1, 4 * 24 * 60)),  # the duty, minutes later
    st.tuples(st.sampled_from(["sign", "rotate", "twin"]), st.just(0), st.just(0)),
)


def _identity(certificate, lsc_issuer: bool = False) -> tuple[bytes, bytes]:
    """How relying parties know a CRL's issuer (a CAPF certificate), or with ``lsc_issuer`` an LSC's
    issuer: a name and a key identifier."""
    if lsc_issuer:
        key_id = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        return certificate.issuer.public_bytes(), key_id
    key_id = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return certificate.subject.public_bytes(), key_id


class _Walk:
    def __init__(self, store, key):
        self.store, self.key = store, key
        self.now = utc_now().replace(microsecond=0)
        self.capf_key = keys.generate("ec256")
        self.subject = SUBJECTS[0]
        upload_capf(store, self.now - dt.timedelta(minutes=1), 1095, key=self.capf_key, subject=self.subject)
        self.seen: set[int] = set()  # CRL numbers checked
        self.beyond: dict[tuple, set[str]] = {}  # CRL issuer identity: serials a CRL of it listed beyond validity
        self.identities: dict[str, tuple] = {}  # LSC serial: its issuer's identity
        self.crls_checked = 0

    def step(self, verb: str, index: int, value: int) -> None:
        name = NAMES[index]
        with self.store.read() as tx:
            phone = phone_records.get(tx, name)
        if verb == "renew":
            if phone is None:
                with self.store.transaction() as tx:
                    create_phone(tx, name)
            issued = lsc.issue(self.store, name, self.key.public_key(), source="capf", validity_days=value, now=self.now)
            with self.store.transaction() as tx:
                certificate_records.install(tx, "test", phone_records.get(tx, name), issued.id)  # supersedes
        elif verb == "stale" and phone is not None:  # issued, never installed: not revoked, on no CRL
            lsc.issue(self.store, name, self.key.public_key(), source="capf", validity_days=1, now=self.now)
        elif verb == "revoke" and phone is not None:
            revocation.revoke_lsc(self.store, name, "key_compromise")
        elif verb == "remove" and phone is not None:
            with self.store.transaction() as tx:
                phone_records.delete(tx, "test", name)
        elif verb == "tick":
            self.now += dt.timedelta(minutes=value)
            revocation.run_duty(self.store, self.now)
        elif verb == "sign":
            revocation.refresh_crls(self.store, self.now, force=True)
        elif verb in ("rotate", "twin"):
            if verb == "rotate":
                self.capf_key, self.subject = keys.generate("ec256"), SUBJECTS[(SUBJECTS.index(self.subject) + 1) % 2]
            upload_capf(self.store, self.now - dt.timedelta(minutes=1), 1095, key=self.capf_key, subject=self.subject,
                        uploaded_at=self.now)

    def check(self, context) -> None:
        """The CRLs signed since the last check (one refresh at most: one round of CRLs) against the rule."""
        with self.store.read() as tx:
            signers = {row["fingerprint"]: _identity(x509.load_pem_x509_certificate(row["pem"].encode("ascii")))
                       for row in tx.query("SELECT fingerprint, pem FROM capf_certificates")}
            crls = [row for row in tx.query("SELECT number, signer_fingerprint, this_update, der FROM crls ORDER BY number")
                    if row["number"] not in self.seen]
            revoked = {row["serial"]: row for row in certificate_records.revoked_lscs(tx, "capf", with_pem=True)}
        for serial, row in revoked.items():
            if serial not in self.identities:
                self.identities[serial] = _identity(x509.load_pem_x509_certificate(row["pem"].encode("ascii")), True)
        gone = {identity: set(serials) for identity, serials in self.beyond.items()}  # before this round
        for row in crls:
            self.seen.add(row["number"])
            self.crls_checked += 1
            identity = signers[row["signer_fingerprint"]]
            crl = x509.load_der_x509_crl(bytes(row["der"]))
            this_update = crl.last_update_utc
            listed = {format(entry.serial_number, "x") for entry in crl}
            expected = {serial for serial in revoked if self.identities[serial] == identity}
            what = (row["number"], context)
            assert listed <= expected, ("a CRL lists an LSC not revoked", sorted(listed - expected), what)
            valid = {serial for serial in expected
                     if dt.datetime.fromisoformat(revoked[serial]["not_after"]) >= this_update}
            assert valid <= listed, ("(1) a revoked LSC still valid is not on the CRL", sorted(valid - listed), what)
            early = expected - listed - gone.get(identity, set())
            assert not early, ("(2) a revoked LSC left the CRL before a CRL of its issuer listed it beyond its validity "
                               "and its revocation", sorted(early), what)
            back = listed & gone.get(identity, set())
            assert not back, ("(3) a revoked LSC listed beyond its validity by an earlier CRL is listed again",
                              sorted(back), what)
            self.beyond.setdefault(identity, set()).update(
                serial for serial in listed
                if this_update > max(dt.datetime.fromisoformat(revoked[serial]["not_after"]),
                                     dt.datetime.fromisoformat(revoked[serial]["revoked_at"])))

    def finish(self) -> None:
        """Past every LSC's validity: the duty revokes the LSCs still valid, the next CRL lists them beyond
        it, and the one after lists nothing; nothing is left for a refresh to read."""
        self.now += dt.timedelta(days=4)
        revocation.run_duty(self.store, self.now)
        self.check("past every validity")
        for minutes in (1, 2):
            revocation.refresh_crls(self.store, self.now + dt.timedelta(minutes=minutes), force=True)
            self.check(f"{minutes} minute(s) later")
        with self.store.read() as tx:
            served, _withheld = revocation.served_crls(tx, self.now + dt.timedelta(minutes=2))
            listed = {fingerprint: row["entries"] for fingerprint, row in served.items()}
            assert certificate_records.crl_entries(tx, "capf", format_utc(self.now)) == []
            assert certificate_records.revocation_mark(tx, "capf").startswith("0:")
        assert served and set(listed.values()) == {0}, listed


@pytest.mark.both_backends
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEPS, min_size=3, max_size=25))
def test_a_crl_lists_a_revoked_lsc_until_a_crl_listed_it_beyond_its_validity(
        more_store_locations, state_dir, ec_phone_key, steps):
    with open_store(more_store_locations(f"growth-{next(_runs)}"), state_dir=state_dir, actor="test") as store:
        walk = _Walk(store, ec_phone_key)
        for step in steps:
            walk.step(*step)
            walk.check(step)
        walk.finish()


# A phone renewed every day for a month, the duty ticking twice a day: its superseded LSCs leave the CRL.
@pytest.mark.both_backends
def test_a_month_of_daily_renewals_keeps_the_crl_at_its_live_entries(store, ec_phone_key):
    walk = _Walk(store, ec_phone_key)
    sizes = []
    for day in range(30):
        walk.step("renew", 0, 1)
        for _half in range(2):
            walk.step("tick", 0, 12 * 60)
            walk.check(("day", day))
        sizes.append(revocation.current_crls(store, walk.now)[0]["entries"])
    # Each LSC lives a day and is superseded after one: on a CRL while valid, and once beyond; never more.
    assert max(sizes) <= 3, sizes
    walk.finish()


@pytest.mark.both_backends
def test_a_revocation_dated_before_a_crl_that_did_not_list_it_is_listed_on_the_next(store, ec_phone_key):
    """A revocation recorded with a time before the thisUpdate of a CRL that does not list it (the
    revoking host's clock behind the signer's, or a revocation committed while the CRL was being signed):
    that CRL, issued after the LSC's notAfter and after its revocation time, did not list it, so the next
    CRL still does; the one after it no more. Read with ``openssl crl -text``."""
    walk = _Walk(store, ec_phone_key)
    walk.step("renew", 0, 1)
    with store.read() as tx:
        phone = phone_records.get(tx, NAMES[0])
        row = certificate_records.for_phone(tx, phone["id"], "lsc")[0]
    not_after = dt.datetime.fromisoformat(row["not_after"])
    first = not_after + dt.timedelta(hours=1)
    revocation.refresh_crls(store, first, force=True)  # after its notAfter; it is not revoked yet
    with store.transaction() as tx:  # revoked by a host whose clock is two hours behind
        certificate_records.revoke(tx, "test", row["id"], NAMES[0], "key_compromise",
                                   format_utc(first - dt.timedelta(minutes=30)))
    texts = []
    for hours in (2, 3):
        signed = revocation.refresh_crls(store, not_after + dt.timedelta(hours=hours), force=True)
        with store.read() as tx:
            der = tx.one("SELECT der FROM crls WHERE number = ?", (signed[0]["number"],))["der"]
        texts.append(openssl("crl", "-inform", "DER", "-noout", "-text", input_bytes=bytes(der)).stdout.decode())
    serial = format(int(row["serial"], 16), "X")
    serial = serial if len(serial) % 2 == 0 else "0" + serial
    assert f"Serial Number: {serial}" in texts[0] and "Key Compromise" in texts[0], texts[0]
    assert "Serial Number" not in texts[1] and "No Revoked Certificates" in texts[1], texts[1]


@pytest.mark.both_backends
def test_a_host_whose_clock_is_behind_lists_again_a_revoked_lsc_valid_at_its_clock(store, ec_phone_key):
    """(1) whatever the clocks: a host whose clock runs two days ahead lists a revoked LSC beyond its
    validity, and the CRLs after it leave it out; a host with a right clock, at which the LSC is still
    valid, lists it again."""
    walk = _Walk(store, ec_phone_key)
    walk.step("renew", 0, 1)
    walk.step("revoke", 0, 0)
    with store.read() as tx:
        (row,) = certificate_records.revoked_lscs(tx, "capf")
    serial = row["serial"]
    ahead = walk.now + dt.timedelta(days=2)
    numbers = [crl["number"] for moment in (ahead, ahead + dt.timedelta(minutes=1), walk.now)
               for crl in revocation.refresh_crls(store, moment, force=True)]
    with store.read() as tx:
        listed = [serial in {entry["serial"] for entry in crl_module.describe(bytes(tx.one(
            "SELECT der FROM crls WHERE number = ?", (number,))["der"]))["entries"]} for number in numbers]
    assert listed == [True, False, True], (serial, listed)


def test_a_refresh_reads_no_lsc_that_crls_no_longer_list(store, ec_phone_key):
    """(4) SQLite's virtual machine steps, counted by its progress handler, of a CRL refresh with a few
    revoked LSCs listed, before and after 4,000 LSCs revoked and expired long ago (each superseded by a
    renewal) were listed once beyond their validity: those add no work to it."""
    walk = _Walk(store, ec_phone_key)  # SQLite: the test is not marked for both backends
    for index in range(3):
        walk.step("renew", index, 3)
        walk.step("renew", index, 3)  # the first one superseded: listed, still valid
    with store.read() as tx:
        template = certificate_records.for_phone(tx, phone_records.get(tx, NAMES[0])["id"], "lsc")[0]
    connection = store.backend._connection  # pylint: disable=protected-access
    calls = [0]

    def count():
        calls[0] += 1
        return 0

    def steps_of_a_refresh(now) -> int:
        calls[0] = 0
        connection.set_progress_handler(count, 1)  # every step: a small statement takes fewer than 100
        try:
            assert revocation.refresh_crls(store, now, force=True)
        finally:
            connection.set_progress_handler(None, 0)
        return calls[0]

    baseline = steps_of_a_refresh(walk.now)
    long_ago = walk.now - dt.timedelta(days=400)
    with store.transaction() as tx:
        phone = create_phone(tx, "SEP0000000C0F00")
        for index in range(4000):
            certificate_id = certificate_records.insert(
                tx, phone_id=phone["id"], kind="lsc", serial=f"e{index:05x}", issuer="capf",
                fingerprint=f"f{index}", public_key_fingerprint=f"k{index}", status="installed", source="capf",
                pem=template["pem"], not_before=format_utc(long_ago), not_after=format_utc(long_ago + dt.timedelta(days=1)))
            certificate_records.revoke(tx, "test", certificate_id, "SEP0000000C0F00", "superseded",
                                       format_utc(long_ago + dt.timedelta(hours=12)))
    listed = revocation.refresh_crls(store, walk.now + dt.timedelta(minutes=1), force=True)
    assert listed[0]["entries"] == 4000 + 3  # never listed beyond their validity before: listed once
    after = steps_of_a_refresh(walk.now + dt.timedelta(minutes=2))
    # Reading 4,000 revoked LSCs with their PEMs takes hundreds of thousands of steps.
    assert after < baseline + 5000, (baseline, after)
    with store.read() as tx:
        assert len(certificate_records.crl_entries(tx, "capf", format_utc(walk.now))) == 3


OLD_KEPT, OLD_REMOVED = 4000, 1000


@pytest.mark.both_backends
def test_the_first_refresh_of_a_store_whose_crls_listed_every_revoked_lsc_delists_a_batch_per_transaction(
        store, ec_phone_key):
    """A store of a version whose CRLs left no revoked LSC out (before schema version 19): 5,000 LSCs
    revoked and expired long ago (superseded by renewals; 1,000 of a phone removed since), every one listed
    by its newest CRL, issued after them, and none delisted. Its first CRL refresh (5) does no more work in
    any one transaction than a batch of them takes (SQLite's virtual machine steps of each): none reads or
    delists them all under the lock every writer waits for; and (6) ends where one refresh in one
    transaction does: every one of them delisted (the CRL before listed each beyond its validity and its
    revocation, RFC 5280 3.3), the revoked LSCs still valid listed by the CRL it signs. The steps are
    counted on SQLite; on PostgreSQL the refresh ends the same."""
    walk = _Walk(store, ec_phone_key)
    for index in range(3):
        walk.step("renew", index, 3)
        walk.step("renew", index, 3)  # the first one superseded: listed, still valid
    with store.read() as tx:
        template = certificate_records.for_phone(tx, phone_records.get(tx, NAMES[0])["id"], "lsc")[0]
        live = sorted(row["id"] for row in certificate_records.revoked_lscs(tx, "capf"))
    long_ago = walk.now - dt.timedelta(days=400)
    with store.transaction() as tx:
        for name, count, prefix in (("SEP0000000C0F00", OLD_KEPT, "a"), ("SEP0000000C0F01", OLD_REMOVED, "b")):
            phone = create_phone(tx, name)
            for index in range(count):
                moment = long_ago + dt.timedelta(minutes=index)
                certificate_id = certificate_records.insert(
                    tx, phone_id=phone["id"], kind="lsc", serial=f"{prefix}e{index:05x}", issuer="capf",
                    fingerprint=f"f{name}{index}", public_key_fingerprint=f"k{index}", status="installed",
                    source="capf", pem=template["pem"], not_before=format_utc(moment),
                    not_after=format_utc(moment + dt.timedelta(days=1)))
                certificate_records.revoke(tx, "test", certificate_id, name, "superseded",
                                           format_utc(moment + dt.timedelta(hours=12)))
        phone_records.delete(tx, "test", "SEP0000000C0F01")
    listed = revocation.refresh_crls(store, walk.now + dt.timedelta(minutes=1), force=True)
    assert listed[0]["entries"] == OLD_KEPT + OLD_REMOVED + 3
    walk.check("the CRL before the upgrade")
    with store.transaction() as tx:  # as schema version 19 found them: listed by that CRL, none delisted
        tx.execute("UPDATE certificates SET delisted_after_crl = NULL")
        tx.execute("UPDATE removed_phone_lscs SET delisted_after_crl = NULL")
        old = {row["id"] for row in certificate_records.crl_entries(tx, "capf", format_utc(walk.now))} - set(live)
    assert len(old) == OLD_KEPT + OLD_REMOVED
    if isinstance(store.backend, SqliteBackend):
        with steps_per_transaction(store) as transactions:
            signed = revocation.refresh_crls(store, walk.now + dt.timedelta(minutes=2), force=True)
    else:
        signed, transactions = revocation.refresh_crls(store, walk.now + dt.timedelta(minutes=2), force=True), None
    # Reading or delisting 5,000 revoked LSCs takes hundreds of thousands of steps; a batch of 500 of them,
    # tens of thousands. The first read, whether a CRL is due, counts the revoked LSCs CRLs list (the
    # revocation mark: an index of them alone) without a lock; every read and write after it is bounded.
    if transactions is not None:
        heaviest = max(transactions[1:], key=lambda transaction: transaction[1])
        assert heaviest[1] < 50000, (heaviest, transactions)
        writes = [steps for begin, steps, _statements in transactions if begin == "BEGIN IMMEDIATE"]
        assert len(writes) >= (OLD_KEPT + OLD_REMOVED) // revocation.DELIST_BATCH, transactions
    assert signed[0]["entries"] == 3
    with store.read() as tx:
        assert sorted(row["id"] for row in certificate_records.crl_entries(tx, "capf", format_utc(walk.now))) == live
        delisted = {row["id"] for row in tx.query("SELECT id FROM certificates WHERE delisted_after_crl IS NOT NULL")}
        delisted |= {-row["id"] for row in tx.query("SELECT id FROM removed_phone_lscs WHERE delisted_after_crl IS NOT NULL")}
    assert delisted == old
    walk.check("the first refresh after the upgrade")
    walk.finish()
