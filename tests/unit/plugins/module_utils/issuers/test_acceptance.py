"""The acceptance check of a certificate a third-party CA returned: each rule, its code, its edges."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest

from _opencapf.dependencies import ExtendedKeyUsageOID, NameOID, ec, hashes, x509
from _opencapf.issuers import acceptance
from _opencapf.vocabulary import CERTIFICATE_REFUSALS
from support.third_party_ca import DEFECTS, OTHER_DEVICE

DEVICE = "SEP001122334455"


def _usage(**flags):
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{flag: bool(flags.get(flag)) for flag in names})


LSC_USAGE = _usage(digital_signature=True, key_encipherment=True)


def _name(*attributes):
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def issue(pki, public_key, *, subject=None, usage=LSC_USAGE, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), san=None,
          start=None, days=365, ca=False):
    """A certificate from the test PKI's issuing CA, every part chosen by the test."""
    start = start or pki.now
    builder = (x509.CertificateBuilder().subject_name(subject or _name((NameOID.COMMON_NAME, DEVICE)))
               .issuer_name(pki.issuing.subject).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(pki.issuing_key, hashes.SHA256())


def check(pki, certificate, public_key, **options):
    options.setdefault("anchors", [pki.root])
    options.setdefault("intermediates", [pki.issuing])
    return acceptance.check(certificate, device_name=DEVICE, public_key=public_key, **options)


def code_of(verdict):
    return verdict.code if isinstance(verdict, acceptance.Refused) else "accepted"


def test_codes_are_the_vocabulary():
    assert acceptance.WRONG_SUBJECT == "wrong_subject" and acceptance.UNTRUSTED_CHAIN == "untrusted_chain"
    assert set(DEFECTS) < set(CERTIFICATE_REFUSALS)


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_each_defect_of_a_ca_answer_gets_its_code(pki, rsa_csr, ec_csr, defect, key):
    signed = rsa_csr if key == "rsa" else ec_csr
    certificate = pki.sign_request(signed.csr, defect=defect)
    verdict = acceptance.check(certificate, device_name=signed.device_name, public_key=signed.csr.public_key(),
                               anchors=[pki.root], intermediates=[pki.issuing])
    assert code_of(verdict) == defect, verdict


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_the_answer_asked_for_is_accepted_with_its_chain(pki, rsa_csr, ec_csr, key):
    signed = rsa_csr if key == "rsa" else ec_csr
    certificate = pki.sign_request(signed.csr)
    verdict = acceptance.check(certificate, device_name=signed.device_name, public_key=signed.csr.public_key(),
                               anchors=[pki.root], intermediates=[pki.issuing])
    assert isinstance(verdict, acceptance.Accepted), verdict
    assert [item.subject for item in verdict.chain] == [certificate.subject, pki.issuing.subject, pki.root.subject]


def test_the_ca_may_set_o_ou_l_st_c(pki, rsa_key):
    subject = _name((NameOID.COUNTRY_NAME, "NZ"), (NameOID.STATE_OR_PROVINCE_NAME, "Canterbury"),
                    (NameOID.LOCALITY_NAME, "Christchurch"), (NameOID.ORGANIZATION_NAME, "Example"),
                    (NameOID.ORGANIZATIONAL_UNIT_NAME, "Phones"), (NameOID.COMMON_NAME, DEVICE))
    verdict = check(pki, issue(pki, rsa_key.public_key(), subject=subject), rsa_key.public_key())
    assert isinstance(verdict, acceptance.Accepted), verdict


@pytest.mark.parametrize("attributes", [
    [(NameOID.COMMON_NAME, OTHER_DEVICE)],
    [(NameOID.COMMON_NAME, DEVICE.lower())],
    [(NameOID.COMMON_NAME, DEVICE + "2")],
    [(NameOID.COMMON_NAME, "CP-8841-" + DEVICE)],
    [(NameOID.COMMON_NAME, DEVICE), (NameOID.COMMON_NAME, OTHER_DEVICE)],
    [(NameOID.ORGANIZATION_NAME, DEVICE)],
    [(NameOID.COMMON_NAME, DEVICE), (NameOID.SERIAL_NUMBER, OTHER_DEVICE)],
    [(NameOID.COMMON_NAME, DEVICE), (NameOID.USER_ID, OTHER_DEVICE)],
], ids=["other", "lower-case", "longer", "mic-style", "two-cns", "no-cn", "serial-number", "uid"])
def test_a_subject_that_does_not_name_exactly_the_device_is_refused(pki, rsa_key, attributes):
    certificate = issue(pki, rsa_key.public_key(), subject=_name(*attributes))
    assert code_of(check(pki, certificate, rsa_key.public_key())) == acceptance.WRONG_SUBJECT


@pytest.mark.parametrize("entries, expected", [
    ([x509.DirectoryName(_name((NameOID.COMMON_NAME, DEVICE)))], "accepted"),
    ([x509.DNSName(DEVICE.lower()), x509.UniformResourceIdentifier(DEVICE)], "accepted"),
    ([x509.DirectoryName(_name((NameOID.COMMON_NAME, OTHER_DEVICE)))], "wrong_subject_alt_name"),
    ([x509.DirectoryName(_name((NameOID.COMMON_NAME, DEVICE))), x509.DNSName("ca.example.com")],
     "wrong_subject_alt_name"),
    ([x509.IPAddress(ipaddress.ip_address("192.0.2.10"))], "wrong_subject_alt_name"),
    ([x509.RFC822Name("phone@example.com")], "wrong_subject_alt_name"),
], ids=["directory-name", "dns-and-uri", "other-directory-name", "extra-dns", "ip", "email"])
def test_every_subject_alt_name_entry_names_the_device(pki, rsa_key, entries, expected):
    certificate = issue(pki, rsa_key.public_key(), san=entries)
    assert code_of(check(pki, certificate, rsa_key.public_key())) == expected


@pytest.mark.parametrize("usage, eku, expected", [
    (_usage(digital_signature=True, key_encipherment=True), None, "accepted"),
    (_usage(digital_signature=True, key_encipherment=True), (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,),
     "accepted"),
    (_usage(digital_signature=True), None, "missing_key_usage"),
    (_usage(key_encipherment=True), None, "missing_key_usage"),
    (None, None, "missing_key_usage"),
    (_usage(digital_signature=True, key_encipherment=True), (ExtendedKeyUsageOID.SERVER_AUTH,), "missing_key_usage"),
    (_usage(digital_signature=True, key_encipherment=True, key_cert_sign=True), None, "is_ca"),
    (_usage(digital_signature=True, key_encipherment=True, crl_sign=True), None, "is_ca"),
], ids=["ku", "any-eku", "no-encipherment", "no-signature", "none", "server-only", "cert-sign", "crl-sign"])
def test_rsa_key_usages(pki, rsa_key, usage, eku, expected):
    certificate = issue(pki, rsa_key.public_key(), usage=usage, eku=eku)
    assert code_of(check(pki, certificate, rsa_key.public_key())) == expected


def test_ec_keys_may_use_key_agreement_as_our_profile_does(pki, ec_key):
    certificate = issue(pki, ec_key.public_key(), usage=_usage(digital_signature=True, key_agreement=True))
    assert code_of(check(pki, certificate, ec_key.public_key())) == "accepted"


def test_clock_skew_allowance(pki, rsa_key):
    certificate = issue(pki, rsa_key.public_key(), days=1)
    starts = certificate.not_valid_before_utc
    skew = acceptance.CLOCK_SKEW
    assert skew == dt.timedelta(minutes=5)
    assert code_of(check(pki, certificate, rsa_key.public_key(), at=starts - skew)) == "accepted"
    assert code_of(check(pki, certificate, rsa_key.public_key(),
                         at=starts - skew - dt.timedelta(seconds=1))) == "not_yet_valid"
    ends = certificate.not_valid_after_utc
    assert code_of(check(pki, certificate, rsa_key.public_key(), at=ends - dt.timedelta(seconds=1))) == "accepted"
    assert code_of(check(pki, certificate, rsa_key.public_key(), at=ends)) == "expired"


def test_a_chain_through_an_expired_or_missing_ca_is_untrusted(pki, rsa_key):
    certificate = issue(pki, rsa_key.public_key())
    later = pki.issuing.not_valid_after_utc + dt.timedelta(days=1)
    long_lived = issue(pki, rsa_key.public_key(), days=5000)
    verdict = check(pki, long_lived, rsa_key.public_key(), at=later)
    assert code_of(verdict) == "untrusted_chain" and "Issuing CA" in verdict.reason
    assert code_of(check(pki, certificate, rsa_key.public_key(), intermediates=[])) == "untrusted_chain"
    assert code_of(check(pki, certificate, rsa_key.public_key(), anchors=[])) == "untrusted_chain"
    assert code_of(check(pki, certificate, rsa_key.public_key(), anchors=[pki.issuing], intermediates=[])) == \
        "accepted"


def test_a_certificate_for_another_key_is_refused_first(pki, rsa_key):
    stranger = ec.generate_private_key(ec.SECP256R1())
    certificate = issue(pki, stranger.public_key(), subject=_name((NameOID.COMMON_NAME, OTHER_DEVICE)), usage=None)
    verdict = check(pki, certificate, rsa_key.public_key())
    assert code_of(verdict) == "wrong_key" and "different public key" in verdict.reason
