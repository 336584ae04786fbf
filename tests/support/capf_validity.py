"""A CAPF certificate of chosen dates made the active one of a store, as an operator's upload would."""

from __future__ import annotations

import datetime as dt

from _opencapf.ca import authority, keys
from _opencapf.ca import certificates as c
from _opencapf.dependencies import NameOID, hashes, x509

CAPF_KEY = keys.generate("ec256")
PHONE_KEY = keys.generate("ec256")


def upload_capf(store, not_before: dt.datetime, days: int, key=CAPF_KEY):
    """Make the active CAPF certificate one of ``key`` valid from ``not_before`` for ``days`` (an
    operator's upload at ``not_before``: the generated certificates' names are reserved for those the
    service makes); return it."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example CAPF")])
    template = authority.build_capf_certificate(key)  # the CAPF certificate's extensions, for ``key``
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(not_before)
               .not_valid_after(not_before + dt.timedelta(days=days)))
    for extension in template.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    certificate = builder.sign(key, hashes.SHA256())
    authority.replace(store, c.to_pem(certificate), keys.private_key_pem(key), now=not_before)
    return certificate
