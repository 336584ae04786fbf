"""EST (RFC 7030) against the loopback EST CA: success, 202 + Retry-After, and each failure path."""

from __future__ import annotations

import base64
import datetime as dt
import os
import socket

import pytest

from _opencapf.dependencies import pkcs7, serialization, x509
from _opencapf.issuers import acceptance, base, est
from support.third_party_ca import PASSWORD, USERNAME, EstServer, accept, connection, pem
from support.tools import openssl


def verify_with_openssl(tmp_path, outcome, chain, pki):
    (tmp_path / "root.pem").write_text(pem(pki.root))
    (tmp_path / "chain.pem").write_text("".join(pem(item) for item in chain[1:-1]))
    (tmp_path / "lsc.pem").write_text(outcome.pem)
    result = openssl("verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "chain.pem"),
                     str(tmp_path / "lsc.pem"))
    assert result.stdout.decode().strip().endswith(": OK")


def test_enrol_with_profile_label_issues_a_chain_to_the_test_ca(est_server, pki, rsa_csr, tmp_path):
    issuer = est.EstIssuer(connection(est_server, pki), "phones")
    outcome = issuer.submit(rsa_csr.der)
    issuer.close()
    assert isinstance(outcome, base.Issued), outcome
    assert outcome.certificate.public_key().public_numbers() == rsa_csr.csr.public_key().public_numbers()
    verdict = accept(outcome, rsa_csr, [pki.root])
    assert isinstance(verdict, acceptance.Accepted), verdict
    assert [item.subject for item in verdict.chain[1:]] == [pki.issuing.subject, pki.root.subject]
    assert est_server.log == [("simpleenroll", "phones", "Basic ")]
    verify_with_openssl(tmp_path, outcome, verdict.chain, pki)


def test_unlabelled_path_and_simplereenroll(est_server, pki, ec_csr):
    issuer = est.EstIssuer(connection(est_server, pki))
    outcome = issuer.submit(ec_csr.der, renewal=True)
    assert isinstance(outcome, base.Issued), outcome
    assert est_server.log == [("simplereenroll", None, "Basic ")]


def test_cacerts_returns_the_ca_certificates(est_server, pki):
    certificates = est.EstIssuer(connection(est_server, pki), "phones").cacerts()
    assert {item.subject for item in certificates} == {pki.issuing.subject, pki.root.subject}


def test_unknown_profile_label_is_a_configuration_error(est_server, pki, rsa_csr):
    with pytest.raises(base.IssuerError, match="profile label") as caught:
        est.EstIssuer(connection(est_server, pki), "no-such-profile").submit(rsa_csr.der)
    assert caught.value.code == base.CONFIGURATION


def test_invalid_label_is_refused():
    with pytest.raises(Exception, match="profile_label must be"):
        est.check_label("a/b")


def test_202_with_retry_after_then_issued(est_server, pki, rsa_csr):
    est_server.pending_first = 1
    issuer = est.EstIssuer(connection(est_server, pki), "phones")
    outcome = issuer.submit(rsa_csr.der)
    assert outcome == base.Pending("simpleenroll", 1)
    waits = []
    final = base.resolve(issuer, outcome, rsa_csr.der, 30, sleep=waits.append)
    assert isinstance(final, base.Issued), final
    assert waits == [1]
    assert len(est_server.log) == 2


def test_pending_beyond_the_budget_stays_pending(est_server, pki, rsa_csr):
    est_server.pending_first = 100
    est_server.retry_after = 120
    issuer = est.EstIssuer(connection(est_server, pki), "phones")
    outcome = base.resolve(issuer, issuer.submit(rsa_csr.der), rsa_csr.der, 30, sleep=pytest.fail)
    assert outcome == base.Pending("simpleenroll", 120)


def test_retry_after_header_forms():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert est.retry_after("30") == 30
    assert est.retry_after("Thu, 01 Jan 2026 00:02:00 GMT", now) == 120
    assert est.retry_after(None) == base.DEFAULT_RETRY_AFTER
    assert est.retry_after("999999999") == base.MAX_RETRY_AFTER
    assert est.retry_after("0") == 1


def test_wrong_password_is_reported_without_the_password(est_server, pki, rsa_csr):
    issuer = est.EstIssuer(connection(est_server, pki, password="not-the-password"), "phones")
    with pytest.raises(base.IssuerError) as caught:
        issuer.submit(rsa_csr.der)
    assert caught.value.code == base.AUTHENTICATION
    assert USERNAME in str(caught.value) and "not-the-password" not in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_malformed_answer(est_server, pki, rsa_csr):
    est_server.malformed = True
    with pytest.raises(base.IssuerError, match="PKCS#7") as caught:
        est.EstIssuer(connection(est_server, pki), "phones").submit(rsa_csr.der)
    assert caught.value.code == base.MALFORMED


def test_certificate_without_key_usage_is_handed_over_and_refused_by_the_check(est_server, pki, rsa_csr):
    est_server.key_usage = False
    outcome = est.EstIssuer(connection(est_server, pki), "phones").submit(rsa_csr.der)
    assert isinstance(outcome, base.Issued), outcome
    verdict = accept(outcome, rsa_csr, [pki.root])
    assert isinstance(verdict, acceptance.Refused) and verdict.code == acceptance.MISSING_KEY_USAGE
    assert "digitalSignature and keyEncipherment" in verdict.reason


def test_denied_request(est_server, pki, rsa_csr):
    est_server.deny = True
    outcome = est.EstIssuer(connection(est_server, pki), "phones").submit(rsa_csr.der)
    assert isinstance(outcome, base.Rejected) and outcome.code == base.DENIED
    assert "HTTP 403" in outcome.reason


def test_lsc_not_chaining_to_capf_trust_is_refused(est_server, pki, rsa_csr):
    # TLS trusts the CA's HTTPS certificate only (Table 1, last row), so the LSC has no trusted chain.
    issuer = est.EstIssuer(connection(est_server, pki, trust_pems=(pem(est_server.certificate),)), "phones")
    outcome = issuer.submit(rsa_csr.der)
    verdict = accept(outcome, rsa_csr, [est_server.certificate])
    assert isinstance(verdict, acceptance.Refused) and verdict.code == acceptance.UNTRUSTED_CHAIN


def test_hostname_mismatch(pki, rsa_csr, tmp_path):
    with EstServer(pki, str(tmp_path), names=("ca.wrong.example",), addresses=()) as server:
        with pytest.raises(base.IssuerError, match="host name mismatch") as caught:
            est.EstIssuer(connection(server, pki), "phones").submit(rsa_csr.der)
    assert caught.value.code == base.TLS_HOSTNAME
    assert server.log == []


def test_ip_address_must_be_in_the_certificate(pki, rsa_csr, tmp_path):
    with EstServer(pki, str(tmp_path), names=("localhost",), addresses=()) as server:
        with pytest.raises(base.IssuerError) as caught:
            est.EstIssuer(connection(server, pki, hostname="127.0.0.1"), "phones").submit(rsa_csr.der)
    assert caught.value.code == base.TLS_HOSTNAME


def test_ca_certificate_not_in_capf_trust(est_server, pki, other_pki, rsa_csr):
    with pytest.raises(base.IssuerError, match="not trusted.*CAPF-trust") as caught:
        est.EstIssuer(connection(est_server, other_pki), "phones").submit(rsa_csr.der)
    assert caught.value.code == base.TLS_UNTRUSTED
    assert est_server.log == []


def test_ca_unreachable(pki, rsa_csr):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    issuer = est.EstIssuer(est.Connection("localhost", port, (pem(pki.root),), USERNAME, PASSWORD, timeout=5))
    with pytest.raises(base.IssuerError, match="unreachable") as caught:
        issuer.submit(rsa_csr.der)
    assert caught.value.code == base.UNREACHABLE


def test_no_trust_certificates_is_a_configuration_error(est_server, pki):
    with pytest.raises(base.IssuerError, match="CAPF-trust") as caught:
        est.EstIssuer(connection(est_server, pki, trust_pems=()))
    assert caught.value.code == base.CONFIGURATION


def test_mutual_tls(pki, rsa_csr, tmp_path):
    certificate, key = pki.client_certificate()
    cert_path, key_path = pki.write_files(str(tmp_path / "client"), certificate, key)
    with EstServer(pki, str(tmp_path / "server"), client_ca=pki.root) as server:
        with pytest.raises(base.IssuerError, match="client certificate") as caught:
            est.EstIssuer(connection(server, pki), "phones").submit(rsa_csr.der)
        assert caught.value.code == base.TLS_FAILED
        issuer = est.EstIssuer(connection(server, pki, client_certificate=cert_path, client_key=key_path), "phones")
        assert isinstance(issuer.submit(rsa_csr.der), base.Issued)
        assert len(server.log) == 1


def test_client_key_readable_by_others_is_refused(pki, tmp_path):
    certificate, key = pki.client_certificate()
    cert_path, key_path = pki.write_files(str(tmp_path), certificate, key)
    os.chmod(key_path, 0o644)
    with pytest.raises(base.IssuerError, match="chmod 600") as caught:
        est.EstIssuer(est.Connection("localhost", 443, (pem(pki.root),), client_certificate=cert_path,
                                     client_key=key_path))
    assert caught.value.code == base.CONFIGURATION


def test_ec_key_refused_before_submission_when_the_ca_path_is_rsa_only(est_server, pki, ec_csr):
    issuer = est.EstIssuer(connection(est_server, pki), "phones", ec_supported=False)
    with pytest.raises(base.IssuerError, match="RSA keys only") as caught:
        issuer.submit(ec_csr.der)
    assert caught.value.code == base.UNSUPPORTED_KEY
    assert est_server.log == []


def test_request_signed_by_another_key_is_never_sent(est_server, pki, rsa_csr, ec_csr):
    forged = bytearray(rsa_csr.der)
    forged[-5] ^= 0x01  # corrupt the phone's signature
    with pytest.raises(base.IssuerError, match="does not verify"):
        est.EstIssuer(connection(est_server, pki), "phones").submit(bytes(forged))
    assert est_server.log == []


def test_certs_only_answers_in_every_armour(pki):
    der = pkcs7.serialize_certificates([pki.issuing, pki.root], serialization.Encoding.DER)
    armoured = pkcs7.serialize_certificates([pki.issuing, pki.root], serialization.Encoding.PEM)
    ad_cs = b"-----BEGIN CERTIFICATE-----\r\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\r\n"
    for body in (der, base64.encodebytes(der), armoured, ad_cs):
        assert len(est.parse_certs_only(body, "answer")) == 2
    with pytest.raises(base.IssuerError, match="not a PKCS#7"):
        est.parse_certs_only(b"\x30\x03\x02\x01\x00", "answer")


def test_hostname_in_the_common_name_only_is_accepted(pki, rsa_csr, tmp_path):
    # The source requires the host name to equal the CN/FQDN of the CA's HTTPS certificate.
    with EstServer(pki, str(tmp_path / "a"), names=("cn:localhost",), addresses=()) as server:
        with pytest.raises(x509.ExtensionNotFound):
            server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert isinstance(est.EstIssuer(connection(server, pki), "phones").submit(rsa_csr.der), base.Issued)
    with EstServer(pki, str(tmp_path / "b"), names=("cn:ca.other.example",), addresses=()) as server:
        with pytest.raises(base.IssuerError) as caught:
            est.EstIssuer(connection(server, pki), "phones").submit(rsa_csr.der)
        assert caught.value.code == base.TLS_HOSTNAME


def test_ca_that_accepts_but_never_answers(pki, rsa_csr):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        issuer = est.EstIssuer(est.Connection("localhost", silent.getsockname()[1], (pem(pki.root),), timeout=1))
        with pytest.raises(base.IssuerError, match="did not answer within 1 s") as caught:
            issuer.submit(rsa_csr.der)
    assert caught.value.code == base.TIMEOUT
