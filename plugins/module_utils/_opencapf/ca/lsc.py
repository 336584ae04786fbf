# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LSC issuance: the profile, and recording each LSC in the transaction that allocates its serial."""

from __future__ import annotations

import datetime as _dt
import functools
from dataclasses import dataclass

from .. import faults
from ..dependencies import ExtendedKeyUsageOID, NameOID, hashes, require, x509
from ..errors import CertificateError, StoreError
from ..store import Store, audit, capf_certificates
from ..store import certificates as certificate_records
from ..store import phones as phone_records
from ..store import service as service_records
from ..vocabulary import check_validity_days, format_utc, normalise_device_name, utc_now
from . import authority
from . import certificates as c
from . import crl, keys, lsc_template

CAPF_ISSUER = "capf"
IPSEC_END_SYSTEM = "1.3.6.1.5.5.7.3.5"
_INHERITED = ("ORGANIZATION_NAME", "ORGANIZATIONAL_UNIT_NAME", "LOCALITY_NAME", "STATE_OR_PROVINCE_NAME",
              "COUNTRY_NAME")


@dataclass(frozen=True)
class IssuedLsc:
    id: int
    device_name: str
    serial: str
    pem: str
    not_after: str
    der: bytes = b""
    validity_capped: bool = False  # notAfter cut to the signing CAPF certificate's (``validity_end``)

    @functools.cached_property
    def certificate(self):
        """The LSC as a certificate object (decoded when first asked for: the service needs only its DER)."""
        return x509.load_der_x509_certificate(self.der)


def lsc_subject(device_name: str, issuer_subject):
    """CN = device name, then the issuer's O/OU/L/ST/C attributes in the order they appear there."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_name), *_inherited_attributes(issuer_subject)])


@functools.lru_cache(maxsize=8)
def _inherited_attributes(issuer_subject) -> tuple:
    """The attributes of ``issuer_subject`` an LSC's subject takes over (taken once per issuer)."""
    inherited = {getattr(NameOID, name) for name in _INHERITED}
    return tuple(attribute for attribute in issuer_subject if attribute.oid in inherited)


@functools.cache
def _shared_extensions(kind: str) -> tuple:
    """The extension values every LSC of a key kind carries alike, with their criticality (immutable
    objects, made at the first LSC of the kind: the library is needed only when certificates are)."""
    purposes = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, x509.ObjectIdentifier(IPSEC_END_SYSTEM))
    return (
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=kind == "rsa",
                       data_encipherment=False, key_agreement=kind == "ec", key_cert_sign=False, crl_sign=False,
                       encipher_only=False, decipher_only=False), True),
        (x509.ExtendedKeyUsage(purposes), False),
    )


@functools.cache
def _shared_extensions_encoded(kind: str) -> tuple:
    """``_shared_extensions(kind)`` as the builder takes them already encoded (each value's DER, the
    library's own encoding of it, made once): the builder copies them into each LSC as they are,
    instead of reading every field of every value again."""
    return tuple((x509.UnrecognizedExtension(extension.oid, extension.public_bytes()), critical)
                 for extension, critical in _shared_extensions(kind))


def lsc_extensions(device_name: str, public_key, issuer_certificate=None, crl_url: str = "", *,
                   authority_key_id=None, kind: str | None = None, public_key_der: bytes | None = None,
                   shared_encoded: bool = False) -> list[tuple[object, bool]]:
    """The LSC extensions with their criticality (shared with the CSR that third-party CAs receive);
    ``crl_url``: the CRL distribution point (the ``crl_url`` service parameter) of an LSC CAPF signs;
    ``authority_key_id``: the AKI of the issuer when the caller has it (else taken from
    ``issuer_certificate``); ``kind``: ``keys.check_phone_public_key(public_key)[0]`` when the caller
    has checked the key already; ``public_key_der``: the key's DER SubjectPublicKeyInfo when the
    caller has it (its key identifier is taken from it); ``shared_encoded``: the values every LSC of
    the kind carries alike already encoded (for the builder; the certificate is the same)."""
    if kind is None:
        kind, _size = keys.check_phone_public_key(public_key)
    extensions = [
        *(_shared_extensions_encoded(kind) if shared_encoded else _shared_extensions(kind)),
        # The device name as a directoryName: the reference servers' bare-name URI is not a valid
        # RFC 5280 URI, and a device name is not a DNS name.
        (x509.SubjectAlternativeName([x509.DirectoryName(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, device_name)]))]), False),
        (x509.SubjectKeyIdentifier(c.key_identifier(public_key_der)) if public_key_der is not None
         else x509.SubjectKeyIdentifier.from_public_key(public_key), False),
    ]
    if authority_key_id is None and issuer_certificate is not None:
        authority_key_id = c.authority_key_identifier(issuer_certificate)
    if authority_key_id is not None:
        extensions.append((authority_key_id, False))
    if crl_url:
        extensions.append((x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None, reasons=None,
            crl_issuer=None)]), False))
    return extensions


def validity_start(moment: _dt.datetime, issuer_not_before: _dt.datetime) -> _dt.datetime:
    """The notBefore of an LSC issued at ``moment``: that moment, or the signing CAPF certificate's
    notBefore when it is later, so that an LSC's validity lies within its signer's at the start as at
    the end (``validity_end``). A CAPF certificate may start after this host's clock: an upload from
    a CA whose clock runs ahead is accepted up to ``CLOCK_SKEW`` (``authority.replace``), and a clock
    set back is behind the certificate it made. Both datetimes of the same kind (aware or naive UTC)."""
    return max(moment, issuer_not_before)


def validity_end(start: _dt.datetime, validity_days: int, issuer_not_after: _dt.datetime) -> tuple[_dt.datetime, bool]:
    """The notAfter of an LSC valid from ``start`` for ``validity_days``, and whether it was capped: an
    LSC never outlives the CAPF certificate that signs it (its chain ends with that certificate, as
    AD CS and EJBCA cut their certificates to the issuing CA's end), so ``start + validity_days`` is
    cut to ``issuer_not_after``. Aware or naive (UTC) datetimes, both the same kind."""
    end = start + _dt.timedelta(days=validity_days)
    if end > issuer_not_after:
        return issuer_not_after, True
    return end, False


def check_signer_valid(signer: authority.Signer, start: _dt.datetime) -> None:
    """Refuse to issue at ``start`` (aware UTC) with a CAPF certificate that ends at or before it: its
    LSC would be valid for no time at all, and its chain would not verify."""
    if signer.not_after <= start:
        raise CertificateError(
            f"the CAPF certificate {signer.common_name} expired at {format_utc(signer.not_after)} and cannot issue "
            f"an LSC at {format_utc(start)}: regenerate or replace it (capf_service, 'ca regenerate')")


def _aware(moment: _dt.datetime) -> _dt.datetime:
    """``moment`` as an aware UTC datetime (a naive one is UTC already)."""
    return moment.astimezone(_dt.timezone.utc) if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def _naive(moment: _dt.datetime) -> _dt.datetime:
    return moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)


def _checked_parts(signer: authority.Signer, serial: int, validity_days: int, now: _dt.datetime | None,
                   crl_url: str) -> tuple[_dt.datetime, _dt.datetime, str]:
    """What an LSC of ``signer`` takes from the issuance, checked: its notBefore and notAfter (naive
    UTC, as the builder keeps them) and its CRL location (see ``build_lsc``)."""
    require("cryptography")
    aware = _aware(now or utc_now())
    check_signer_valid(signer, aware)
    if not 0 < serial < 2 ** 159:
        raise ValueError("an LSC serial number must be a positive integer of at most 159 bits")
    if validity_days < 1:
        raise ValueError("an LSC must be valid for at least one day")
    start = validity_start(aware, signer.not_before)
    end, _capped = validity_end(start, validity_days, signer.not_after)
    return _naive(start), _naive(end), crl.issuer_location(crl_url, signer.fingerprint) if crl_url else ""


def _built(signer: authority.Signer, device_name: str, public_key, serial: int, start: _dt.datetime,
           end: _dt.datetime, location: str, kind: str | None, public_key_der: bytes | None):
    extensions = lsc_extensions(device_name, public_key, crl_url=location,
                                authority_key_id=signer.authority_key_identifier, kind=kind,
                                public_key_der=public_key_der, shared_encoded=True)
    # Every part at once: each of the builder's setters makes a new builder and checks what the lines
    # above guarantee (types, serial, dates, extensions named once: the profile lists each once).
    builder = x509.CertificateBuilder(
        issuer_name=signer.subject, subject_name=lsc_subject(device_name, signer.subject), public_key=public_key,
        serial_number=serial, not_valid_before=start, not_valid_after=end,
        extensions=[x509.Extension(extension.oid, critical, extension) for extension, critical in extensions],
    )
    return builder.sign(signer.private_key, hashes.SHA256())


def build_lsc(signer: authority.Signer, device_name: str, public_key, validity_days: int, serial: int,
              now: _dt.datetime | None = None, crl_url: str = "", *, kind: str | None = None,
              public_key_der: bytes | None = None):
    """Build and sign one LSC with SHA-256 with the library's certificate builder (naming the CRL of
    ``signer`` at ``crl_url``, see ``crl.issuer_location``, as its CRL distribution point when given);
    ``now``: its notBefore, a whole second (default: this second), never before ``signer``'s
    certificate starts (``validity_start``); its notAfter ``validity_days`` later, cut to the notAfter
    of ``signer``'s certificate (``validity_end``); refused once that certificate has expired; ``kind``, ``public_key_der``: as ``lsc_extensions`` takes them.
    ``lsc_der`` is the same certificate, encoded from the signer's template."""
    start, end, location = _checked_parts(signer, serial, validity_days, now, crl_url)
    return _built(signer, device_name, public_key, serial, start, end, location, kind, public_key_der)


def lsc_der(signer: authority.Signer, device_name: str, public_key, validity_days: int, serial: int,
            now: _dt.datetime | None = None, crl_url: str = "", *, kind: str | None = None,
            public_key_der: bytes | None = None) -> bytes:
    """The DER of the LSC ``build_lsc`` makes from the same arguments, byte for byte (an RSA
    signature is the same; an ECDSA one is as valid), encoded from the template of the signer, the
    key's kind and the CRL location (``lsc_template``): the builder makes the first LSC of each, and
    every later one when the template could not rebuild that first one exactly."""
    start, end, location = _checked_parts(signer, serial, validity_days, now, crl_url)
    if kind is None:
        kind, _size = keys.check_phone_public_key(public_key)
    key_der = public_key_der or c.public_key_der(public_key)
    parts = (serial, start, end, device_name, key_der, c.key_identifier(key_der))
    template_key = (signer.fingerprint, kind, location)
    known, template = lsc_template.cached(template_key)
    if template is not None:
        return template.certificate(template.tbs(*parts), signer.private_key)
    built = c.to_der(_built(signer, device_name, public_key, serial, start, end, location, kind, key_der))
    if not known:
        lsc_template.learn(template_key, signer.private_key, built, parts)
    return built


class _SerialTaken(Exception):
    """The serial just drawn is on record already: the issuance's transaction is rolled back and redrawn."""


class _SettingsChanged(Exception):
    """A service parameter the LSC follows changed since it was made: the issuance's transaction is rolled
    back and the LSC made again with the values in force (``in_force``)."""

    def __init__(self, in_force: dict):
        super().__init__()
        self.in_force = in_force


class _SignerRetired(Exception):
    """The CAPF certificate that signed is no longer the active one: the issuance's transaction is rolled
    back and the LSC signed again with the active one."""


def _create_phone(tx, store: Store, name: str) -> dict:
    """A device issued an LSC before it was declared, created as every path creates a phone: through the one
    converge path of phone settings (the service's key settings, one ``phone.create`` event, ``via: issue``)."""
    from .. import phone_config  # imported here: phone_config reaches this module (through revocation)

    phone_config.converge_many(tx, store.actor, store.secret(), [(None, phone_config.PhoneRequest(name, {}))],
                               via="issue")
    return phone_records.get(tx, name)


def issue(store: Store, device_name: str, public_key, *, source: str = "cli", validity_days: int | None = None,
          create_phone: bool = True, device_name_is_wire: bool = False, recorded=None, opening=None,
          signer: authority.Signer | None = None, crl_url: str | None = None, settings: dict | None = None,
          public_key_der: bytes | None = None, now: _dt.datetime | None = None) -> IssuedLsc:
    """Sign an LSC for ``device_name`` and record it (status ``issued``) in one transaction;
    ``opening(tx, phone)``, when given, runs in that transaction with the phone's current row
    (``phones.SESSION_COLUMNS`` of it) once the LSC's row is in (the caller's records the LSC's issuance depends on), and
    ``recorded(tx, certificate_id)`` adds the caller's records that depend on the LSC's row.

    The serial is a fresh random positive integer of at most 20 octets; the unique index on
    (issuer, serial) guarantees that a serial never repeats: the LSC's row is inserted first, and
    when its serial is taken nothing of the transaction is kept and a new serial is drawn. The
    signature is made before the write transaction begins, so that the store's write lock is never
    held while a key signs (other sessions, and other server processes, write meanwhile).

    The LSC is signed by the CAPF certificate that is active when it is recorded: the row is written
    only while the certificate that signed it is the active one (checked by the insert itself, in
    the write transaction, so a rotation committed before it is always seen, whichever process or
    host made it); when a rotation came in between, nothing of the transaction is kept and the LSC is
    signed again with the active certificate (its issuer, AKI and CRL distribution point with it).
    ``signer``, when the caller has it (the CAPF service reads it when a phone connects), spares the
    read of the active CAPF certificate (it is then the certificate the caller takes for the active one);
    ``public_key_der``, the DER SubjectPublicKeyInfo of ``public_key`` when the caller has it,
    spares encoding the key again; ``now``: the issuance moment, the LSC's notBefore (default: this
    second; a test's or a dry walk's clock), or the signing CAPF certificate's notBefore when that is
    later (``validity_start``).

    The LSC's validity (``validity_days``) and CRL distribution point (``crl_url``) are the service
    parameters in force when it is recorded, unless the caller gives its own value for one of them:
    ``settings``, the service parameters as the caller read them (the CAPF service: when the phone
    connected), spares their read; they are checked by the statement that checks the signer, in the
    write transaction, and when an operator's change committed meanwhile, nothing of the transaction is
    kept and the LSC is made again with the values in force.

    The LSC is valid for ``validity_days``, but never past the signing CAPF certificate's notAfter
    (``validity_end``); a capped validity is said in the ``certificate.issued`` audit event
    (``validity_capped``, with the ``not_after`` it got and the ``validity_days`` asked for) and in
    the result. A CAPF certificate that has expired issues nothing (``CertificateError``).
    """
    name = device_name.upper() if device_name_is_wire else normalise_device_name(device_name, "device_name")
    kind, _size = keys.check_phone_public_key(public_key)
    if validity_days is not None:
        validity_days = check_validity_days(validity_days)
    key_der = public_key_der or c.public_key_der(public_key)
    key_fingerprint = c.sha256_hex(key_der)
    # The service parameters the LSC follows (those the caller gives no value of), with the values it is
    # made with: as the caller read them, else as read here, else as in force at a failed attempt.
    followed = [name for name, given in (("validity_days", validity_days), ("crl_url", crl_url)) if given is None]
    made_with = {name: settings[name] for name in followed if settings and name in settings}
    rotations = changes = 0
    for _attempt in range(5):
        serial = x509.random_serial_number()
        serial_text = format(serial, "x")
        if signer is None or len(made_with) < len(followed):
            with store.read() as tx:
                signer = signer or authority.signer(store, tx)
                made_with.update((name, service_records.value(tx, name)) for name in followed if name not in made_with)
        validity_days = made_with.get("validity_days", validity_days)
        crl_url = made_with.get("crl_url", crl_url)
        moment = _aware(now or utc_now()).replace(microsecond=0)
        # The certificate's own dates, as it carries them (whole seconds, UTC); build_lsc applies the same caps.
        start = validity_start(moment, signer.not_before)
        end, capped = validity_end(start, validity_days, signer.not_after)
        not_before, not_after = format_utc(start), format_utc(end)
        der = lsc_der(signer, name, public_key, validity_days, serial, moment, crl_url=crl_url, kind=kind,
                      public_key_der=key_der)
        pem = c.pem_of_der(der)
        try:
            with store.transaction() as tx:
                phone = phone_records.get_for_session(tx, name)
                if phone is None and create_phone:
                    phone = _create_phone(tx, store, name)
                if phone is None:
                    raise StoreError(f"device {name} is not in the store")
                new_id = certificate_records.insert_new_serial(
                    tx, phone_id=phone["id"], kind="lsc", serial=serial_text, issuer=CAPF_ISSUER,
                    fingerprint=c.sha256_hex(der), public_key_fingerprint=key_fingerprint,
                    status="issued", source=source, pem=pem, not_before=not_before, not_after=not_after,
                    signed_by=signer.id, issued_at=format_utc(moment),  # the issuance moment (``now``)
                    made_with=made_with,
                )
                if new_id is None:
                    # Rare: tell a rotation, a change of the parameters and a serial clash apart only then.
                    if capf_certificates.state(tx, signer.fingerprint) != "active":
                        raise _SignerRetired()
                    in_force = {name: service_records.value(tx, name) for name in made_with}
                    if in_force != made_with:
                        raise _SettingsChanged(in_force)
                    raise _SerialTaken()
                if opening is not None:
                    opening(tx, phone)
                audit.record(tx, store.actor, "certificate.issued", name, certificate_id=new_id, serial=serial_text,
                             issuer=CAPF_ISSUER, signer=signer.common_name, source=source, not_after=not_after,
                             **({"validity_capped": True, "validity_days": validity_days} if capped else {}))
                if recorded is not None:
                    recorded(tx, new_id)
                faults.checkpoint("lsc.signed")
        except _SerialTaken:
            continue
        except _SignerRetired:
            signer = None  # the active one is read (and its key loaded, once per process) at the next attempt
            rotations += 1
            continue
        except _SettingsChanged as changed:
            made_with = changed.in_force
            changes += 1
            continue
        return IssuedLsc(new_id, name, serial_text, pem, not_after, der, capped)
    if rotations or changes:
        raise StoreError(f"could not record the LSC after 5 attempts: the CAPF certificate was replaced {rotations} "
                         f"times and the service parameters validity_days or crl_url changed {changes} times while "
                         "it was being signed")
    raise StoreError("could not allocate a unique serial after 5 attempts")
