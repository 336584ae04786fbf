"""A CAPF certificate of chosen dates made the active one of a store, as an operator's upload would."""

from __future__ import annotations

import datetime as dt

from _opencapf.ca import authority, keys
from _opencapf.ca import certificates as c
from _opencapf.dependencies import NameOID, hashes, x509
from _opencapf.vocabulary import RESERVED_CN_PREFIX

CAPF_KEY = keys.generate("ec256")
PHONE_KEY = keys.generate("ec256")


EXAMPLE_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example CAPF")])


def upload_capf(store, not_before: dt.datetime, days: int, key=CAPF_KEY, subject=EXAMPLE_SUBJECT,
                uploaded_at: dt.datetime | None = None):
    """Make the active CAPF certificate one of ``key`` and ``subject`` valid from ``not_before`` for
    ``days`` (an operator's upload at ``uploaded_at``, default ``not_before``: the generated
    certificates' names are reserved for those the service makes); return it."""
    template = authority.build_capf_certificate(key)  # the CAPF certificate's extensions, for ``key``
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(not_before)
               .not_valid_after(not_before + dt.timedelta(days=days)))
    for extension in template.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    certificate = builder.sign(key, hashes.SHA256())
    authority.replace(store, c.to_pem(certificate), keys.private_key_pem(key), now=uploaded_at or not_before)
    return certificate


def renew_capf(store):
    """Upload a new certificate for the active CAPF certificate's key and subject (a CA renewal), valid
    from a minute ago for 800 days; when the active one is a generated one (its name is reserved for
    those), an operator's own instead. Return it."""
    active = authority.signer(store)
    subject, key = active.certificate.subject, active.private_key
    if active.common_name.startswith(RESERVED_CN_PREFIX):
        subject, key = EXAMPLE_SUBJECT, keys.generate("ec256")
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=1)
    return upload_capf(store, start, 800, key=key, subject=subject)
