"""Certificates from a phone that parse badly or contradict the records end the session with a reason."""

from __future__ import annotations

import datetime as _dt

import pytest

from support.protocol import add_phone
from _opencapf.dependencies import ec, hashes, x509, NameOID
from _opencapf.errors import CertificateError
from _opencapf.server.decider import StoreDecider, load_certificate

NAME = "SEP0000000CA5E1"


def _certificate(serial: int):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hostile CA")])
    now = _dt.datetime.now(_dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
            .issuer_name(name).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1)).sign(key, hashes.SHA256()))


def _der(certificate) -> bytes:
    from _opencapf.dependencies import serialization
    return certificate.public_bytes(serialization.Encoding.DER)


@pytest.mark.both_backends
def test_a_second_certificate_with_a_retrieved_serial_fails_the_fetch(ca_store):
    add_phone(ca_store, NAME, operation="troubleshoot")
    decider = StoreDecider(ca_store, "test")
    plan = decider.begin(NAME)
    decider.fetched(plan, [(1, _der(_certificate(4242)))])
    with pytest.raises(CertificateError, match="serial"):
        decider.fetched(plan, [(1, _der(_certificate(4242)))])  # same issuer and serial, another certificate


def test_a_certificate_with_an_invalid_version_is_a_certificate_error():
    data = bytearray(_der(_certificate(7)))
    index = data.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
    data[index + 4] = 6
    with pytest.raises(CertificateError):
        load_certificate(bytes(data))
