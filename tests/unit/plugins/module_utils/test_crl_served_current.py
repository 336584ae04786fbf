"""No CRL we serve or publish is past its nextUpdate, as time goes on.

Invariant, at every moment the CAPF service's scheduler ticks (its clock moved through the test): every
CRL answered over HTTP (``GET /capf.crl`` and ``GET /capf-ID.crl`` of every CAPF certificate the store
ever had) and every CRL file it keeps beside ``crl_path`` is current, thisUpdate <= now < nextUpdate.
And nothing is dropped that is needed: every CAPF certificate that keeps a CRL (the active one, each
retired one until it expires) and whose key the store holds has its current CRL served and published.

The retired CAPF certificate here lives a few days; its LSCs' notAfter are capped at its own, so once
it has expired no LSC it signed is valid, and its CRL is served and published no more (HTTP 404, its
file removed, the removal logged). A retired certificate whose key is lost has its last CRL served
until that CRL's nextUpdate, and not after. The walk's moments, the CRL validity, the retired
certificate's lifetime and the loss of its key are drawn by hypothesis."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.crl_http import CrlHttp, active_crl
from _opencapf import revocation, secretbox
from _opencapf.ca import authority, keys, lsc
from _opencapf.ca import crl as crl_module
from _opencapf.dependencies import NameOID, hashes, serialization, x509
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import certificates as certificate_records
from _opencapf.store import open_store
from _opencapf.store import phones as phone_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import parse_utc, utc_now


class _Clock:
    """The time the service works at: the scheduler's, the HTTP responder's."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _capf_certificate(key, common_name: str, now: dt.datetime, days: int):
    """An uploadable CAPF certificate (names starting ``CAPF-`` are the generated ones') valid ``days``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(identifier, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(identifier), critical=False)
        .sign(key, hashes.SHA256()))


def _current(der: bytes, now: dt.datetime) -> bool:
    crl = x509.load_der_x509_crl(der)
    return crl.last_update_utc <= now < crl.next_update_utc


class _Service:
    """A store with a retired CAPF certificate that lives ``retired_days`` (it signed two LSCs, one of
    them revoked) and an active one; the service's scheduler, HTTP responder and CRL files at ``clock``."""

    def __init__(self, directory: str, phone_key, validity_hours: int, retired_days: int):
        self.clock = _Clock(utc_now().replace(microsecond=0))
        self.store = open_store(os.path.join(directory, "state", "capf.db"), actor="test")
        self.published = os.path.join(directory, "www")
        os.mkdir(self.published)
        with self.store.transaction() as tx:
            service_records.write(tx, "test", {"crl_validity_hours": validity_hours,
                                               "crl_path": os.path.join(self.published, "capf.crl")})
        key = keys.generate("ec256")
        short_lived = _capf_certificate(key, "Short-lived CAPF", self.clock.now, retired_days)
        authority.replace(self.store, short_lived.public_bytes(serialization.Encoding.PEM), keys.private_key_pem(key))
        self.retired = authority.current(self.store)
        for name in ("SEP0000000007A1", "SEP0000000007A2"):
            issued = lsc.issue(self.store, name, phone_key.public_key(), source="capf", validity_days=365)
            with self.store.transaction() as tx:
                certificate_records.install(tx, "test", phone_records.get(tx, name), issued.id)
            # Capped at its issuer's notAfter: once the issuer has expired, no LSC it signed is valid.
            assert issued.not_after <= self.retired["not_after"]
        revocation.revoke_lsc(self.store, "SEP0000000007A1", "key_compromise")
        authority.regenerate(self.store, key_type="ec256")
        self.active = authority.current(self.store)
        self.scheduling = Scheduling(self.store, clock=self.clock)
        self.responder = CrlHttp(self.store, self.clock)
        self.key_lost = False

    def lose_retired_key(self) -> None:
        """The retired certificate's key is gone from the store, and the service restarted since (a new
        process has loaded no key yet)."""
        with self.store.transaction() as tx:
            assert secretbox.delete(tx, f"capf_private_key:{self.retired['fingerprint']}")
        authority._cache.clear()  # pylint: disable=protected-access
        self.key_lost = True

    def check(self) -> None:
        now = self.clock.now
        # What is served and published is current.
        for name in sorted(os.listdir(self.published)):
            with open(os.path.join(self.published, name), "rb") as handle:
                assert _current(handle.read(), now), (name, now)
        locations = {crl_module.CRL_PATH: self.active["fingerprint"]}
        for summary in (self.retired, self.active):
            locations[crl_module.issuer_location(crl_module.CRL_PATH, summary["fingerprint"])] = summary["fingerprint"]
        served = {}
        for path, fingerprint in locations.items():
            status, der = self.responder.fetch(path)
            assert status in (200, 404, 503), (path, status)
            if status == 200:
                assert _current(der, now), (path, now)
                served[path] = der
        # What ``opencapf crl show|write`` take is what HTTP serves.
        listed = {crl_module.issuer_location(crl_module.CRL_PATH, row["signer_fingerprint"]): row["der"]
                  for row in revocation.current_crls(self.store, now)}
        assert listed == {path: der for path, der in served.items() if path != crl_module.CRL_PATH}, now
        # And nothing is dropped that is needed.
        retired_path = crl_module.issuer_location(crl_module.CRL_PATH, self.retired["fingerprint"])
        retired_file = crl_module.issuer_location(os.path.join(self.published, "capf.crl"), self.retired["fingerprint"])
        for path in (crl_module.CRL_PATH, crl_module.issuer_location(crl_module.CRL_PATH, self.active["fingerprint"])):
            assert path in served, (path, now)
        expired = now >= parse_utc(self.retired["not_after"], "not_after")
        if expired:
            assert retired_path not in served and not os.path.exists(retired_file), now
        elif not self.key_lost:
            assert retired_path in served and os.path.exists(retired_file), now
        with open(retired_file if os.path.exists(retired_file) else os.devnull, "rb") as handle:
            published = handle.read()
        assert not published or published == served.get(retired_path), "the file and HTTP serve the same CRL"

    def close(self) -> None:
        self.responder.close()
        self.scheduling.close()
        self.store.close()


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(validity_hours=st.integers(1, 72), retired_days=st.integers(1, 10),
       moments=st.lists(st.integers(0, 14 * 24 * 60), min_size=1, max_size=10),
       key_lost_at=st.one_of(st.none(), st.integers(0, 9)))
def test_no_crl_served_or_published_is_past_its_next_update(ec_phone_key, validity_hours, retired_days, moments,
                                                            key_lost_at):
    directory = tempfile.mkdtemp(prefix="opencapf-crl-walk-")
    os.chmod(directory, 0o700)
    service = _Service(directory, ec_phone_key, validity_hours, retired_days)
    try:
        start = service.clock.now
        expiry = parse_utc(service.retired["not_after"], "not_after")
        # The drawn moments (minutes from the start), and one past the retired certificate's expiry by
        # more than a CRL's validity: its last CRL has lapsed by then.
        walk = sorted({start + dt.timedelta(minutes=minutes) for minutes in moments}
                      | {expiry + dt.timedelta(hours=validity_hours, minutes=1)})
        for index, moment in enumerate(walk):
            if index == key_lost_at:
                service.lose_retired_key()
            service.clock.now = moment
            service.scheduling.tick()
            service.check()
    finally:
        service.close()
        shutil.rmtree(directory)


@pytest.fixture
def signed_once(ec_phone_key, tmp_path):
    """A service whose CRLs were signed once, at its start, and never again: the retired CAPF certificate
    lives a day, each CRL 36 hours, so at a later clock a CRL is current, lapsed, or its signer expired."""
    directory = str(tmp_path / "service")
    os.mkdir(directory, 0o700)
    service = _Service(directory, ec_phone_key, validity_hours=36, retired_days=1)
    service.scheduling.tick()
    try:
        yield service
    finally:
        service.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(minutes=st.integers(-60, 3 * 24 * 60))
def test_what_is_shown_is_what_is_served_at_any_clock(signed_once, minutes):
    """Invariant: at any clock, the CRLs ``opencapf crl show|write`` take (``current_crls``) are the CRLs
    served and published (``served_crls``), the same CRL for each CAPF certificate, and every other newest
    CRL is withheld: one rule of what is current (``crl_is_current``)."""
    now = signed_once.clock.now + dt.timedelta(minutes=minutes)
    shown = {row["signer_fingerprint"]: row["number"] for row in revocation.current_crls(signed_once.store, now)}
    with signed_once.store.read() as tx:
        served, withheld = revocation.served_crls(tx, now)
    assert shown == {fingerprint: row["number"] for fingerprint, row in served.items()}, now
    assert set(served) | set(withheld) == {signed_once.retired["fingerprint"], signed_once.active["fingerprint"]}
    assert not set(served) & set(withheld)


def test_a_lapsed_crl_is_current_nowhere(ca_store):
    """A CRL past its nextUpdate (signed two hours ago, valid one hour) is served, published and shown by
    nothing: the engine's one answer to "which CRLs are current" is ``current_crls`` (``crl_is_current``)."""
    assert sorted(name for name in revocation.__all__ if "current" in name) == ["crl_is_current", "current_crls"]
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"crl_validity_hours": 1})
    [signed] = revocation.refresh_crls(ca_store, utc_now().replace(microsecond=0) - dt.timedelta(hours=2))
    with ca_store.read() as tx:
        served, withheld = revocation.served_crls(tx)
    assert served == {} and [row["number"] for row, _reason in withheld.values()] == [signed["number"]]
    assert revocation.current_crls(ca_store) == [] and active_crl(ca_store) is None


def test_the_crl_of_a_retired_capf_certificate_stops_at_its_expiry_and_the_log_says_so(ec_phone_key, tmp_path, caplog):
    """The walk's end, step by step: served and published until the retired certificate expires (its
    CRL current all along), then HTTP 404, the file removed, and one log line that says why."""
    directory = str(tmp_path / "service")
    os.mkdir(directory, 0o700)
    service = _Service(directory, ec_phone_key, validity_hours=24, retired_days=2)
    try:
        expiry = parse_utc(service.retired["not_after"], "not_after")
        retired_path = crl_module.issuer_location(crl_module.CRL_PATH, service.retired["fingerprint"])
        retired_file = crl_module.issuer_location(os.path.join(service.published, "capf.crl"),
                                                  service.retired["fingerprint"])
        service.clock.now = expiry - dt.timedelta(hours=1)
        service.scheduling.tick()
        service.check()
        status, der = service.responder.fetch(retired_path)
        assert status == 200 and os.path.exists(retired_file)
        assert x509.load_der_x509_crl(der).next_update_utc > expiry, "current at the expiry: it lapses after it"
        service.clock.now = expiry
        with caplog.at_level(logging.INFO, logger="opencapf.revocation"):
            service.scheduling.tick()
            service.scheduling.tick()
        service.check()
        assert service.responder.fetch(retired_path)[0] == 404 and not os.path.exists(retired_file)
        removed = [record.getMessage() for record in caplog.records if retired_file in record.getMessage()]
        assert len(removed) == 1 and "expired" in removed[0] and service.retired["common_name"] in removed[0], removed
    finally:
        service.close()


def test_a_crl_that_lapsed_without_a_newer_one_is_withheld_and_the_log_says_so(ec_phone_key, tmp_path, caplog):
    """A retired CAPF certificate whose key is lost before it expires: its last CRL is served while it is
    current, then withheld (HTTP 404, file removed, a warning naming the CRL and its nextUpdate)."""
    directory = str(tmp_path / "service")
    os.mkdir(directory, 0o700)
    service = _Service(directory, ec_phone_key, validity_hours=4, retired_days=5)
    try:
        retired_path = crl_module.issuer_location(crl_module.CRL_PATH, service.retired["fingerprint"])
        retired_file = crl_module.issuer_location(os.path.join(service.published, "capf.crl"),
                                                  service.retired["fingerprint"])
        service.scheduling.tick()
        status, der = service.responder.fetch(retired_path)
        assert status == 200 and os.path.exists(retired_file)
        next_update = x509.load_der_x509_crl(der).next_update_utc
        service.lose_retired_key()
        service.clock.now = next_update - dt.timedelta(seconds=1)
        service.scheduling.tick()
        service.check()
        assert service.responder.fetch(retired_path) == (200, der), "still current: served"
        service.clock.now = next_update
        with caplog.at_level(logging.INFO):
            service.scheduling.tick()
            service.check()
            assert service.responder.fetch(retired_path)[0] == 404 and not os.path.exists(retired_file)
            assert service.responder.fetch(crl_module.CRL_PATH)[0] == 200, "the active one is signed anew and served"
        warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING
                  and "passed its nextUpdate" in record.getMessage()]
        assert len(warned) == 2, warned  # the file's removal, and the responder's refusal
        assert all(service.retired["common_name"] in message for message in warned), warned
    finally:
        service.close()
