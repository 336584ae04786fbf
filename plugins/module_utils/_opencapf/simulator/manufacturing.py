# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A manufacturing CA for tests: issues MICs to simulated phones, as a phone factory would."""

from __future__ import annotations

import datetime as _dt
import os

from .. import trust
from ..ca import certificates as c
from ..ca import keys, rules
from ..dependencies import NameOID, hashes, require, x509
from ..files import write_private_file
from ..store import Store
from ..store import trust as trust_records
from ..vocabulary import utc_now

CA_CERT = "mic-ca.pem"
CA_KEY = "mic-ca.key"
DEFAULT_NAME = "opencapf Test Manufacturing CA"


class ManufacturingCa:
    def __init__(self, certificate, private_key, directory: str = ""):
        self.certificate = certificate
        self.private_key = private_key
        self.directory = directory

    @classmethod
    def create(cls, directory: str, common_name: str = DEFAULT_NAME, key_type: str = "ec256") -> "ManufacturingCa":
        """A self-signed CA (CA:TRUE pathlen:0, digitalSignature + keyCertSign) saved in ``directory``."""
        require("cryptography")
        private_key = keys.generate(key_type)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "opencapf test"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = utc_now()
        ski = x509.SubjectKeyIdentifier.from_public_key(private_key.public_key())
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(private_key, hashes.SHA256())
        )
        rules.check_trust_upload(certificate, "manufacturing CA")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        write_private_file(os.path.join(directory, CA_KEY), keys.private_key_pem(private_key))
        with open(os.path.join(directory, CA_CERT), "w", encoding="ascii") as handle:
            handle.write(c.to_pem(certificate))
        return cls(certificate, private_key, directory)

    @classmethod
    def load(cls, directory: str) -> "ManufacturingCa":
        with open(os.path.join(directory, CA_CERT), "rb") as handle:
            certificate = c.load_pem_certificate(handle.read(), "manufacturing CA certificate")
        return cls(certificate, keys.load_private_key(os.path.join(directory, CA_KEY)), directory)

    def issue_mic(self, device_name: str, public_key, model: str = "CP-8865"):
        """A MIC for ``device_name``: CN ``<model>-<device name>``, like the factory certificates."""
        now = utc_now()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "opencapf test"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, f"{model}-{device_name}")]))
            .issuer_name(self.certificate.subject).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.private_key, hashes.SHA256())
        )

    def trust_in(self, store: Store) -> bool:
        """Put the CA certificate into CAPF-trust (idempotent); True when it was added."""
        with store.transaction() as tx:
            if trust_records.get(tx, "capf-trust", c.fingerprint(self.certificate)) is not None:
                return False
            trust.add(tx, store.actor, "capf-trust", self.certificate, "simulator manufacturing CA")
        return True
