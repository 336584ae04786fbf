# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CAPF certificate: created on first use, regenerated or replaced without a restart.

The store records every CAPF certificate ever used (the active one and its predecessors, whose
LSCs still authenticate phones) together with its private key, sealed (AES-256-GCM, see
``secretbox``) under a key derived from the store's ``secret.key`` file, which stays outside the
database: every host sharing the store signs with the key a regenerate or upload made on any of
them, and a copy of the database alone reveals no key. A 0600 file in the state directory's
``keys/`` caches the active key for the TLS listener, checked against the sealed key at each use.
Keys are never logged or returned.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import threading
from dataclasses import dataclass
from functools import cached_property

from ..dependencies import hashes, require, x509, NameOID
from .. import secretbox
from ..errors import CapfError, CertificateError, CertificateInputError, NotFoundError, StoreError
from ..files import read_private_file, safe_file_name, write_private_file
from ..store import Store, audit
from ..store import capf_certificates
from ..store.backend import Transaction
from ..vocabulary import CLOCK_SKEW, RESERVED_CN_PREFIX, check_choice, CAPF_KEY_TYPES, format_utc, utc_now
from . import certificates as c
from . import keys, rules

CAPF_VALIDITY_DAYS = 1825
DEFAULT_KEY_TYPE = "rsa2048"
_SUBJECT_FIELDS = (
    ("organizational_unit", "ORGANIZATIONAL_UNIT_NAME"),
    ("organization", "ORGANIZATION_NAME"),
    ("locality", "LOCALITY_NAME"),
    ("state", "STATE_OR_PROVINCE_NAME"),
    ("country", "COUNTRY_NAME"),
)


@dataclass(frozen=True)
class Signer:
    """The active CAPF certificate with its key, ready to sign. What every LSC it signs takes from
    its certificate is derived once per signer (a new certificate or key makes a new signer)."""

    id: int
    certificate: object
    private_key: object

    @cached_property
    def common_name(self) -> str:
        return c.common_name(self.subject)

    @cached_property
    def subject(self):
        return self.certificate.subject

    @cached_property
    def not_before(self):
        """The certificate's notBefore (aware UTC): no LSC it signs starts earlier."""
        return c.not_before(self.certificate)

    @cached_property
    def not_after(self):
        """The certificate's notAfter (aware UTC): no LSC it signs ends later."""
        return c.not_after(self.certificate)

    @cached_property
    def fingerprint(self) -> str:
        return c.fingerprint(self.certificate)

    @cached_property
    def authority_key_identifier(self):
        """The AuthorityKeyIdentifier extension of the certificates this signer issues."""
        return c.authority_key_identifier(self.certificate)


_cache: dict[tuple[str, str, int], Signer] = {}
_cache_lock = threading.Lock()


def _subject(common_name: str, subject: dict | None):
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    for key, oid_name in _SUBJECT_FIELDS:
        value = (subject or {}).get(key)
        if value:
            if key == "country" and len(value) != 2:
                raise CertificateError(f"subject.country must be a two-letter country code, got {value!r}")
            attributes.append(x509.NameAttribute(getattr(NameOID, oid_name), value))
    return x509.Name(attributes)


def build_capf_certificate(private_key, subject: dict | None = None, validity_days: int = CAPF_VALIDITY_DAYS,
                           now: _dt.datetime | None = None):
    """A self-signed CAPF certificate: CN ``CAPF-`` + 8 hex, CA:TRUE pathlen:0, KU
    digitalSignature + keyCertSign + cRLSign (it signs the CAPF CRL; both extensions critical),
    subject and authority key identifiers."""
    require("cryptography")
    now = now or utc_now()
    name = _subject(RESERVED_CN_PREFIX + secrets.token_hex(4), subject)
    public_key = private_key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return builder.sign(private_key, hashes.SHA256())


def _key_file_name(certificate) -> str:
    # The CN of an uploaded certificate is not ours to trust as a path: "../../x" stays inside keys/.
    stem = safe_file_name(c.common_name(certificate.subject), "capf")
    return f"{stem}-{c.fingerprint(certificate)[:16]}.key"


def _sealed_name(fingerprint: str) -> str:
    # The name is the sealed value's associated data: a key moved to another certificate's row fails to open.
    return f"capf_private_key:{fingerprint}"


def _record(store: Store, tx, certificate, private_key, source: str) -> int:
    fingerprint = c.fingerprint(certificate)
    secretbox.put(tx, store.secret(), _sealed_name(fingerprint), keys.private_key_pem(private_key).decode("ascii"))
    new_id = capf_certificates.activate(
        tx, common_name=c.common_name(certificate.subject), serial=format(certificate.serial_number, "x"),
        fingerprint=fingerprint, key_type=keys.key_type_of(certificate.public_key()),
        key_path=_key_file_name(certificate), pem=c.to_pem(certificate),
        not_before=format_utc(c.not_before(certificate)), not_after=format_utc(c.not_after(certificate)),
        source=source)
    audit.record(tx, store.actor, f"capf_certificate.{source}", c.common_name(certificate.subject),
                 fingerprint=fingerprint, key_type=keys.key_type_of(certificate.public_key()))
    return new_id


def _key_file(store: Store, row: dict) -> str:
    """The key file of ``row``: ``key_path`` itself for certificates recorded before keys were sealed
    (an absolute path), else the cache file of that name in ``keys/``."""
    if os.path.isabs(row["key_path"]):
        return row["key_path"]
    return os.path.join(store.keys_dir, safe_file_name(row["key_path"], "capf.key"))


def seal_key_files(store: Store) -> int:
    """Seal into the store the key file of every CAPF certificate whose key the store does not hold
    yet (stores made before keys were sealed); the files stay. Return how many were sealed."""
    if store.read_only:
        return 0
    with store.read() as tx:
        pending = [row for row in capf_certificates.history(tx)
                   if row["key_path"] and not secretbox.exists(tx, _sealed_name(row["fingerprint"]))]
    found = []
    for row in pending:
        path = _key_file(store, row)
        if not os.path.exists(path):
            continue  # another host's file, or a certificate recorded without its key
        private_key = keys.load_private_key(path)
        certificate = c.load_pem_certificate(row["pem"], "stored CAPF certificate")
        if keys.keys_match(private_key, certificate):
            found.append((row, certificate, private_key))
    if not found:
        return 0
    with store.transaction() as tx:
        for row, certificate, private_key in found:
            if not secretbox.exists(tx, _sealed_name(row["fingerprint"])):
                secretbox.put(tx, store.secret(), _sealed_name(row["fingerprint"]),
                              keys.private_key_pem(private_key).decode("ascii"))
                audit.record(tx, store.actor, "capf_certificate.key_sealed", c.common_name(certificate.subject),
                             fingerprint=row["fingerprint"])
    return len(found)


def ensure(store: Store, key_type: str = DEFAULT_KEY_TYPE, subject: dict | None = None) -> tuple[dict, bool]:
    """Create the CAPF certificate when the store has none; return (its summary, created). Key files
    of an older store are sealed into it first (``seal_key_files``)."""
    seal_key_files(store)
    with store.read() as tx:
        present = capf_certificates.has_active(tx)
    if present:
        return current(store), False
    check_choice("key_type", key_type, CAPF_KEY_TYPES)
    with store.transaction() as tx:
        if not capf_certificates.has_active(tx):
            private_key = keys.generate(key_type)
            _record(store, tx, build_capf_certificate(private_key, subject), private_key, "generated")
            created = True
        else:
            created = False
    return current(store), created


def regenerate(store: Store, key_type: str = DEFAULT_KEY_TYPE, subject: dict | None = None) -> dict:
    """Replace the active CAPF certificate with a fresh one; the old one stays in history."""
    check_choice("key_type", key_type, CAPF_KEY_TYPES)
    private_key = keys.generate(key_type)
    certificate = build_capf_certificate(private_key, subject)
    with store.transaction() as tx:
        _record(store, tx, certificate, private_key, "regenerated")
    return current(store)


def _check_valid_now(certificate, field: str, now: _dt.datetime) -> None:
    """A CAPF certificate made active must be valid ``now``: past its notAfter it can sign no LSC
    (each would outlive it) and the phones refuse its TLS; before its notBefore (beyond
    ``CLOCK_SKEW``) the phones refuse its TLS."""
    if c.not_after(certificate) <= now:
        raise CertificateInputError(field, f"expired at {format_utc(c.not_after(certificate))}: a CAPF certificate "
                                           "must be valid now to sign LSCs [rule capf-valid-now]")
    if c.not_before(certificate) > now + CLOCK_SKEW:
        raise CertificateInputError(field, f"is not valid before {format_utc(c.not_before(certificate))}: a CAPF "
                                           "certificate must be valid now to sign LSCs [rule capf-valid-now]")


def replace(store: Store, certificate_pem, private_key_pem, *, now: _dt.datetime | None = None) -> tuple[dict, bool]:
    """Install an uploaded CAPF certificate and its key after checking the CAPF certificate rules and
    that it is valid ``now`` (default: this second; a test's clock)."""
    certificate = c.load_pem_certificates(certificate_pem, "capf_certificate")[0]
    private_key = keys.parse_private_key(private_key_pem, "capf_private_key")
    rules.check_ca_certificate(certificate, "capf_certificate")
    _check_valid_now(certificate, "capf_certificate", now or utc_now())
    if not keys.keys_match(private_key, certificate):
        raise CertificateError("capf_private_key does not belong to capf_certificate")
    fingerprint = c.fingerprint(certificate)
    with store.transaction() as tx:
        state = capf_certificates.state(tx, fingerprint)
        if state == "active":
            changed = False
        elif state == "retired":
            raise CertificateError("capf_certificate was used before and has been retired; upload a new one")
        else:
            _record(store, tx, certificate, private_key, "uploaded")
            changed = True
    return current(store), changed


def _summary(row: dict) -> dict:
    certificate = c.load_pem_certificate(row["pem"], "stored CAPF certificate")
    summary = c.describe(certificate)
    summary.update(id=row["id"], active=bool(row["active"]), source=row["source"],
                   created_at=row["created_at"], retired_at=row["retired_at"], pem=row["pem"])
    return summary


def current(store: Store) -> dict:
    """Summary of the active CAPF certificate (no key material)."""
    with store.read() as tx:
        row = capf_certificates.active(tx)
    if row is None:
        raise NotFoundError("the store has no CAPF certificate yet; run 'init'")
    return _summary(row)


def history(store: Store) -> list[dict]:
    """Every CAPF certificate, newest first."""
    with store.read() as tx:
        rows = capf_certificates.history(tx)
    return [_summary(row) for row in rows]


def all_certificates(store: Store, tx: Transaction | None = None) -> list:
    """The CAPF certificates (active and retired) as certificate objects: LSC trust anchors; read in
    ``tx`` when the caller has a transaction open already."""
    if tx is None:
        with store.read() as own:
            return all_certificates(store, own)
    return [c.load_pem_certificate(pem) for pem in capf_certificates.pems(tx)]


def _private_key(store: Store, tx: Transaction, row: dict, certificate):
    """The key of the CAPF certificate ``row``: the sealed one, else (a store made before keys were
    sealed, on the host that made it) its key file; refused unless it belongs to the certificate."""
    try:
        sealed = secretbox.get(tx, store.secret(), _sealed_name(row["fingerprint"]))
    except secretbox.UndecryptableSecret:
        raise StoreError(
            f"the private key of CAPF certificate {c.common_name(certificate.subject)} cannot be decrypted with "
            f"{os.path.join(store.state_dir, 'secret.key')}: every host sharing a store needs the secret.key "
            "of the host that created it") from None
    if sealed is None:
        path = _key_file(store, row)
        private_key, where = keys.load_private_key(path), f"key file {path}"
    else:
        private_key = keys.parse_private_key(sealed.encode("ascii"), "sealed CAPF private key")
        where = "the sealed private key"
    if not keys.keys_match(private_key, certificate):
        raise CertificateError(f"{where} does not belong to CAPF certificate {c.common_name(certificate.subject)}")
    return private_key


def _signer_of(store: Store, tx: Transaction, row: dict) -> Signer:
    """The CAPF certificate ``row`` with its key, loaded once per process, state directory and certificate."""
    cache_key = (store.location, store.state_dir, row["id"])
    with _cache_lock:
        cached = _cache.get(cache_key)
        if cached is None:
            certificate = c.load_pem_certificate(row["pem"], "stored CAPF certificate")
            cached = Signer(row["id"], certificate, _private_key(store, tx, row, certificate))
            _cache[cache_key] = cached
    return cached


def signer(store: Store, tx: Transaction | None = None) -> Signer:
    """The active certificate and its key, loaded once per process, state directory and certificate;
    looked up in ``tx`` when the caller has a transaction open already."""
    if tx is None:
        with store.read() as own:
            return signer(store, own)
    row = capf_certificates.active_key(tx)
    if row is None:
        raise NotFoundError("the store has no CAPF certificate yet; run 'init'")
    return _signer_of(store, tx, row)


def crl_issuers(store: Store, tx: Transaction, now: _dt.datetime | None = None) -> list[dict]:
    """The CAPF certificates that keep a CRL: the active one and every retired one that has not
    expired at ``now``, newest first, each as ``fingerprint``, ``common_name``, ``serial``, ``active``,
    ``not_after``, ``certificate``, ``signer`` (None when its key cannot be loaded) and ``problem``
    (why its key cannot be loaded, else None)."""
    now_text = format_utc(now or utc_now())
    issuers = []
    for row in capf_certificates.history(tx):
        if not capf_certificates.keeps_crl(row, now_text):
            continue
        certificate = c.load_pem_certificate(row["pem"], "stored CAPF certificate")
        try:
            loaded, problem = _signer_of(store, tx, row), None
        except (CapfError, OSError) as exc:
            loaded, problem = None, f"its private key cannot be loaded: {exc}"
        issuers.append({"fingerprint": row["fingerprint"], "common_name": row["common_name"], "serial": row["serial"],
                        "active": bool(row["active"]), "not_after": row["not_after"], "certificate": certificate,
                        "signer": loaded, "problem": problem})
    return issuers


def key_file(store: Store, active: Signer) -> str:
    """A 0600 file in ``keys/`` holding the key of ``active`` (TLS loads its key from a file): written
    from the sealed key when missing or different; one that the group or others can read is refused."""
    path = os.path.join(store.keys_dir, _key_file_name(active.certificate))
    wanted = keys.private_key_pem(active.private_key)
    if not os.path.exists(path) or read_private_file(path, "key file") != wanted:
        write_private_file(path, wanted)
    return path
