# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline CA: pending CSRs out to a CA operator as PEM files, signed certificates back in.

Each imported certificate is matched to its CSR by public key and passes the same check as an
online CA's answer (``acceptance.check``: device name, key, KeyUsage, validity, chain to the trust
anchors). Every certificate that cannot be used is reported with its file, a code of
``vocabulary.IMPORT_PROBLEMS`` and a reason; a certificate for a CSR the phone has since replaced
is reported as stale, never matched.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field as _field

from .. import csr as csr_module
from ..ca import certificates as c
from ..dependencies import pkcs7, require
from ..errors import CapfError, CertificateError
from ..files import read_option_file, write_private_file
from ..vocabulary import IMPORT_DUPLICATE
from . import acceptance

BUNDLE_NAME = "capf-csr-bundle.pem"
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class PendingCsr:
    """A CSR waiting for an offline CA: the request (PEM or DER) and when it was made (UTC text)."""

    device_name: str
    request: bytes
    requested_at: str = ""


@dataclass(frozen=True)
class Matched:
    device_name: str
    certificate: object
    chain: list
    source: str


@dataclass(frozen=True)
class Stale:
    device_name: str
    certificate: object
    source: str
    reason: str


@dataclass(frozen=True)
class Problem:
    source: str
    subject: str
    reason: str
    code: str = acceptance.UNREADABLE
    device_name: str = ""
    certificate: object = None


@dataclass
class ImportReport:
    matched: list = _field(default_factory=list)
    stale: list = _field(default_factory=list)
    problems: list = _field(default_factory=list)


def _request_der(pending: PendingCsr) -> bytes:
    return csr_module.to_der(csr_module.verify(pending.request, f"CSR of {pending.device_name}"))


def export(pending, directory: str, *, bundle: bool = False) -> list[str]:
    """Write the CSRs to ``directory``: ``<DEVICE>.csr.pem`` each, or one bundle whose blocks are
    preceded by the device name and request time. Returns the paths written."""
    pending = list(pending)
    blocks = []
    for item in pending:
        if not _SAFE_NAME.fullmatch(item.device_name):
            raise CapfError(f"device name {item.device_name!r} cannot be used as a file name")
        blocks.append((item, csr_module.to_pem(_request_der(item))))
    if bundle:
        text = "".join(f"Device: {item.device_name}\nRequested: {item.requested_at or 'unknown'}\n{pem}\n"
                       for item, pem in blocks)
        path = os.path.join(directory, BUNDLE_NAME)
        write_private_file(path, text.encode("ascii"))
        return [path] if blocks else []
    paths = []
    for item, pem in blocks:
        path = os.path.join(directory, f"{item.device_name}.csr.pem")
        write_private_file(path, pem.encode("ascii"))
        paths.append(path)
    return paths


def parse_certificates(data: bytes, source: str) -> list:
    """Certificates in a PEM bundle, a PKCS#7 (.p7b, PEM or DER) or one DER certificate."""
    require("cryptography")
    data = bytes(data)
    try:
        if b"-----BEGIN PKCS7-----" in data:
            return list(pkcs7.load_pem_pkcs7_certificates(data))
        if b"-----BEGIN" in data or not data.startswith(b"\x30"):
            return c.load_pem_certificates(data, source)
        try:
            return [c.load_der_certificate(data, source)]
        except CertificateError:
            return _der_pkcs7(data)
    except ValueError as exc:
        raise CertificateError(f"{source} holds no readable certificate: {exc}") from None


def _der_pkcs7(data: bytes) -> list:
    # openssl crl2pkcs7 and Windows write the certificate SET unsorted (BER); that is expected here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return list(pkcs7.load_der_pkcs7_certificates(data))


def read_files(paths, option: str = "src") -> list[tuple[str, bytes]]:
    """(file name, contents) for each path, each at most 1 MiB; errors name ``option[index]``."""
    return [(path, read_option_file(path, f"{option}[{index}]", "certificate file")) for index, path in enumerate(paths)]


def import_certificates(sources, pending, anchors, *, superseded=(), at=None) -> ImportReport:
    """Match certificates from ``sources`` ((name, bytes) pairs) to ``pending`` CSRs by public key
    and check them (one for a ``superseded`` CSR, one that no longer waits, is reported stale); CA
    certificates in the sources serve as (untrusted) intermediates, unless they carry the key of a
    CSR (then they are refused as ``is_ca``)."""
    report = ImportReport()
    waiting = _by_key(pending)
    replaced = _by_key(superseded)
    certificates = []
    for source, data in sources:
        try:
            certificates += [(source, item) for item in parse_certificates(data, source)]
        except CertificateError as exc:
            report.problems.append(Problem(source, "", str(exc)))
    leaves, pool = [], []
    for source, certificate in certificates:
        key = c.public_key_fingerprint(certificate.public_key())
        if c.is_ca(certificate) and key not in waiting and key not in replaced:
            pool.append(certificate)
        else:
            leaves.append((source, certificate, key))
    names = {item.device_name: item for item, _request in waiting.values()}
    taken = {}
    for source, certificate, key in leaves:
        subject = certificate.subject.rfc4514_string()
        if key not in waiting and key not in replaced:
            report.problems.append(_unknown_key(source, subject, certificate, names))
            continue
        item, request = waiting.get(key) or replaced[key]
        verdict = acceptance.check(certificate, device_name=item.device_name, public_key=request.public_key(),
                                   anchors=anchors, intermediates=pool, at=at)
        if isinstance(verdict, acceptance.Refused):
            report.problems.append(Problem(source, subject, f"{item.device_name}: {verdict.reason}", verdict.code,
                                           item.device_name, certificate))
        elif key not in waiting:
            report.stale.append(Stale(item.device_name, certificate, source,
                                      "its CSR no longer waits (the phone replaced it with a newer one, its session "
                                      "ended, or the operator changed the phone's operation); it is stale and will "
                                      "not be delivered"))
        elif item.device_name in taken:
            report.problems.append(Problem(source, subject, f"a certificate for {item.device_name}'s CSR was "
                                                            f"already imported from {taken[item.device_name]}",
                                           IMPORT_DUPLICATE, item.device_name, certificate))
        else:
            taken[item.device_name] = source
            report.matched.append(Matched(item.device_name, certificate, verdict.chain, source))
    return report


def _by_key(items) -> dict:
    """{public key fingerprint: (PendingCsr, verified request)}."""
    found = {}
    for item in items:
        request = csr_module.verify(item.request, f"CSR of {item.device_name}")
        found[c.public_key_fingerprint(request.public_key())] = (item, request)
    return found


def _unknown_key(source: str, subject: str, certificate, names: dict) -> Problem:
    """A certificate whose key is no CSR's: made for another key (or for no CSR of ours)."""
    named = c.common_name(certificate.subject)
    if named in names:
        return Problem(source, subject, f"{named}: the certificate names {named} but its public key is not the key "
                                        f"of {named}'s pending CSR", acceptance.WRONG_KEY, named, certificate)
    return Problem(source, subject, "its public key matches no pending CSR", acceptance.WRONG_KEY, "", certificate)
