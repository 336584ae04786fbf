"""An LSC encoded from its signer's template is the LSC the library's builder makes from the same parts.

Invariant: for every signer (RSA or EC key, any inherited subject attributes), phone key kind, CRL
location, serial, validity and device name, ``lsc_der`` gives exactly the certificate ``build_lsc``
gives (byte for byte with an RSA CAPF key, whose PKCS#1 v1.5 signature is deterministic; the same
TBSCertificate and signature algorithm, and a signature the CAPF key verifies, with an EC one),
and refuses exactly what ``build_lsc`` refuses.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from _opencapf import der
from _opencapf.ca import authority, certificates as c, lsc, lsc_template
from _opencapf.dependencies import ec, hashes, rsa, x509, NameOID
from cryptography.hazmat.primitives.asymmetric import ed25519

_SUBJECT_ATTRIBUTES = (
    (NameOID.ORGANIZATION_NAME, "Example Voice"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "UC"),
    (NameOID.LOCALITY_NAME, "Wellington"), (NameOID.STATE_OR_PROVINCE_NAME, "WGN"), (NameOID.COUNTRY_NAME, "NZ"),
)
_KEYS = {}


def _key(kind: str, index: int = 0):
    """Keys made once per test run (RSA keys are slow to make)."""
    if (kind, index) not in _KEYS:
        _KEYS[kind, index] = (rsa.generate_private_key(65537, 2048) if kind == "rsa"
                              else ec.generate_private_key(ec.SECP256R1() if index == 0 else ec.SECP384R1()))
    return _KEYS[kind, index]


def _signer(kind: str, attributes: tuple, index: int = 0, not_after=dt.datetime(2080, 1, 1)) -> authority.Signer:
    key = _key(kind, index)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"CAPF-{kind}{index}"),
                         *(x509.NameAttribute(oid, value) for oid, value in attributes)])
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(index + 1).not_valid_before(dt.datetime(2020, 1, 1)).not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, hashes.SHA256()))
    return authority.Signer(index + 1, certificate, key)


def _same_certificate(template_der: bytes, built_der: bytes, signer: authority.Signer) -> None:
    if isinstance(signer.private_key, rsa.RSAPrivateKey):
        assert template_der == built_der
        return
    made, built = (der.children(der.read_one(item, der.SEQUENCE)) for item in (template_der, built_der))
    assert [part.encoded for part in made[:2]] == [part.encoded for part in built[:2]]  # TBSCertificate, algorithm
    signer.private_key.public_key().verify(made[2].value[1:], made[0].encoded, ec.ECDSA(hashes.SHA256()))
    assert x509.load_der_x509_certificate(template_der).tbs_certificate_bytes == made[0].encoded


_names = st.one_of(
    st.from_regex(r"SEP[0-9A-F]{12}", fullmatch=True),
    st.from_regex(r"CSF[A-Z0-9._-]{1,46}", fullmatch=True),
    st.text(min_size=1, max_size=64),  # whatever the builder takes as a common name: any length of encoding
)
_moments = st.datetimes(min_value=dt.datetime(2021, 1, 1), max_value=dt.datetime(2079, 1, 1)).map(
    lambda moment: moment.replace(microsecond=0, tzinfo=dt.timezone.utc))


_SIGNERS = {"rsa": ("rsa", 0), "ec": ("ec", 0), "ec384": ("ec", 1)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signer_kind=st.sampled_from(sorted(_SIGNERS)), phone_kind=st.sampled_from(["rsa", "ec"]),
       attributes=st.lists(st.sampled_from(_SUBJECT_ATTRIBUTES), unique=True, max_size=5).map(tuple),
       crl_url=st.sampled_from(["", "http://capf.example/crl", "http://10.0.0.1:8080/" + "c" * 120 + ".crl"]),
       serial=st.one_of(st.integers(1, 2 ** 159 - 1), st.sampled_from([1, 127, 128, 255, 256, 2 ** 158, 2 ** 159 - 1])),
       now=_moments, validity_days=st.integers(1, 20_000), name=_names)
def test_an_lsc_from_the_template_is_the_builders(signer_kind, phone_kind, attributes, crl_url, serial, now,
                                                  validity_days, name):
    lsc_template._templates.clear()  # each example learns its template from its own first LSC
    kind, index = _SIGNERS[signer_kind]
    signer = _signer(kind, attributes, index)
    phone_key = _key(phone_kind, 5).public_key()
    first = lsc.lsc_der(signer, "SEP00AABBCCDD00", phone_key, 30, 5, now, crl_url)  # the builder's: the prototype
    assert first == c.to_der(lsc.build_lsc(signer, "SEP00AABBCCDD00", phone_key, 30, 5, now, crl_url)) \
        or not isinstance(signer.private_key, rsa.RSAPrivateKey)
    assert lsc_template.cached((signer.fingerprint, phone_kind, lsc.crl.issuer_location(crl_url, signer.fingerprint)
                                if crl_url else ""))[1] is not None, "the template did not rebuild its prototype"
    try:
        built = c.to_der(lsc.build_lsc(signer, name, phone_key, validity_days, serial, now, crl_url))
    except ValueError:  # a common name of more than 64 octets
        with pytest.raises(ValueError):
            lsc.lsc_der(signer, name, phone_key, validity_days, serial, now, crl_url)
        return
    _same_certificate(lsc.lsc_der(signer, name, phone_key, validity_days, serial, now, crl_url), built, signer)


@pytest.mark.parametrize("arguments, message", [
    ({"serial": 0}, "serial"), ({"serial": 2 ** 159}, "serial"), ({"validity_days": 0}, "at least one day"),
    ({"name": "A" * 65}, "64"), ({"name": ""}, "64"),
])
def test_the_template_refuses_what_the_builder_refuses(arguments, message):
    signer = _signer("ec", ())
    phone_key = _key("ec", 5).public_key()
    now = dt.datetime(2026, 12, 7, 1, 2, 3, tzinfo=dt.timezone.utc)
    lsc.lsc_der(signer, "SEP00AABBCCDD00", phone_key, 30, 5, now)  # the template is learnt
    call = {"name": "SEP00AABBCCDD01", "serial": 7, "validity_days": 30, **arguments}
    for make in (lsc.lsc_der, lsc.build_lsc):
        with pytest.raises(ValueError):
            make(signer, call["name"], phone_key, call["validity_days"], call["serial"], now)
    with pytest.raises(ValueError, match=message):
        lsc.lsc_der(signer, call["name"], phone_key, call["validity_days"], call["serial"], now)


def test_the_validity_ends_with_the_capf_certificate_on_both_paths():
    signer = _signer("rsa", (), not_after=dt.datetime(2027, 1, 1))
    phone_key = _key("ec", 5).public_key()
    now = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)
    lsc_template._templates.clear()
    lsc.lsc_der(signer, "SEP00AABBCCDD00", phone_key, 30, 5, now)
    made = x509.load_der_x509_certificate(lsc.lsc_der(signer, "SEP00AABBCCDD02", phone_key, 365, 9, now))
    assert made.not_valid_after_utc == dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)


def test_a_template_that_cannot_rebuild_its_prototype_is_never_used(monkeypatch):
    """A wrong encoding of a varying part (here the common name as a PrintableString) is caught when
    the template is learnt: the builder then makes every LSC of that signer, kind and CRL location."""
    lsc_template._templates.clear()
    signer = _signer("rsa", ())
    phone_key = _key("ec", 5).public_key()
    now = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(lsc_template, "UTF8_STRING", 0x13)
    first = lsc.lsc_der(signer, "SEP00AABBCCDD00", phone_key, 30, 5, now)
    assert lsc_template.cached((signer.fingerprint, "ec", "")) == (True, None)
    built, builder = [], lsc._built
    monkeypatch.setattr(lsc, "_built", lambda *args: built.append(args) or builder(*args))
    second = lsc.lsc_der(signer, "SEP00AABBCCDD01", phone_key, 30, 6, now)
    assert len(built) == 1 and x509.load_der_x509_certificate(second).subject.rfc4514_string() == \
        "CN=SEP00AABBCCDD01"
    assert x509.load_der_x509_certificate(first).subject.rfc4514_string() == "CN=SEP00AABBCCDD00"


def test_a_signer_key_the_template_cannot_sign_with_leaves_the_builder_in_charge():
    """An Ed25519 CAPF key (no SHA-256 signature for the template to make): no template is learnt."""
    lsc_template._templates.clear()
    key = ed25519.Ed25519PrivateKey.generate()
    assert lsc_template.learn(("x", "ec", ""), key, b"\x30\x00", ()) is None
    assert lsc_template.cached(("x", "ec", "")) == (True, None)
