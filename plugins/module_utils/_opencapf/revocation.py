# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revoking LSCs and keeping the CAPF CRL current (docs/lifecycle.md, "Revocation and the CRL").

An LSC is revoked, with its RFC 5280 reason and time, when a newer LSC of its phone is installed
(``superseded``, store/certificates.install), when a delete operation removes it from the phone
(``cessation_of_operation``, the decider), when an operator revokes it (``revoke_lsc``: capf_phone,
``opencapf phone revoke``), and, with the ``revoke_after_expiry`` service parameter, once it has
expired (``cessation_of_operation``, ``run_duty``). The CRL lives in the store, so every node of a
cluster serves the same one; ``run_duty`` signs a new one when something was revoked since, when the
CAPF certificate changed, and once half of its validity has passed. Every process then keeps the
``crl_path`` file equal to the newest CRL (``CrlFile``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import tempfile
from typing import Any

from .ca import authority
from .ca import certificates as c
from .ca import crl as crl_module
from .ca.lsc import CAPF_ISSUER
from .errors import CapfError, NotFoundError, ValidationError
from .results import converged
from .store import Store
from .store import certificates as certificate_records
from .store import crls as crl_records
from .store import phones as phone_records
from .store import service as service_records
from .vocabulary import (REVOCATION_REASONS, REVOKED_EXPIRED, check_choice, format_utc, normalise_device_name,
                         parse_utc, utc_now)

log = logging.getLogger("opencapf.revocation")
EXPIRY_BATCH = 1000  # expired LSCs revoked per transaction
VALID_STATUSES = ("installed", "issued")  # an LSC that a revocation without a serial revokes
_signed_by_active: dict[tuple[int, int], bool] = {}  # (signer id, certificate id): whether it signed it


def check_reason(reason, field: str = "reason") -> str:
    return check_choice(field, reason, REVOCATION_REASONS)


def check_request(revoke, field: str = "revoke") -> dict[str, Any]:
    """A validated revocation request ``{"reason": ..., "serial": ...}`` (serial optional)."""
    if not isinstance(revoke, dict) or "reason" not in revoke:
        raise ValidationError(field, "must be a mapping with a reason (and optionally a serial)", revoke)
    unknown = sorted(set(revoke) - {"reason", "serial"})
    if unknown:
        raise ValidationError(f"{field}.{unknown[0]}", "is not an option of revoke (known: reason, serial)")
    serial = revoke.get("serial")
    return {"reason": check_reason(revoke["reason"], f"{field}.reason"),
            "serial": None if serial in (None, "") else _serial(serial, f"{field}.serial")}


def _lsc_view(row: dict) -> dict[str, Any]:
    return {"serial": row["serial"], "status": row["status"], "revocation_reason": row.get("revocation_reason"),
            "revoked_at": row.get("revoked_at")}


def _serial(text, field: str = "serial") -> str:
    """A serial as the store keeps it (lower-case hex, no leading zeros) from hex with or without colons or 0x."""
    cleaned = str(text).strip().lower().replace(":", "")
    cleaned = cleaned[2:] if cleaned.startswith("0x") else cleaned
    try:
        return format(int(cleaned, 16), "x")
    except ValueError:
        raise ValidationError(field, "must be a hexadecimal serial number", text) from None


def plan_revocation(tx, name: str, serial: str | None = None) -> list[dict[str, Any]]:
    """The LSC rows of phone ``name`` that a revocation would change: the one with
    ``serial`` (whatever its status, unless revoked), else every LSC the phone holds or was issued."""
    phone = phone_records.get(tx, name)
    if phone is None:
        raise NotFoundError(f"name: device {name} is not in the store")
    rows = certificate_records.for_phone(tx, phone["id"], "lsc")
    if serial is not None:
        wanted = _serial(serial)
        rows = [row for row in rows if row["serial"] == wanted]
        if not rows:
            raise NotFoundError(f"serial: device {name} has no LSC with serial {serial}")
        return [row for row in rows if row["status"] != "revoked"]
    return [row for row in rows if row["status"] in VALID_STATUSES]


def revoke_in(tx, actor: str, name: str, reason: str, *, serial: str | None = None, check_mode: bool = False,
              via: str = "capf_phone") -> dict[str, Any]:
    """Revoke phone ``name``'s LSC(s) (see ``plan_revocation``) in the caller's transaction; returns
    changed, before/after (``{"lscs": [...]}``) and the revoked serials."""
    reason = check_reason(reason, "revoke.reason")
    rows = plan_revocation(tx, name, serial)
    before = {"lscs": [_lsc_view(row) for row in rows]}
    at = format_utc(utc_now())
    after = {"lscs": [dict(view, status="revoked", revocation_reason=reason, revoked_at=at)
                      for view in before["lscs"]]}
    if not check_mode:
        for row in rows:
            certificate_records.revoke(tx, actor, row["id"], name, reason, at, serial=row["serial"], via=via,
                                       issuer=row["issuer"])
    third_party = sorted({row["serial"] for row in rows if row["issuer"] != CAPF_ISSUER})
    result = converged(bool(rows), before, after, revoked=[row["serial"] for row in rows])
    if third_party:
        result["warnings"] = [f"LSC(s) {', '.join(third_party)} of device {name} were signed by a third-party CA: "
                              "they are revoked in the store (no longer accepted by CAPF) but the CAPF CRL cannot "
                              "list them; revoke them at that CA too"]
    return result


def revoke_lsc(store: Store, name: str, reason: str, *, serial: str | None = None,
               check_mode: bool = False) -> dict[str, Any]:
    """Operator revocation of phone ``name``'s LSC(s) with an RFC 5280 ``reason`` (CLI); idempotent."""
    name = normalise_device_name(name, "name")
    reason = check_reason(reason)
    with store.transaction(write=not check_mode) as tx:
        result = revoke_in(tx, store.actor, name, reason, serial=serial, check_mode=check_mode, via="cli")
    result["name"] = name
    return result


def revoke_expired(store: Store, now: _dt.datetime) -> list[dict[str, Any]]:
    """With ``revoke_after_expiry``: revoke every issued or installed LSC whose notAfter is not after ``now``."""
    with store.read() as tx:
        if not service_records.value(tx, "revoke_after_expiry"):
            return []
    at = format_utc(now)
    done: list[dict[str, Any]] = []
    while True:
        with store.transaction() as tx:
            rows = certificate_records.expired_unrevoked(tx, at)[:EXPIRY_BATCH]
            for row in rows:
                certificate_records.revoke(tx, store.actor, row["id"], row["device_name"], REVOKED_EXPIRED, at,
                                           serial=row["serial"], expired_at=row["not_after"])
        done += rows
        if len(rows) < EXPIRY_BATCH:
            return done


def _entries(tx, signer: authority.Signer) -> list[crl_module.Entry]:
    entries = []
    for row in certificate_records.revoked_lscs(tx, CAPF_ISSUER, with_pem=True):
        key = (signer.id, row["id"])
        if key not in _signed_by_active:
            _signed_by_active[key] = crl_module.signed_by(row["pem"], signer)
        if _signed_by_active[key]:
            entries.append(crl_module.Entry(row["serial"], row["revoked_at"], row["revocation_reason"] or "unspecified"))
    return entries


def _due(latest: dict | None, signer_fingerprint: str, mark: str, hours: int, now: _dt.datetime) -> str | None:
    """Why a new CRL is needed now, or None."""
    if latest is None:
        return "no CRL yet"
    if latest["signer_fingerprint"] != signer_fingerprint:
        return "the CAPF certificate changed"
    if latest["revocation_mark"] != mark:
        return "LSCs were revoked"
    this_update = parse_utc(latest["this_update"], "this_update")
    next_update = parse_utc(latest["next_update"], "next_update")
    if next_update - this_update != _dt.timedelta(hours=hours):
        return "crl_validity_hours changed"
    if now >= this_update + (next_update - this_update) / 2:
        return "half of its validity has passed"
    return None


def refresh_crl(store: Store, now: _dt.datetime | None = None, *, force: bool = False) -> dict[str, Any] | None:
    """Sign and store a new CRL when one is due (``force``: in any case); its summary, or None when
    the newest one stays current."""
    now = (now or utc_now()).replace(microsecond=0)
    with store.read() as tx:
        signer = authority.signer(store, tx)
        fingerprint = c.fingerprint(signer.certificate)
        hours = int(service_records.value(tx, "crl_validity_hours"))
        mark = certificate_records.revocation_mark(tx, CAPF_ISSUER)
        latest = crl_records.latest(tx, with_der=False)
        why = "requested" if force else _due(latest, fingerprint, mark, hours, now)
        if why is None:
            return None
        entries = _entries(tx, signer)
    if not crl_module.can_sign_crls(signer.certificate):
        log.warning("CRL: the active CAPF certificate's KeyUsage lacks cRLSign, so relying parties that check it "
                    "refuse its CRLs; regenerate the CAPF certificate (certificates made since carry cRLSign)")
    with store.transaction() as tx:
        number = crl_records.next_number(tx)
        this_update = max(now, parse_utc(latest["this_update"], "this_update")) if latest else now
        der = crl_module.to_der(crl_module.build(signer, entries, number, this_update, hours))
        summary = {"number": number, "signer_fingerprint": fingerprint, "this_update": format_utc(this_update),
                   "next_update": format_utc(this_update + _dt.timedelta(hours=hours)), "entries": len(entries)}
        crl_records.insert(tx, store.actor, revocation_mark=mark, der=der, **summary)
    return dict(summary, reason=why)


def current_crl(store: Store) -> dict[str, Any] | None:
    """The newest CRL (with ``der``), or None."""
    with store.read() as tx:
        return crl_records.latest(tx)


def run_duty(store: Store, now: _dt.datetime | None = None) -> dict[str, Any]:
    """The service's revocation duty at ``now`` (its clock): revoke expired LSCs, then sign a new CRL
    when one is due. Run by one process per store (``server/scheduling.py``)."""
    now = (now or utc_now()).replace(microsecond=0)
    expired = revoke_expired(store, now)
    return {"expired": expired, "crl": refresh_crl(store, now)}


def write_crl_file(path: str, der: bytes) -> None:
    """Replace ``path`` with ``der`` atomically (a reader sees the old or the new CRL whole), mode 0644."""
    directory = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(prefix=".capf-crl-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(der)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


class CrlFile:
    """Keeps the ``crl_path`` file of one process equal to the newest CRL in the store."""

    def __init__(self):
        self._written: tuple[str, int] | None = None  # (path, CRL number) last written

    def publish(self, store: Store) -> str | None:
        """Write the newest CRL to ``crl_path`` when it is not there yet; the path written, or None."""
        with store.read() as tx:
            path = service_records.value(tx, "crl_path")
            if not path:
                return None
            latest = crl_records.latest(tx, with_der=False)
            if latest is None or (self._written == (path, latest["number"]) and os.path.exists(path)):
                return None
            latest = crl_records.latest(tx)
        try:
            write_crl_file(path, latest["der"])
        except OSError as exc:
            raise CapfError(f"crl_path: cannot write {path}: {exc.strerror or exc}") from None
        self._written = (path, latest["number"])
        return path


__all__ = ["CrlFile", "check_reason", "check_request", "current_crl", "refresh_crl", "revoke_expired", "revoke_in", "revoke_lsc",
           "run_duty", "write_crl_file"]
