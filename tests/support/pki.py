"""Small test PKI builder: CA and leaf certificates with exactly the extensions a test asks for."""

from __future__ import annotations

import datetime as dt

from _opencapf.dependencies import ec, hashes, serialization, x509, NameOID


def name(common_name: str, **extra):
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if "organization" in extra:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, extra["organization"]))
    if "country" in extra:
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, extra["country"]))
    return x509.Name(attributes)


def key_usage(*flags):
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{flag: flag in flags for flag in names})


def make_cert(common_name, *, issuer=None, key=None, ca=True, path_length=0, usage=("digital_signature",
              "key_cert_sign"), days=365, not_before=None, basic_constraints=True, **subject):
    """Return (certificate, key). ``issuer`` is a (certificate, key) pair or None for self-signed."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject_name = name(common_name, **subject)
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (subject_name, key)
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    if usage is not None:
        builder = builder.add_extension(key_usage(*usage), critical=True)
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem(certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
