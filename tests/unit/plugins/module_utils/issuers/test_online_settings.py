"""Building the configured online CA client from plain settings, and the end-to-end wiring calls."""

from __future__ import annotations

import pytest

from _opencapf import csr
from _opencapf.errors import ValidationError
from _opencapf.issuers import adcs, base, est, online
from support.third_party_ca import PASSWORD, USERNAME, accept, pem


def test_est_settings(pki):
    issuer = online.build({"type": "est", "hostname": "ca.example.test", "port": 8443, "profile_label": "phones",
                           "username": USERNAME}, [pem(pki.root)], password=PASSWORD)
    assert isinstance(issuer, est.EstIssuer) and issuer.label == "phones" and issuer.ec_supported
    assert issuer.client.base_url == "https://ca.example.test:8443"


def test_microsoft_settings_default_to_rsa_only(pki):
    issuer = online.build({"type": "microsoft", "hostname": "ca.example.test", "template": "PhoneLSC",
                           "auth": "ntlm", "username": "EXAMPLE\\capf"}, [pem(pki.root)], password=PASSWORD)
    assert isinstance(issuer, adcs.AdcsIssuer) and not issuer.ec_supported


@pytest.mark.parametrize("settings, fips, message", [
    ({"type": "microsoft", "hostname": "ca.example.test", "template": "T"}, True, "online_ca.type must not be"),
    ({"type": "microsoft", "hostname": "ca.example.test"}, False, "online_ca.template is required"),
    ({"type": "est", "hostname": "ca.example.test", "template": "T"}, False, "online_ca.template applies"),
    ({"type": "est", "hostname": "https://ca.example.test/"}, False, "online_ca.hostname must be"),
    ({"type": "est", "hostname": "ca.example.test", "port": 0}, False, "online_ca.port must be"),
    ({"type": "est", "hostname": "ca.example.test", "auth": "ntlm"}, False, "online_ca.auth ntlm"),
    ({"type": "scep", "hostname": "ca.example.test"}, False, "online_ca.type must be one of"),
    ({"type": "est", "hostname": "ca.example.test", "passwd": "x"}, False, "online_ca.passwd is not"),
])
def test_invalid_settings(pki, settings, fips, message):
    with pytest.raises(ValidationError, match=message):
        online.build(settings, [pem(pki.root)], fips_mode=fips)


def test_session_wiring_end_to_end(est_server, pki, rsa_key):
    """The calls the protocol session makes: prepare \u2192 (phone signs) \u2192 assemble \u2192 submit."""
    issuer = online.build({"type": "est", "hostname": "localhost", "port": est_server.port,
                           "profile_label": "phones", "username": USERNAME}, [pem(pki.root)], password=PASSWORD)
    request = csr.prepare("SEP001122334455", rsa_key.public_key(), subject_from=pki.issuing.subject)
    signature = csr.phone_sign(request.info, rsa_key, request.digest_code, request.key_type_code)
    signed = csr.assemble(request, signature)
    outcome = base.resolve(issuer, issuer.submit(signed.der), signed.der, 5)
    assert isinstance(outcome, base.Issued)
    verdict = accept(outcome, signed, [pki.root])
    assert verdict.chain[-1].subject == pki.root.subject
