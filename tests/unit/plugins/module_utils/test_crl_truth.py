"""The CRLs a cluster signs tell the truth, whichever host signs them and whatever happens meanwhile.

Two store connections opened as ``serve`` opens them (group commit) play two hosts of a cluster on one
store, each with its own clock: the time they share plus an offset of its own (ahead or behind, up to
``MAX_OFFSET``, and set anew by a step, as an NTP correction does). Any interleaving of LSC issuances
and installations (a newer LSC supersedes the installed one), revocations by serial and by phone,
delete operations, removals of phones, expiries (the revocation duty with ``revoke_after_expiry``),
CAPF certificate regenerations and renewals (a new certificate for the same key), CRL signings by
either host, some of them while the other host's revocation is committing (the signing host read the
store before the revocation and waits for the store's write lock while it commits), and changes of a
host's clock keeps these invariants, on both backends:

1. every CRL lists exactly the LSCs that verify under its issuer's key and whose revocation committed
   before the CRL did, but for those that a CRL of the same issuer before it listed beyond their
   validity (its thisUpdate after their notAfter and after their revocation time), which may leave
   (RFC 5280 3.3): none is missing before that (also a removed phone's), none that left comes back, and
   none is listed that is not revoked; a revocation is final (the revoked serials only grow);
2. each CRL committed later has a higher number, whichever host's clock is ahead; no number is ever
   given to two different CRLs; each is signed with its issuer's key, names its issuer and carries the
   issuer's key identifier; its thisUpdate is the signing host's clock (never after it, even when the
   CRL before it came from a host whose clock runs ahead), and nextUpdate is ``crl_validity_hours``
   later; no entry's revocationDate is after the CRL's thisUpdate: it is the time the revocation was
   recorded (the revoking host's clock), or that thisUpdate when the revoking host's clock ran ahead of
   the signer's, or the date the CRL before it of the same issuer gave when that is earlier (a date
   never moves later from one CRL to the next);
3. once the revocation duty has run on a host, each CAPF certificate that keeps a CRL serves the one
   with the highest number (``current_crls``, what the files publish, and the same bytes fetched over
   HTTP from the service's responder at its ``/capf-ID.crl``, and at ``/capf.crl`` for the active one)
   with thisUpdate <= that host's now + ``CLOCK_SKEW`` and now < nextUpdate, that lists exactly its
   revoked LSCs but those that may have left (1)."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import sqlite3
import threading
import time
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _opencapf import revocation
from _opencapf.ca import authority, lsc
from _opencapf.ca import crl as crl_module
from _opencapf.cli.main import main as cli_main
from _opencapf.dependencies import x509
from _opencapf.errors import NotFoundError
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import audit
from _opencapf.store import certificates as certificate_records
from _opencapf.store import open_store
from _opencapf.store import phones as phone_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import CLOCK_SKEW, format_utc, utc_now

from support.capf_validity import renew_capf
from support.crl_http import CrlHttp, active_crl
from support.tools import openssl


pytestmark = pytest.mark.both_backends

VALIDITY_HOURS = 24
MAX_OFFSET = 3 * 3600  # seconds a host's clock runs ahead of or behind the time the hosts share
_phones = itertools.count(1)
REVOCATIONS = ("serial", "phone", "delete", "remove")
STEP = st.one_of(
    st.tuples(st.just("issue"), st.integers(0, 1), st.integers(0, 2)),
    st.tuples(st.sampled_from(REVOCATIONS), st.integers(0, 1), st.integers(0, 2)),
    st.tuples(st.just("race"), st.integers(0, 1), st.integers(0, 2), st.sampled_from(REVOCATIONS)),
    st.tuples(st.sampled_from(["sign", "expire", "regenerate", "renew"]), st.integers(0, 1)),
    st.tuples(st.just("clock"), st.integers(0, 1), st.integers(-MAX_OFFSET, MAX_OFFSET)),
)


class _Cluster:
    """Two hosts on one store, the time they share (it only moves on), the offset of each host's clock
    from it, and what was seen so far."""

    def __init__(self, store):
        self.watcher = store  # a third connection: it only looks
        self.hosts = [open_store(store.location, state_dir=store.state_dir, actor=f"host-{index}", group_commit=True)
                      for index in range(2)]
        self.now = utc_now().replace(microsecond=0)
        self.offsets = [dt.timedelta(0), dt.timedelta(0)]
        self.crls: dict[int, bytes] = {}  # every CRL number ever seen: its DER
        self.series: dict[str, list[int]] = {}  # CAPF certificate fingerprint: its CRL numbers as they appeared
        self.revoked: set[str] = set()  # every serial seen revoked
        self.revoked_at: dict[str, dt.datetime] = {}  # the revocation time each serial was recorded with
        self.not_after: dict[str, dt.datetime] = {}  # the notAfter of each revoked serial
        self.beyond: dict[str, set[str]] = {}  # CAPF certificate fingerprint: serials a CRL of it listed beyond validity
        self.left: dict[str, set[str]] = {}  # CAPF certificate fingerprint: serials its CRLs left out since
        self.kept: set[str] = set()  # serials of LSCs of removed phones (revoked by the removal)
        self.signed_by: dict[tuple[str, str], bool] = {}
        self.responder = CrlHttp(self.hosts[0])  # the service's HTTP CRL responder, on host 0

    def clock(self, host) -> dt.datetime:
        """Host ``host``'s (an index or a store) idea of now."""
        return self.now + self.offsets[host if isinstance(host, int) else self.hosts.index(host)]

    def close(self) -> None:
        self.responder.close()
        for host in self.hosts:
            host.close()

    # -- the truth, from the LSCs themselves ---------------------------------------------------

    def capf_certificates(self) -> dict[str, x509.Certificate]:
        return {row["fingerprint"]: x509.load_pem_x509_certificate(row["pem"].encode("ascii"))
                for row in authority.history(self.watcher)}

    def _verifies(self, serial: str, pem: str, fingerprint: str, capf) -> bool:
        key = (serial, fingerprint)
        if key not in self.signed_by:
            try:
                x509.load_pem_x509_certificate(pem.encode("ascii")).verify_directly_issued_by(capf)
                self.signed_by[key] = True
            except Exception:  # pylint: disable=broad-except  # InvalidSignature, or a key of another type
                self.signed_by[key] = False
        return self.signed_by[key]

    def revoked_by_issuer(self, capfs) -> dict[str, set[str]]:
        with self.watcher.read() as tx:
            rows = certificate_records.revoked_lscs(tx, "capf", with_pem=True)
        serials = {row["serial"] for row in rows}
        self.revoked_at = {row["serial"]: dt.datetime.fromisoformat(row["revoked_at"]) for row in rows}
        self.not_after = {row["serial"]: dt.datetime.fromisoformat(row["not_after"]) for row in rows}
        assert self.revoked <= serials, ("a revocation was undone", sorted(self.revoked - serials))
        assert self.kept <= serials, ("a removed phone's revoked LSC left the list", sorted(self.kept - serials))
        self.revoked = serials
        return {fingerprint: {row["serial"] for row in rows if self._verifies(row["serial"], row["pem"], fingerprint,
                                                                              capf)}
                for fingerprint, capf in capfs.items()}

    # -- invariants 1 and 2, after each step ---------------------------------------------------

    def check_new_crls(self, step, signer_now: dt.datetime) -> None:
        """The CRLs committed since the last look, signed (if any) by a host whose clock read ``signer_now``."""
        capfs = self.capf_certificates()
        expected = self.revoked_by_issuer(capfs)
        with self.watcher.read() as tx:
            rows = tx.query("SELECT number, signer_fingerprint, this_update, next_update, der FROM crls "
                            "ORDER BY number")
        for row in rows:
            der = bytes(row["der"])
            number, fingerprint = row["number"], row["signer_fingerprint"]
            if number in self.crls:
                assert self.crls[number] == der, ("two CRLs with one number", number)
                continue
            assert all(number > seen for seen in self.crls), ("a CRL number went back", number, step)
            previous = self.series.get(fingerprint, [])[-1:]
            self.crls[number] = der
            self.series.setdefault(fingerprint, []).append(number)
            crl = x509.load_der_x509_crl(der)
            _check_revocation_dates(crl, self.revoked_at, x509.load_der_x509_crl(self.crls[previous[0]])
                                    if previous else None, (number, step))
            capf = capfs[fingerprint]
            assert crl.is_signature_valid(capf.public_key()) and crl.issuer == capf.subject
            assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number
            aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
            assert aki == capf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            assert crl.last_update_utc <= signer_now, ("thisUpdate after the signer's clock", number, step,
                                                       crl.last_update_utc, signer_now)
            assert crl.last_update_utc == signer_now, ("thisUpdate is not the signer's clock", number, step)
            assert crl.next_update_utc > crl.last_update_utc
            assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(hours=VALIDITY_HOURS)
            assert (format_utc(crl.last_update_utc), format_utc(crl.next_update_utc)) == (row["this_update"],
                                                                                          row["next_update"])
            self.check_entries(crl, fingerprint, expected[fingerprint], (number, step))

    def check_entries(self, crl, fingerprint: str, expected: set[str], context) -> None:
        """CRL ``crl`` of ``fingerprint`` lists the revoked LSCs ``expected`` of that CAPF certificate,
        but those that one of its CRLs before listed beyond their validity and may have left, never one
        that left; and nothing that is not revoked."""
        listed = {format(entry.serial_number, "x") for entry in crl}
        beyond, left = self.beyond.setdefault(fingerprint, set()), self.left.setdefault(fingerprint, set())
        assert listed <= expected, (f"CRL {context} of {fingerprint[:16]}: not revoked {sorted(listed - expected)}")
        assert expected - listed <= beyond, (
            f"CRL {context} of {fingerprint[:16]}: missing {sorted(expected - listed - beyond)}, never listed on a CRL "
            "of its issuer beyond its validity and revocation")
        assert not listed & left, (f"CRL {context} of {fingerprint[:16]}: {sorted(listed & left)} left and came back")
        left |= expected - listed
        beyond |= {serial for serial in listed
                   if crl.last_update_utc > max(self.not_after[serial], self.revoked_at[serial])}

    # -- invariant 3 ---------------------------------------------------------------------------

    def check_served(self, host) -> None:
        now = self.clock(host)
        revocation.run_duty(host, now)
        self.check_new_crls("the revocation duty", now)
        capfs = self.capf_certificates()
        expected = self.revoked_by_issuer(capfs)
        with self.watcher.read() as tx:
            keeping = {issuer["fingerprint"] for issuer in authority.crl_issuers(self.watcher, tx, now)}
        served = {row["signer_fingerprint"]: row for row in revocation.current_crls(self.watcher, now)}
        assert set(served) == keeping
        base = f"http://127.0.0.1:{self.responder.port}"
        for fingerprint, row in served.items():  # what a relying party fetches over HTTP is the same CRL
            assert self.responder.get(base + crl_module.issuer_location(crl_module.CRL_PATH, fingerprint))[1] == \
                row["der"]
            if row["active"]:
                assert self.responder.get(base + crl_module.CRL_PATH)[1] == row["der"]
            assert row["number"] == max(self.series[fingerprint]), ("not the CRL with the highest number", fingerprint)
            crl = x509.load_der_x509_crl(row["der"])
            assert crl.last_update_utc <= now + CLOCK_SKEW and now < crl.next_update_utc, (
                crl.last_update_utc, now, crl.next_update_utc)
            listed = {format(entry.serial_number, "x") for entry in crl}
            assert listed <= expected[fingerprint] and expected[fingerprint] - listed <= self.left[fingerprint]


def _check_revocation_dates(crl, recorded: dict, previous, context) -> None:
    """No entry of ``crl`` is dated after its thisUpdate: each is dated at the revocation time
    ``recorded`` (serial: the revoking host's clock), at the CRL's thisUpdate when that is earlier, or
    at the date the CRL ``previous`` of the same issuer gave it when that is earlier still."""
    before = {entry.serial_number: entry.revocation_date_utc for entry in previous or ()}
    for entry in crl:
        serial = format(entry.serial_number, "x")
        assert entry.revocation_date_utc <= crl.last_update_utc, (
            "a CRL says an LSC was revoked after the CRL was issued", serial, entry.revocation_date_utc,
            crl.last_update_utc, context)
        expected = min([recorded[serial], crl.last_update_utc] + ([before[entry.serial_number]]
                                                                  if entry.serial_number in before else []))
        assert entry.revocation_date_utc == expected, (serial, entry.revocation_date_utc, expected, context)


def _waiting_writer(store, waiter) -> bool:
    """Whether a transaction of ``waiter`` waits for the store's write lock (PostgreSQL's advisory lock
    every writer takes, seen by ``store``; the writer lock file of an SQLite store, which a writer polls)."""
    if store.location.startswith("postgresql"):
        with store.read() as tx:
            return bool(tx.scalar("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
    return waiter.backend.waiting_writers > 0


def _revoke_in(tx, actor: str, kind: str, name: str, lscs: list[dict], pick: int) -> None:
    """One revocation of phone ``name``'s LSCs in the caller's write transaction, by ``kind``."""
    phone = phone_records.get(tx, name)
    if phone is None:
        return
    if kind == "serial":
        if lscs:
            revocation.revoke_in(tx, actor, name, "key_compromise", serial=lscs[pick % len(lscs)]["serial"])
    elif kind == "phone":
        if revocation.plan_revocation(tx, name):
            revocation.revoke_in(tx, actor, name, "affiliation_changed")
    elif kind == "delete":  # what a delete operation's session records (server/decider.py)
        certificate_records.revoke_installed(tx, actor, phone, statuses=("installed", "issued"))
    else:
        phone_records.delete(tx, actor, name)


def _issue(store, name: str, key):
    issued = lsc.issue(store, name, key.public_key(), source="capf", validity_days=1)
    with store.transaction() as tx:
        certificate_records.install(tx, "test", phone_records.get(tx, name), issued.id)
    return issued


class _Run:
    def __init__(self, cluster: _Cluster, key):
        self.cluster = cluster
        self.key = key
        self.names = [f"SEP{next(_phones):012X}" for _index in range(3)]

    def _lscs(self, name: str) -> list[dict]:
        with self.cluster.watcher.read() as tx:
            phone = phone_records.get(tx, name)
            return [] if phone is None else certificate_records.for_phone(tx, phone["id"], "lsc")

    def _removing(self, host, name: str) -> None:
        """Remember the LSCs a removal revokes and keeps listed (all but stale ones)."""
        self.cluster.kept |= {row["serial"] for row in self._lscs(name) if row["status"] != "stale"}

    def step(self, step) -> dt.datetime:
        """Take ``step``; the clock of the host that may have signed CRLs in it."""
        kind, host = step[0], self.cluster.hosts[step[1]]
        other = self.cluster.hosts[1 - step[1]]
        signer_now = self.cluster.clock(other if kind == "race" else host)
        if kind == "issue":
            name = self.names[step[2]]
            _issue(host, name, self.key)
        elif kind in REVOCATIONS:
            name = self.names[step[2]]
            if kind == "remove":
                self._removing(host, name)
            with host.transaction() as tx:
                _revoke_in(tx, host.actor, kind, name, self._lscs(name), step[2])
        elif kind == "race":
            self._race(host, other, step[3], self.names[step[2]], step[2])
        elif kind == "sign":
            revocation.refresh_crls(host, signer_now)
        elif kind == "expire":  # past every LSC's notAfter: the duty revokes them and signs
            self.cluster.now += dt.timedelta(days=2)
            signer_now = self.cluster.clock(host)
            revocation.run_duty(host, signer_now)
        elif kind == "clock":
            self.cluster.offsets[step[1]] = dt.timedelta(seconds=step[2])
        elif kind == "regenerate":
            authority.regenerate(host, "ec256")
        else:
            renew_capf(host)
        return signer_now

    def _race(self, writer, signer, kind: str, name: str, pick: int) -> None:
        """``signer`` signs every CRL while ``writer`` revokes: it reads the store before the revocation
        commits and waits for the write lock until it has committed."""
        if kind == "remove":
            self._removing(writer, name)
        outcome: dict = {}

        def sign():
            try:
                outcome["signed"] = revocation.refresh_crls(signer, self.cluster.clock(signer), force=True)
            except BaseException as exc:  # pylint: disable=broad-except  # raised again in the test's thread
                outcome["error"] = exc

        thread = threading.Thread(target=sign)
        with writer.transaction() as tx:
            _revoke_in(tx, writer.actor, kind, name, self._lscs(name), pick)
            thread.start()
            deadline = time.monotonic() + 30
            while thread.is_alive() and not _waiting_writer(self.cluster.watcher, signer):
                assert time.monotonic() < deadline, "the signing host never waited for the write lock"
                time.sleep(0.005)
        thread.join(timeout=60)
        if "error" in outcome:
            raise outcome["error"]


@pytest.fixture
def cluster(ca_store):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"crl_validity_hours": VALIDITY_HOURS})
    made = _Cluster(ca_store)
    yield made
    made.close()


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(offsets=st.lists(st.integers(-MAX_OFFSET, MAX_OFFSET), min_size=2, max_size=2),
       steps=st.lists(STEP, min_size=1, max_size=10))
def test_every_crl_any_host_signs_tells_the_truth(cluster, ec_phone_key, offsets, steps):
    cluster.offsets = [dt.timedelta(seconds=offset) for offset in offsets]
    run = _Run(cluster, ec_phone_key)
    for step in steps:
        cluster.check_new_crls(step, run.step(step))
    cluster.check_served(cluster.hosts[len(steps) % 2])


def test_a_crl_signed_while_another_host_revokes_lists_the_revocation(cluster, ec_phone_key):
    """The race alone, each way of revoking: a host that read the store before another host's
    revocation committed, and signs after it, lists the revoked LSC."""
    run = _Run(cluster, ec_phone_key)
    for index, kind in enumerate(REVOCATIONS):
        cluster.check_new_crls(("issue", kind), run.step(("issue", 0, index % 3)))
        cluster.check_new_crls(("race", kind), run.step(("race", 1, index % 3, kind)))
    with pytest.raises(NotFoundError):
        revocation.revoke_lsc(cluster.hosts[0], run.names[0], "unspecified")  # removed by the last race


def _crl_tick(store) -> list[dict]:
    """One tick of the service's scheduler on ``store``'s host, at its real clock: the CRLs it signed (audit)."""
    with store.read() as tx:
        before = tx.scalar("SELECT COALESCE(MAX(id), 0) FROM audit_events")
    scheduling = Scheduling(store)
    try:
        scheduling.tick()
    finally:
        scheduling.close()
    with store.read() as tx:
        return [event for event in audit.events(tx, action="crl.signed") if event["id"] > before]


def _write(path, data) -> str:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("ascii"))
    return str(path)


def test_a_host_whose_clock_is_behind_signs_and_serves_crls_that_start_at_its_clock(
        cluster, ec_phone_key, tmp_path, caplog):
    """Host 1's clock runs an hour ahead and signs a CRL; host 0 (a right clock) runs the revocation
    duty. Its CRLs start at its own clock (relying parties with a right clock accept them: OpenSSL refuses
    a CRL whose thisUpdate is in its future), still number above host 1's, are what is served, and the
    duty says that a clock is off, in its log and in the audit event of the CRL."""
    host, ahead = cluster.hosts
    names = [f"SEP{next(_phones):012X}" for _index in range(2)]
    issued = {name: _issue(host, name, ec_phone_key) for name in names}
    [early] = revocation.refresh_crls(ahead, utc_now().replace(microsecond=0) + dt.timedelta(hours=1), force=True)

    with caplog.at_level(logging.WARNING):
        [event] = _crl_tick(host)  # the newest CRL starts after this host's clock: due at once
    details = event["details"]
    assert details["number"] > early["number"]
    assert 3600 - 60 <= details["clock_behind_seconds"] <= 3600, details
    assert dt.datetime.fromisoformat(details["this_update"]) <= utc_now()
    warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("clock" in message and early["this_update"] in message for message in warned), warned

    revocation.revoke_lsc(host, names[0], "key_compromise")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        [event] = _crl_tick(host)
    assert event["details"]["number"] > details["number"] and "clock_behind_seconds" not in event["details"]
    assert not [record for record in caplog.records if "clock" in record.getMessage()]
    assert _crl_tick(host) == []  # nothing due: no CRL signed again and again

    capf_pem = _write(tmp_path / "capf.pem", authority.current(host)["pem"])
    status, served, _media = cluster.responder.get(f"http://127.0.0.1:{cluster.responder.port}{crl_module.CRL_PATH}")
    assert status == 200 and crl_module.describe(served)["number"] == event["details"]["number"]
    crl = x509.load_der_x509_crl(served)
    assert crl.last_update_utc <= utc_now() < crl.next_update_utc
    crl_pem = _write(tmp_path / "crl.pem", crl_module.to_pem(served))
    verified = openssl("crl", "-in", crl_pem, "-CAfile", capf_pem, "-noout")
    assert b"verify OK" in verified.stdout + verified.stderr
    for name in names:
        result = openssl("verify", "-crl_check", "-CAfile", capf_pem, "-CRLfile", crl_pem,
                         _write(tmp_path / f"{name}.pem", issued[name].pem), check=False)
        output = (result.stdout + result.stderr).decode()
        if name == names[0]:
            assert result.returncode != 0 and "certificate revoked" in output, output
        else:
            assert result.returncode == 0, output


def test_opencapf_crl_on_a_host_whose_clock_is_behind_says_so(cluster, ec_phone_key, store_cli, capsys):
    """``opencapf crl show`` signs what is due as the service would, at this host's clock, and warns."""
    host, ahead = cluster.hosts
    _issue(host, f"SEP{next(_phones):012X}", ec_phone_key)
    [early] = revocation.refresh_crls(ahead, utc_now().replace(microsecond=0) + dt.timedelta(hours=2), force=True)
    capsys.readouterr()
    assert cli_main([*store_cli, "crl", "show"]) == 0
    captured = capsys.readouterr()
    assert "opencapf: warning: CRL" in captured.err and early["this_update"] in captured.err, captured.err
    shown = dict(line.split(":", 1) for line in captured.out.splitlines() if ":" in line)
    assert int(shown["CRL number"]) > early["number"]
    assert dt.datetime.fromisoformat(shown["this update"].strip()) <= utc_now()


def test_a_clock_behind_by_less_than_the_allowed_skew_is_not_reported(cluster, ec_phone_key, caplog):
    host, ahead = cluster.hosts
    name = f"SEP{next(_phones):012X}"
    _issue(host, name, ec_phone_key)
    [early] = revocation.refresh_crls(ahead, utc_now().replace(microsecond=0) + CLOCK_SKEW / 2, force=True)
    assert _crl_tick(host) == []  # within the skew: the newest CRL stands
    revocation.revoke_lsc(host, name, "key_compromise")
    with caplog.at_level(logging.WARNING):
        [event] = _crl_tick(host)
    assert event["details"]["number"] > early["number"] and "clock_behind_seconds" not in event["details"]
    assert dt.datetime.fromisoformat(event["details"]["this_update"]) <= utc_now()
    assert not [record for record in caplog.records if "clock" in record.getMessage()]


def _backup(store, request, tmp_path) -> str:
    """A copy of the closed ``store`` as a backup restored elsewhere: its location."""
    if store.location.startswith("postgresql"):
        server = request.getfixturevalue("postgres_server")
        database = urllib.parse.urlparse(store.location).path.lstrip("/")
        copy = server.create_database()
        server.drop_database(copy)
        server.admin.execute(f"CREATE DATABASE {copy} TEMPLATE {database}")
        request.addfinalizer(lambda: server.drop_database(copy))
        return server.dsn(copy)
    (tmp_path / "backup").mkdir(mode=0o700)
    copy = str(tmp_path / "backup" / "capf.db")
    with contextlib.closing(sqlite3.connect(store.location)) as source, \
            contextlib.closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    return copy


def test_a_store_restored_from_a_backup_never_reuses_a_published_crl_number(store, ec_phone_key, request, tmp_path):
    """A CRL number names one CRL of its issuer for good (RFC 5280 5.2.3): the CRLs a store restored
    from an older backup signs have numbers above every CRL the store published after the backup."""
    authority.ensure(store)
    names = [f"SEP{next(_phones):012X}" for _index in range(2)]
    for name in names:
        _issue(store, name, ec_phone_key)
    now = utc_now().replace(microsecond=0)
    revocation.refresh_crls(store, now)
    store.close()
    restored_location = _backup(store, request, tmp_path)

    published = {}
    with open_store(store.location, state_dir=store.state_dir, actor="test") as running:
        for step, name in enumerate(names):  # revocations after the backup, each on a new CRL
            revocation.revoke_lsc(running, name, "key_compromise")
            for crl in revocation.refresh_crls(running, now + dt.timedelta(seconds=step)):
                published[crl["number"]] = active_crl(running, now + dt.timedelta(seconds=step))["der"]
    assert len(published) == 2

    with open_store(restored_location, state_dir=store.state_dir, actor="test") as restored:
        revocation.revoke_lsc(restored, names[1], "unspecified")  # what the backup does not know of
        [signed] = revocation.refresh_crls(restored, now + dt.timedelta(seconds=len(names)))
        assert signed["number"] > max(published), (signed["number"], sorted(published))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["revoke", "sign"]), st.integers(-MAX_OFFSET, MAX_OFFSET)),
                      min_size=1, max_size=10))
def test_no_crl_dates_a_revocation_after_its_own_issue(ca_store, ec_phone_key, steps, tmp_path_factory):
    """Revocations recorded at any host's clock and CRLs signed at any host's clock (each an offset
    from the time they share): no CRL says that an LSC was revoked after the CRL was issued (an
    entry's revocationDate is at most the CRL's thisUpdate), each entry is dated as recorded when it
    can be, and ``opencapf crl show`` (``crl.describe``) and ``openssl crl -text`` read the same dates."""
    base = utc_now().replace(microsecond=0)
    recorded: dict[str, dt.datetime] = {}
    with ca_store.read() as tx:
        for row in certificate_records.revoked_lscs(tx, "capf"):  # those of earlier examples
            recorded[row["serial"]] = dt.datetime.fromisoformat(row["revoked_at"])
    previous = active_crl(ca_store, base)
    previous = x509.load_der_x509_crl(previous["der"]) if previous else None
    for kind, offset in steps:
        clock = base + dt.timedelta(seconds=offset)
        if kind == "revoke":  # what a host whose clock reads ``clock`` records (revocation.revoke_in)
            name = f"SEP{next(_phones):012X}"
            issued = _issue(ca_store, name, ec_phone_key)
            with ca_store.transaction() as tx:
                certificate_records.revoke(tx, "test", issued.id, name, "key_compromise", format_utc(clock))
            recorded[issued.serial] = clock
            continue
        [signed] = revocation.refresh_crls(ca_store, clock, force=True)
        der = active_crl(ca_store, clock)["der"]
        crl = x509.load_der_x509_crl(der)
        assert crl.last_update_utc == clock and signed["number"] == active_crl(ca_store, clock)["number"]
        assert {format(entry.serial_number, "x") for entry in crl} == set(recorded)
        _check_revocation_dates(crl, recorded, previous, (kind, offset))
        shown = crl_module.describe(der)
        assert {entry["serial"]: entry["revoked_at"] for entry in shown["entries"]} == {
            format(entry.serial_number, "x"): format_utc(entry.revocation_date_utc) for entry in crl}
        assert all(entry["revoked_at"] <= shown["this_update"] for entry in shown["entries"]), shown
        previous = crl
    if previous is not None and len(previous):
        pem = tmp_path_factory.mktemp("crl") / "crl.pem"
        last, dates = _openssl_crl_dates(_write(pem, crl_module.to_pem(crl_module.to_der(previous))))
        assert last == previous.last_update_utc and all(date <= last for date in dates), (last, dates)


def _openssl_crl_dates(crl_pem: str) -> tuple[dt.datetime, list[dt.datetime]]:
    """The Last Update and every Revocation Date of the CRL file ``crl_pem``, as ``openssl crl -text`` prints them."""
    text = openssl("crl", "-in", crl_pem, "-noout", "-text").stdout.decode()

    def moment(line: str) -> dt.datetime:
        return dt.datetime.strptime(line.split(":", 1)[1].strip(), "%b %d %H:%M:%S %Y GMT").replace(
            tzinfo=dt.timezone.utc)

    [last] = [moment(line) for line in text.splitlines() if line.strip().startswith("Last Update:")]
    return last, [moment(line) for line in text.splitlines() if line.strip().startswith("Revocation Date:")]


def test_a_revocation_recorded_ahead_of_the_signer_s_clock_is_dated_by_the_crl(cluster, ec_phone_key, tmp_path,
                                                                               store_cli, capsys):
    """Host 1's clock runs an hour ahead and revokes an LSC; host 0, with a right clock, signs the CRL:
    ``openssl crl -text`` shows the revocation dated at the CRL's Last Update, not after it, ``opencapf
    crl show`` prints that date, and the next CRL, signed after the recorded time, keeps it."""
    host, ahead = cluster.hosts
    name = f"SEP{next(_phones):012X}"
    issued = _issue(host, name, ec_phone_key)
    now = utc_now().replace(microsecond=0)
    with ahead.transaction() as tx:  # what revocation.revoke_in records on host 1
        certificate_records.revoke(tx, ahead.actor, issued.id, name, "key_compromise",
                                   format_utc(now + dt.timedelta(hours=1)))
    dated = []
    for step in range(2):
        signed_at = now + dt.timedelta(hours=2 * step)
        revocation.refresh_crls(host, signed_at, force=True)
        der = active_crl(host, signed_at)["der"]
        last, dates = _openssl_crl_dates(_write(tmp_path / f"crl{step}.pem", crl_module.to_pem(der)))
        assert last == signed_at and len(dates) == 1, (last, dates)
        assert dates[0] <= last, ("the CRL dates the revocation after its own Last Update", dates[0], last)
        dated.append(dates[0])
        if step == 0:
            capsys.readouterr()
            assert cli_main([*store_cli, "crl", "show"]) == 0
            shown = capsys.readouterr().out
            assert f"{issued.serial}  {format_utc(now)}  key_compromise" in shown, shown
    assert dated == [now, now], dated
