"""Microsoft AD CS web enrolment against the loopback look-alike, in English, German and Japanese."""

from __future__ import annotations

import pytest

from _opencapf.issuers import acceptance, adcs, base
from support.third_party_ca import PASSWORD, USERNAME, AdcsServer, accept, connection, pem
from support.tools import openssl

TEMPLATE = "PhoneLSC"
LANGUAGES = ("en", "de", "ja")


def issuer_for(server, pki, **overrides):
    ec_supported = overrides.pop("ec_supported", False)
    template = overrides.pop("template", TEMPLATE)
    return adcs.AdcsIssuer(connection(server, pki, **overrides), template, ec_supported=ec_supported)


@pytest.mark.parametrize("adcs_server", LANGUAGES, indirect=True)
def test_issued_certificate_and_chain_verify_with_openssl(adcs_server, pki, rsa_csr, tmp_path):
    outcome = issuer_for(adcs_server, pki).submit(rsa_csr.der)
    assert isinstance(outcome, base.Issued), outcome
    assert outcome.reference == "41"
    form = adcs_server.forms[0]
    assert form["Mode"] == ["newreq"] and form["CertAttrib"] == [f"CertificateTemplate:{TEMPLATE}\r\n"]
    verdict = accept(outcome, rsa_csr, [pki.root])
    assert isinstance(verdict, acceptance.Accepted), verdict
    assert [item.subject for item in verdict.chain[1:]] == [pki.issuing.subject, pki.root.subject]
    (tmp_path / "root.pem").write_text(pem(pki.root))
    (tmp_path / "issuing.pem").write_text(pem(pki.issuing))
    (tmp_path / "lsc.pem").write_text(outcome.pem)
    result = openssl("verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "issuing.pem"),
                     str(tmp_path / "lsc.pem"))
    assert result.stdout.decode().strip().endswith(": OK")


@pytest.mark.parametrize("adcs_server", LANGUAGES, indirect=True)
def test_pending_then_issued(adcs_server, pki, rsa_csr):
    adcs_server.mode = "pending"
    issuer = issuer_for(adcs_server, pki)
    outcome = issuer.submit(rsa_csr.der)
    assert isinstance(outcome, base.Pending) and outcome.reference == "41"
    assert issuer.poll("41", rsa_csr.der) == base.Pending("41")
    adcs_server.issue(41)  # the CA manager approves
    final = issuer.poll("41", rsa_csr.der)
    assert isinstance(final, base.Issued), final
    assert final.certificate.public_key().public_numbers() == rsa_csr.csr.public_key().public_numbers()


@pytest.mark.parametrize("adcs_server", LANGUAGES, indirect=True)
def test_pending_then_denied_by_the_manager(adcs_server, pki, rsa_csr):
    adcs_server.mode = "pending"
    issuer = issuer_for(adcs_server, pki)
    outcome = issuer.submit(rsa_csr.der)
    adcs_server.deny(int(outcome.reference))
    final = issuer.poll(outcome.reference, rsa_csr.der)
    assert isinstance(final, base.Rejected) and final.code == base.DENIED
    assert "0x80094011" in final.reason


@pytest.mark.parametrize("adcs_server", LANGUAGES, indirect=True)
def test_denied_at_submission(adcs_server, pki, rsa_csr):
    adcs_server.mode = "deny"
    outcome = issuer_for(adcs_server, pki).submit(rsa_csr.der)
    assert isinstance(outcome, base.Rejected) and outcome.code == base.DENIED
    assert "HRESULT 0x80094011" in outcome.reason


def test_template_the_ca_does_not_offer(adcs_server, pki, rsa_csr):
    outcome = issuer_for(adcs_server, pki, template="NoSuchTemplate").submit(rsa_csr.der)
    assert isinstance(outcome, base.Rejected)
    assert "CERTSRV_E_UNSUPPORTED_CERT_TYPE" in outcome.reason


def test_template_name_is_validated():
    with pytest.raises(Exception, match="template must be"):
        adcs.check_template("Phone\r\nSAN:dns=evil")


def test_ec_key_refused_before_submission_by_default(adcs_server, pki, ec_csr):
    with pytest.raises(base.IssuerError, match="RSA keys only") as caught:
        issuer_for(adcs_server, pki).submit(ec_csr.der)
    assert caught.value.code == base.UNSUPPORTED_KEY
    assert adcs_server.forms == []


def test_ec_key_accepted_when_the_template_allows_it(adcs_server, pki, ec_csr):
    outcome = issuer_for(adcs_server, pki, ec_supported=True).submit(ec_csr.der)
    assert isinstance(outcome, base.Issued), outcome


def test_wrong_password(adcs_server, pki, rsa_csr):
    with pytest.raises(base.IssuerError, match="HTTP 401") as caught:
        issuer_for(adcs_server, pki, password="wrong").submit(rsa_csr.der)
    assert caught.value.code == base.AUTHENTICATION
    assert PASSWORD not in str(caught.value)


def test_malformed_page(adcs_server, pki, rsa_csr):
    adcs_server.malformed = True
    with pytest.raises(base.IssuerError, match="neither a certificate link") as caught:
        issuer_for(adcs_server, pki).submit(rsa_csr.der)
    assert caught.value.code == base.MALFORMED


def test_certificate_without_key_usage_is_handed_over_and_refused_by_the_check(adcs_server, pki, rsa_csr):
    adcs_server.key_usage = False
    outcome = issuer_for(adcs_server, pki).submit(rsa_csr.der)
    assert isinstance(outcome, base.Issued), outcome
    verdict = accept(outcome, rsa_csr, [pki.root])
    assert isinstance(verdict, acceptance.Refused) and verdict.code == acceptance.MISSING_KEY_USAGE


def test_hostname_mismatch(pki, rsa_csr, tmp_path):
    with AdcsServer(pki, str(tmp_path), names=("ca.wrong.example",), addresses=()) as server:
        with pytest.raises(base.IssuerError) as caught:
            issuer_for(server, pki).submit(rsa_csr.der)
    assert caught.value.code == base.TLS_HOSTNAME
    assert server.forms == []


def test_ntlm_authentication(pki, rsa_csr, tmp_path, monkeypatch):
    users = tmp_path / "ntlm-users"
    users.write_text(f"EXAMPLE:{USERNAME}:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    with AdcsServer(pki, str(tmp_path / "adcs"), ntlm=True) as server:
        outcome = issuer_for(server, pki, username=f"EXAMPLE\\{USERNAME}", auth="ntlm").submit(rsa_csr.der)
        assert isinstance(outcome, base.Issued), outcome
        assert server.ntlm_users == [f"EXAMPLE\\{USERNAME}"]
        with pytest.raises(base.IssuerError) as caught:
            issuer_for(server, pki, username=f"EXAMPLE\\{USERNAME}", password="wrong", auth="ntlm").submit(
                rsa_csr.der)
        assert caught.value.code == base.AUTHENTICATION


@pytest.mark.parametrize("page, expected", [
    ("<P><LocID ID=locReqIdInfo>Ihre Anforderungs-ID ist</LocID> 17.</P>", "17"),
    ("<P>\u8981\u6c42 ID: 23</P><script>var x = 5;</script>", "23"),
    ("<input type=hidden name=x value='ReqID=99'>", "99"),
    ("<P>nothing here</P>", None),
    ("<P>1 and 2</P>", None),
])
def test_pending_request_id_is_found_from_structure(page, expected):
    assert adcs.pending_request_id(page) == expected


def test_hresult_is_read_from_any_language():
    assert adcs.hresult("<P>Fehler: 0x80094012 (-2146877422 CERTSRV_E_TEMPLATE_DENIED)</P>") == 0x80094012
    assert adcs.hresult("<P>Seite 0x1234</P>") is None


def test_ca_certificate_not_in_capf_trust(adcs_server, other_pki, rsa_csr):
    with pytest.raises(base.IssuerError, match="CAPF-trust") as caught:
        issuer_for(adcs_server, other_pki).submit(rsa_csr.der)
    assert caught.value.code == base.TLS_UNTRUSTED
    assert adcs_server.forms == []


def test_mutual_tls_towards_ad_cs(pki, rsa_csr, tmp_path):
    certificate, key = pki.client_certificate()
    cert_path, key_path = pki.write_files(str(tmp_path / "client"), certificate, key)
    with AdcsServer(pki, str(tmp_path / "adcs"), client_ca=pki.root) as server:
        with pytest.raises(base.IssuerError) as caught:
            issuer_for(server, pki).submit(rsa_csr.der)
        assert caught.value.code == base.TLS_FAILED
        outcome = issuer_for(server, pki, client_certificate=cert_path, client_key=key_path).submit(rsa_csr.der)
        assert isinstance(outcome, base.Issued), outcome
