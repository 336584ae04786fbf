"""LSC issuance: the exact profile, openssl verification, pkilint, serials, validation."""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import subprocess

import pytest

from _opencapf.ca import authority, certificates as c, crl, lsc
from _opencapf.dependencies import ec, hashes, rsa, x509, ExtendedKeyUsageOID, NameOID
from _opencapf.errors import CertificateError, StoreError, ValidationError
from _opencapf.store import audit, service
from _opencapf.vocabulary import format_utc
from support.tools import openssl

LINTER = shutil.which("lint_pkix_cert") or os.path.join(os.path.dirname(os.sys.executable), "lint_pkix_cert")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def extension_block(certificate_path):
    text = openssl("x509", "-in", certificate_path, "-noout", "-text").stdout.decode()
    block = text.split("X509v3 extensions:")[1].split("Signature Algorithm")[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def pkilint_errors(path):
    result = subprocess.run([LINTER, "lint", "-s", "ERROR", path], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode in (0, 1, 2), result.stderr
    return [line for line in result.stdout.splitlines() if "(ERROR)" in line or "(FATAL)" in line]


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_lsc_profile_verifies_with_openssl_and_lints_clean(ca_store, tmp_path, kind, rsa_phone_key, ec_phone_key):
    key = rsa_phone_key if kind == "rsa" else ec_phone_key
    with ca_store.transaction() as tx:
        service.write(tx, "test", {"validity_days": 30})
    issued = lsc.issue(ca_store, "sep00aabbccdd01", key.public_key())
    capf = authority.current(ca_store)
    capf_path = write(tmp_path, "capf.pem", capf["pem"])
    lsc_path = write(tmp_path, "lsc.pem", issued.pem)
    assert openssl("verify", "-CAfile", capf_path, lsc_path).stdout.decode().strip().endswith("OK")

    certificate = issued.certificate
    assert issued.device_name == "SEP00AABBCCDD01"
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SEP00AABBCCDD01"
    assert certificate.signature_hash_algorithm.name == "sha256"
    assert 0 < certificate.serial_number < 2 ** 159
    assert (c.not_after(certificate) - c.not_before(certificate)).days == 30
    second_usage = "Key Encipherment" if kind == "rsa" else "Key Agreement"
    capf_ski = ":".join(f"{b:02X}" for b in c.load_pem_certificate(capf["pem"]).extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest)
    lines = extension_block(lsc_path)
    assert lines == [
        "X509v3 Basic Constraints: critical", "CA:FALSE",
        "X509v3 Key Usage: critical", f"Digital Signature, {second_usage}",
        "X509v3 Extended Key Usage:",
        "TLS Web Server Authentication, TLS Web Client Authentication, IPSec End System",
        "X509v3 Subject Alternative Name:", "DirName:/CN=SEP00AABBCCDD01",
        "X509v3 Subject Key Identifier:", lines[9],
        "X509v3 Authority Key Identifier:", capf_ski,
    ]
    assert pkilint_errors(lsc_path) == []
    assert pkilint_errors(capf_path) == []


def test_lsc_subject_inherits_capf_organisation(store, rsa_phone_key):
    authority.ensure(store, subject={"organization": "Example Voice", "organizational_unit": "UC",
                                     "country": "NZ"})
    issued = lsc.issue(store, "SEP00AABBCCDD02", rsa_phone_key.public_key())
    assert issued.certificate.subject.rfc4514_string() == "C=NZ,O=Example Voice,OU=UC,CN=SEP00AABBCCDD02"


def test_each_issue_is_recorded_with_its_phone_and_audit(ca_store, ec_phone_key):
    serials = {lsc.issue(ca_store, "SEP00AABBCCDD03", ec_phone_key.public_key()).serial for _n in range(20)}
    assert len(serials) == 20
    with ca_store.read() as tx:
        rows = tx.query("SELECT c.serial, c.pem, c.status, p.name FROM certificates c JOIN phones p "
                        "ON p.id = c.phone_id")
        issued_events = audit.events(tx, action="certificate.issued", limit=100)
    assert {row["serial"] for row in rows} == serials
    assert all(row["status"] == "issued" and row["name"] == "SEP00AABBCCDD03" for row in rows)
    assert all(format(c.load_pem_certificate(row["pem"]).serial_number, "x") == row["serial"] for row in rows)
    assert len(issued_events) == 20


@pytest.mark.parametrize("factory,message", [
    (lambda: rsa.RSAPublicNumbers(65537, (1 << 511) | 12345).public_key(), "1024\u20134096"),
    (lambda: ec.generate_private_key(ec.SECP256K1()), "unsupported curve|only P-256"),
])
def test_unsupported_phone_keys_are_refused(ca_store, factory, message):
    with pytest.raises(CertificateError, match=message):
        key = factory()
        lsc.issue(ca_store, "SEP00AABBCCDD04", getattr(key, "public_key", lambda: key)())
    with ca_store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM certificates") == 0


@pytest.mark.parametrize("days", [0, 1826, "x"])
def test_validity_outside_range_is_refused(ca_store, ec_phone_key, days):
    with pytest.raises(ValidationError, match="validity_days must be"):
        lsc.issue(ca_store, "SEP00AABBCCDD05", ec_phone_key.public_key(), validity_days=days)


def test_bad_device_name_is_refused(ca_store, ec_phone_key):
    with pytest.raises(ValidationError, match="device_name must be SEP"):
        lsc.issue(ca_store, "SEP12", ec_phone_key.public_key())


def test_lsc_extensions_match_issue_profile_for_ec(ec_phone_key):
    extensions = dict((type(ext).__name__, (ext, critical)) for ext, critical in
                      lsc.lsc_extensions("SEP001122334455", ec_phone_key.public_key()))
    eku, critical = extensions["ExtendedKeyUsage"]
    assert not critical
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
                         x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5")]


def test_a_serial_drawn_again_is_redrawn_and_the_store_stays_consistent(ca_store, ec_phone_key, monkeypatch):
    """The unique index on (issuer, serial) answers a clash: the attempt leaves nothing behind (no row,
    no audit event, no work of the caller's ``opening``/``recorded``), and the LSC gets a fresh serial."""
    first = lsc.issue(ca_store, "SEP00AABBCCDD06", ec_phone_key.public_key())
    taken = int(first.serial, 16)
    draws = iter([taken, taken, taken + 1])
    monkeypatch.setattr(lsc.x509, "random_serial_number", lambda: next(draws))
    opened, recorded = [], []
    second = lsc.issue(ca_store, "SEP00AABBCCDD07", ec_phone_key.public_key(),
                       opening=lambda tx, phone: opened.append(phone["name"]),
                       recorded=lambda tx, certificate_id: recorded.append(certificate_id))
    assert second.serial == format(taken + 1, "x") and second.certificate.serial_number == taken + 1
    assert opened == ["SEP00AABBCCDD07"] and recorded == [second.id]
    with ca_store.read() as tx:
        rows = tx.query("SELECT c.id, c.serial, c.pem, c.fingerprint, c.not_before, c.not_after, p.name FROM "
                        "certificates c JOIN phones p ON p.id = c.phone_id ORDER BY c.id")
        issued_events = audit.events(tx, action="certificate.issued", limit=10)
    assert [(row["name"], row["serial"]) for row in rows] == [("SEP00AABBCCDD06", first.serial),
                                                              ("SEP00AABBCCDD07", second.serial)]
    assert [row["id"] for row in rows] == [first.id, second.id]
    for row, issued in zip(rows, (first, second)):  # each row is its certificate, dates as it carries them
        certificate = c.load_pem_certificate(row["pem"])
        assert row["pem"] == issued.pem and c.to_der(certificate) == issued.der
        assert row["fingerprint"] == c.fingerprint(certificate)
        assert (row["not_before"], row["not_after"]) == (format_utc(c.not_before(certificate)),
                                                         format_utc(c.not_after(certificate)))
    assert [(event["subject"], event["details"]["serial"]) for event in reversed(issued_events)] == \
        [("SEP00AABBCCDD06", first.serial), ("SEP00AABBCCDD07", second.serial)]


def test_a_serial_that_keeps_clashing_fails_the_issuance_and_writes_nothing(ca_store, ec_phone_key, monkeypatch):
    taken = int(lsc.issue(ca_store, "SEP00AABBCCDD08", ec_phone_key.public_key()).serial, 16)
    monkeypatch.setattr(lsc.x509, "random_serial_number", lambda: taken)
    with pytest.raises(StoreError, match="unique serial after 5 attempts"):
        lsc.issue(ca_store, "SEP00AABBCCDD09", ec_phone_key.public_key(),
                  opening=lambda tx, phone: pytest.fail("the opening ran for a serial on record"))
    with ca_store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM certificates") == 1
        assert len(audit.events(tx, action="certificate.issued", limit=10)) == 1


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_the_key_identifier_taken_from_der_is_that_of_the_library(ca_store, kind, rsa_phone_key, ec_phone_key):
    """``lsc.issue`` takes the SKI from the key's DER: it must be exactly what the library computes from
    the key, and anything but a SubjectPublicKeyInfo is refused."""
    public_key = (rsa_phone_key if kind == "rsa" else ec_phone_key).public_key()
    assert c.key_identifier(c.public_key_der(public_key)) == x509.SubjectKeyIdentifier.from_public_key(public_key).digest
    issued = lsc.issue(ca_store, "SEP00AABBCCDD10", public_key)
    assert c.to_der(issued.certificate) == issued.der
    assert issued.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(public_key)
    spki = c.public_key_der(public_key)
    for broken in (b"\x30\x03\x02\x01\x01", spki[:-1], spki + b"\x00", b"\x31" + spki[1:], b"", b"\x30\x85" + spki[2:]):
        with pytest.raises(CertificateError, match="SubjectPublicKeyInfo"):
            c.key_identifier(broken)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
@pytest.mark.parametrize("crl_url", ["", "http://capf.example/crl"])
def test_an_lsc_is_byte_for_byte_what_the_library_builder_makes(ca_store, kind, crl_url, rsa_phone_key, ec_phone_key):
    """``build_lsc`` hands the builder every part at once: the certificate (an RSA CAPF key signs
    deterministically) is exactly the one the builder's own setters, which check each part, make."""
    public_key = (rsa_phone_key if kind == "rsa" else ec_phone_key).public_key()
    with ca_store.read() as tx:
        signer = authority.signer(ca_store, tx)
    now = signer.not_before + dt.timedelta(days=3, seconds=5)  # within the CAPF certificate's validity
    built = lsc.build_lsc(signer, "SEP00AABBCCDD11", public_key, 30, 2 ** 158 + 7, now, crl_url=crl_url)
    builder = (x509.CertificateBuilder().subject_name(lsc.lsc_subject("SEP00AABBCCDD11", signer.subject))
               .issuer_name(signer.subject).public_key(public_key).serial_number(2 ** 158 + 7)
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30)))
    location = crl.issuer_location(crl_url, signer.fingerprint) if crl_url else ""
    for extension, critical in lsc.lsc_extensions("SEP00AABBCCDD11", public_key, crl_url=location,
                                                  authority_key_id=signer.authority_key_identifier):
        builder = builder.add_extension(extension, critical=critical)
    assert c.to_der(built) == c.to_der(builder.sign(signer.private_key, hashes.SHA256()))
    for serial in (0, 2 ** 159):
        with pytest.raises(ValueError, match="serial"):
            lsc.build_lsc(signer, "SEP00AABBCCDD11", public_key, 30, serial, now)


def test_the_pem_made_from_der_is_that_of_the_library(ec_phone_key):
    """``pem_of_der`` (the PEM an issued LSC is stored with) is character for character the library's
    PEM of the certificate, for every length of its last base64 line (subjects of 1 to 64 characters)."""
    signing_key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime(2026, 1, 1)
    last_lines = set()
    for length in range(1, 65):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "N" * length)])
        certificate = x509.CertificateBuilder(
            issuer_name=name, subject_name=name, public_key=ec_phone_key.public_key(), serial_number=length,
            not_valid_before=start, not_valid_after=start + dt.timedelta(days=1)).sign(signing_key, hashes.SHA256())
        der = c.to_der(certificate)
        assert c.pem_of_der(der) == c.to_pem(certificate)
        last_lines.add(len(base64.b64encode(der)) % 64)
    assert len(last_lines) == 16  # every length a base64 text's last line can have (a multiple of 4)


@pytest.mark.both_backends
def test_an_lsc_is_signed_by_the_capf_certificate_active_when_it_is_recorded(ca_store, ec_phone_key):
    """Invariant: ``lsc.issue`` records only an LSC signed by the CAPF certificate active in its write
    transaction. A signer the caller read before a rotation (the service reads it when the phone
    connects) is not used once retired: the LSC is signed again by the active certificate, its issuer,
    AKI and CRL distribution point with it."""
    crl_url = "http://capf.example.com/capf.crl"
    retired = authority.signer(ca_store)
    authority.regenerate(ca_store, "ec256")
    issued = lsc.issue(ca_store, "SEP00AABBCCDD11", ec_phone_key.public_key(), source="capf", crl_url=crl_url,
                       signer=retired)
    active = authority.signer(ca_store)
    assert active.id != retired.id
    assert c.signed_by(issued.certificate, active.certificate)
    assert not c.signed_by(issued.certificate, retired.certificate)
    assert issued.certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value == \
        active.authority_key_identifier
    (point,) = issued.certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert point.full_name[0].value == crl.issuer_location(crl_url, active.fingerprint)
    with ca_store.read() as tx:
        (event,) = audit.events(tx, action="certificate.issued", limit=10)
        assert tx.scalar("SELECT count(*) FROM certificates") == 1
    assert event["details"]["signer"] == active.common_name
