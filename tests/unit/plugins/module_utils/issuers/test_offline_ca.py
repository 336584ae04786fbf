"""Offline CA round trip: export CSRs, sign them with the openssl command line, import them back."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest

from _opencapf.dependencies import rsa
from _opencapf.issuers import offline
from support.third_party_ca import EnterprisePki, pem, phone_csr
from support.tools import openssl

LSC_EXTENSIONS = """[lsc]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth, 1.3.6.1.5.5.7.3.5
authorityKeyIdentifier = keyid
[no_key_usage]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = serverAuth, clientAuth
"""
DEVICES = ("SEP001122334455", "SEP0011223344AA")


@pytest.fixture(scope="module")
def phones():
    """Two phones, each with its key and a pending CSR."""
    result = {}
    for index, name in enumerate(DEVICES):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signed = phone_csr(name, key)
        result[name] = offline.PendingCsr(name, signed.der, f"2026-11-2{index}T10:00:00Z")
    return result


@pytest.fixture
def operator(tmp_path, pki):
    """The CA operator's side: the issuing CA's certificate and key as files, an openssl extfile."""
    cert_path, key_path = pki.write_files(str(tmp_path / "ca"), pki.issuing, pki.issuing_key)
    extfile = tmp_path / "lsc.cnf"
    extfile.write_text(LSC_EXTENSIONS)

    def sign(csr_path, out_path, section="lsc", ca=(cert_path, key_path), days="365"):
        openssl("x509", "-req", "-in", str(csr_path), "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
                "-days", days, "-sha256", "-extfile", str(extfile), "-extensions", section, "-out", str(out_path))
        return out_path
    return sign


def test_export_one_file_per_device(phones, tmp_path):
    paths = offline.export(phones.values(), str(tmp_path / "out"))
    assert sorted(os.path.basename(path) for path in paths) == sorted(f"{name}.csr.pem" for name in DEVICES)
    for path in paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        result = openssl("req", "-in", path, "-verify", "-noout")
        assert b"verify OK" in result.stdout + result.stderr


def test_export_bundle_names_each_device_and_time(phones, tmp_path):
    [path] = offline.export(phones.values(), str(tmp_path), bundle=True)
    text = open(path, encoding="ascii").read()
    assert text.count("-----BEGIN CERTIFICATE REQUEST-----") == 2
    assert "Device: SEP0011223344AA\nRequested: 2026-11-21T10:00:00Z\n" in text


def test_export_refuses_a_name_unfit_for_a_file(phones, tmp_path):
    bad = offline.PendingCsr("../evil", phones[DEVICES[0]].request)
    with pytest.raises(Exception, match="cannot be used as a file name"):
        offline.export([bad], str(tmp_path))


def test_round_trip_with_openssl_signing(phones, pki, operator, tmp_path):
    paths = offline.export(phones.values(), str(tmp_path / "csrs"))
    signed = [operator(path, tmp_path / (os.path.basename(path) + ".crt")) for path in paths]
    # The operator returns one bundle with the issuing CA certificate and one bare file.
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(open(signed[0], encoding="ascii").read() + pem(pki.issuing))
    report = offline.import_certificates(offline.read_files([str(bundle), str(signed[1])]), phones.values(),
                                         [pki.root])
    assert report.problems == [] and report.stale == []
    assert sorted(match.device_name for match in report.matched) == sorted(DEVICES)
    for match in report.matched:
        assert [item.subject for item in match.chain[1:]] == [pki.issuing.subject, pki.root.subject]
        (tmp_path / "lsc.pem").write_text(pem(match.certificate))
        (tmp_path / "root.pem").write_text(pem(pki.root))
        (tmp_path / "issuing.pem").write_text(pem(pki.issuing))
        result = openssl("verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "issuing.pem"),
                         str(tmp_path / "lsc.pem"))
        assert result.stdout.decode().strip().endswith(": OK")


def test_pkcs7_bundle_is_accepted(phones, pki, operator, tmp_path):
    [path] = offline.export([phones[DEVICES[0]]], str(tmp_path / "csrs"))
    certificate = operator(path, tmp_path / "one.crt")
    (tmp_path / "issuing.pem").write_text(pem(pki.issuing))
    p7b = openssl("crl2pkcs7", "-nocrl", "-certfile", str(certificate), "-certfile", str(tmp_path / "issuing.pem"),
                  "-outform", "DER").stdout
    report = offline.import_certificates([("chain.p7b", p7b)], phones.values(), [pki.root])
    assert [match.device_name for match in report.matched] == [DEVICES[0]]


def test_certificate_without_key_usage_is_reported(phones, pki, operator, tmp_path):
    [path] = offline.export([phones[DEVICES[0]]], str(tmp_path / "csrs"))
    certificate = operator(path, tmp_path / "no-ku.crt", section="no_key_usage")
    report = offline.import_certificates(offline.read_files([str(certificate), ]) + [("ca.pem", pem(pki.issuing)
                                                                                     .encode())],
                                         phones.values(), [pki.root])
    assert report.matched == []
    [problem] = report.problems
    assert problem.source.endswith("no-ku.crt") and "keyEncipherment" in problem.reason
    assert problem.code == "missing_key_usage" and problem.device_name == DEVICES[0]
    assert DEVICES[0] in problem.reason


def test_certificate_from_an_untrusted_ca_is_reported(phones, operator, tmp_path):
    rogue = EnterprisePki("Rogue")
    cert_path, key_path = rogue.write_files(str(tmp_path / "rogue"), rogue.issuing, rogue.issuing_key)
    [path] = offline.export([phones[DEVICES[1]]], str(tmp_path / "csrs"))
    certificate = operator(path, tmp_path / "rogue.crt", ca=(cert_path, key_path))
    report = offline.import_certificates(offline.read_files([str(certificate)]), phones.values(),
                                         [EnterprisePki("Trusted").root])
    [problem] = report.problems
    assert problem.code == "untrusted_chain" and "does not chain to a trusted certificate" in problem.reason


def test_expired_certificate_is_reported(phones, pki, operator, tmp_path):
    [path] = offline.export([phones[DEVICES[0]]], str(tmp_path / "csrs"))
    certificate = operator(path, tmp_path / "short.crt", days="1")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)
    report = offline.import_certificates(offline.read_files([str(certificate)]) + [("ca", pem(pki.issuing).encode())],
                                         phones.values(), [pki.root], at=later)
    [problem] = report.problems
    assert problem.code == "expired" and "expired at" in problem.reason


def test_unmatched_stale_duplicate_and_unreadable(phones, pki, operator, tmp_path):
    paths = offline.export(phones.values(), str(tmp_path / "csrs"))
    first = operator(paths[0], tmp_path / "a.crt")
    second = operator(paths[1], tmp_path / "b.crt")
    stranger = phone_csr("SEP00AABBCCDDEE", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    (tmp_path / "stranger.csr").write_text(stranger.pem)
    third = operator(tmp_path / "stranger.csr", tmp_path / "c.crt")
    (tmp_path / "junk.pem").write_text("not a certificate")
    sources = offline.read_files([str(first), str(first), str(second), str(third), str(tmp_path / "junk.pem")])
    sources.append(("ca.pem", pem(pki.issuing).encode()))
    replaced = [phones[os.path.basename(paths[1]).split(".")[0]]]
    still_pending = [item for item in phones.values() if item not in replaced]
    report = offline.import_certificates(sources, still_pending, [pki.root], superseded=replaced)
    assert [match.source for match in report.matched] == [str(first)]
    assert [item.source for item in report.stale] == [str(second)]
    assert "stale" in report.stale[0].reason
    reasons = {problem.source: problem.reason for problem in report.problems}
    assert "already imported" in reasons[str(first)]
    assert reasons[str(third)] == "its public key matches no pending CSR"
    assert "no PEM certificate" in reasons[str(tmp_path / "junk.pem")]
