"""Phone-signed PKCS#10 (X-CSR/1): request info, what the phone signs, assembly, verification."""

from __future__ import annotations

import hashlib

import pytest

from _opencapf import csr, der
from _opencapf.ca import certificates as c
from _opencapf.dependencies import ec, rsa, serialization, x509, NameOID
from _opencapf.errors import CertificateError, ValidationError
from support.tools import openssl

DEVICE = "SEP001122334455"
ISSUER_NAME = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "NZ"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Enterprise"),
    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Voice"),
    x509.NameAttribute(NameOID.COMMON_NAME, "Example Issuing CA"),
])


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP384R1())


def signed(key, digest="sha256", subject_from=ISSUER_NAME):
    request = csr.prepare(DEVICE, key.public_key(), subject_from=subject_from, digest=digest)
    return request, csr.assemble(request, csr.phone_sign(request.info, key, digest, request.key_type_code))


@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
@pytest.mark.parametrize("digest", ["sha256", "sha512"])
def test_request_verifies_with_openssl(request, key_name, digest, tmp_path):
    key = request.getfixturevalue(key_name)
    _request, result = signed(key, digest)
    path = tmp_path / "request.pem"
    path.write_text(result.pem)
    checked = openssl("req", "-in", str(path), "-verify", "-noout", "-text")
    text = checked.stdout.decode()
    assert "verify OK" in (checked.stdout + checked.stderr).decode()
    # CN first, then the issuer's O/OU/L/ST/C attributes in the order they appear there.
    assert "Subject: CN = SEP001122334455, C = NZ, O = Example Enterprise, OU = Voice" in text
    algorithm = f"ecdsa-with-{digest.upper()}" if key_name == "ec_key" else f"{digest}WithRSAEncryption"
    assert f"Signature Algorithm: {algorithm}" in text
    assert "Requested Extensions" in text and "TLS Web Client Authentication" in text
    usage = "Digital Signature, Key Encipherment" if key_name == "rsa_key" else "Digital Signature, Key Agreement"
    assert usage in text
    assert result.csr.signature_hash_algorithm.name == digest


def test_spki_is_carried_byte_for_byte(rsa_key):
    spki = c.public_key_der(rsa_key.public_key())
    request = csr.prepare(DEVICE, spki)
    assert csr.request_spki(request.info) == spki
    parts = der.children(der.read_one(request.info, der.SEQUENCE))
    assert der.read_integer(parts[0]) == 0
    assert parts[3].tag == 0xA0  # attributes [0] with the extensionRequest


def test_rsa_signature_is_a_raw_private_operation_on_the_padded_digest_info(rsa_key):
    """Hypothesis (a) of capf-protocol.md 6.2: the phone's raw 'private encrypt' of the type-1
    padded DigestInfo is exactly the PKCS#1 v1.5 signature the request carries."""
    request, result = signed(rsa_key, "sha512")
    numbers = rsa_key.public_key().public_numbers()
    size = (numbers.n.bit_length() + 7) // 8
    block = pow(int.from_bytes(result.csr.signature, "big"), numbers.e, numbers.n).to_bytes(size, "big")
    padding_length = size - 3 - len(request.to_sign)
    assert block == b"\x00\x01" + b"\xff" * padding_length + b"\x00" + request.to_sign
    assert request.to_sign.endswith(hashlib.sha512(request.info).digest())


def test_ecdsa_signs_the_request_info_itself(ec_key):
    request = csr.prepare(DEVICE, ec_key.public_key())
    assert request.to_sign == request.info and request.key_type_code == 1 and request.digest_code == 2


@pytest.mark.parametrize("value", ["sha1", 1, "md5", None])
def test_digest_choices(value):
    if value is None:
        assert csr.check_digest(value) == "sha256"
        return
    with pytest.raises(ValidationError, match="SHA-1 is refused"):
        csr.check_digest(value)


def test_digest_codes():
    assert csr.check_digest(2) == "sha256" and csr.check_digest(3) == "sha512" and csr.check_digest("SHA-512") == "sha512"


def test_phone_refuses_a_request_for_another_key(rsa_key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    request = csr.prepare(DEVICE, other.public_key())
    with pytest.raises(csr.CsrError, match="other than the key generated in this session"):
        csr.phone_sign(request.info, rsa_key)


def test_phone_refuses_a_key_type_mismatch(ec_key):
    request = csr.prepare(DEVICE, ec_key.public_key())
    with pytest.raises(csr.CsrError, match="KEY_TYPE asks for 'rsa'"):
        csr.phone_sign(request.info, ec_key, "sha256", 0)


def test_phone_refuses_sha1(ec_key):
    request = csr.prepare(DEVICE, ec_key.public_key())
    with pytest.raises(ValidationError):
        csr.phone_sign(request.info, ec_key, 1)


def test_phone_refuses_bytes_that_are_not_request_info(ec_key):
    with pytest.raises(csr.CsrError, match="not a CertificationRequestInfo"):
        csr.phone_sign(b"\x30\x03\x02\x01\x01", ec_key)


def test_signature_by_another_key_is_refused(rsa_key):
    request = csr.prepare(DEVICE, rsa_key.public_key())
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from _opencapf.dependencies import hashes, padding  # pylint: disable=import-outside-toplevel
    forged = impostor.sign(request.info, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(csr.CsrError, match="does not verify with the public key in the request"):
        csr.assemble(request, forged)


def test_ec_signature_by_another_key_is_refused(ec_key):
    request = csr.prepare(DEVICE, ec_key.public_key())
    impostor = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(csr.CsrError, match="does not verify"):
        csr.assemble(request, impostor.sign(request.info, ec.ECDSA(csr._hash("sha256"))))


@pytest.mark.parametrize("signature", [b"", b"\x00" * 2000, b"not a signature"])
def test_garbage_signatures_are_refused(rsa_key, signature):
    with pytest.raises(csr.CsrError):
        csr.assemble(csr.prepare(DEVICE, rsa_key.public_key()), signature)


def test_weak_phone_key_is_refused():
    # Only the public half matters here; cryptography will not generate a 512-bit key.
    weak = rsa.RSAPublicNumbers(65537, (1 << 511) | 0xC0FFEE1).public_key()
    with pytest.raises(CertificateError, match="1024"):
        csr.prepare(DEVICE, weak)


def test_verify_refuses_a_sha1_request(tmp_path, rsa_key):
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    made = openssl("req", "-new", "-key", str(key_path), "-subj", "/CN=SEP001122334455", "-sha1")
    with pytest.raises(csr.CsrError, match="sha1"):
        csr.verify(made.stdout)


def test_verify_accepts_an_openssl_request(tmp_path, ec_key):
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    made = openssl("req", "-new", "-key", str(key_path), "-subj", "/CN=SEP001122334455", "-sha256")
    assert csr.verify(made.stdout).subject.rfc4514_string() == "CN=SEP001122334455"


@pytest.mark.parametrize("spki", [b"", b"\x30\x05\x01", b"\x30\x00"])
def test_spki_bytes_that_are_not_a_key_are_refused(spki):
    with pytest.raises(CertificateError, match="public_key"):
        csr.prepare(DEVICE, spki)
