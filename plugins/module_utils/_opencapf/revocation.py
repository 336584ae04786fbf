# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revoking LSCs and keeping the CAPF CRL current (docs/lifecycle.md, "Revocation and the CRL").

An LSC is revoked, with its RFC 5280 reason and time, when a newer LSC of its phone is installed
(``superseded``, store/certificates.install), when a delete operation removes it from the phone
(``cessation_of_operation``, the decider), when an operator revokes it (``revoke_lsc``: capf_phone,
``opencapf phone revoke``), and, with the ``revoke_after_expiry`` service parameter, once it has
expired (``cessation_of_operation``, ``run_duty``).

Every CAPF certificate that may still have valid LSCs (the active one, and each retired one until it
expires) keeps its own CRL, signed with its own key and listing exactly the revoked LSCs it signed, so
a rotation leaves no revoked LSC unlisted; but each that a CRL of it issued after the LSC's notAfter
and its revocation listed: RFC 5280 3.3 lets it leave then, and the CRLs after that one leave it out
(``_delisted``), so neither the CRL nor the work of signing it grows with the years of renewals behind
it. The CRLs live in the store, so every node of a cluster serves the same ones; ``run_duty`` signs a
new one for a CAPF certificate when it has none, when something was revoked since, when its newest starts after this host's clock (``CLOCK_SKEW``; each
CRL's thisUpdate is its signer's clock, ``refresh_crls``), and once half of its validity has passed.
Every process then keeps the files equal to the newest CRLs (``CrlFile``). A CAPF certificate whose key cannot be loaded, or
whose KeyUsage lacks cRLSign, is reported (``issuer_problems``: a warning and ``capf_info``).

Every CRL served (HTTP) or published (files) is current (``served_crls``): the CRL of a retired CAPF
certificate stops at its expiry (its LSCs' notAfter are capped at its own, so none of them is valid
after it), and a CRL past its nextUpdate (its CAPF certificate's key lost, no scheduler running) is
withheld, not presented as the current one; both are logged.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import tempfile
from typing import Any

from .ca import authority
from .ca import crl as crl_module
from .ca.lsc import CAPF_ISSUER
from .errors import CapfError, NotFoundError, ValidationError
from .results import converged
from .store import Store
from .store import capf_certificates
from .store import certificates as certificate_records
from .store import crls as crl_records
from .store import phones as phone_records
from .store import service as service_records
from .vocabulary import (CLOCK_SKEW, REVOCATION_REASONS, REVOKED_EXPIRED, check_choice, format_utc,
                         normalise_device_name, parse_utc, utc_now)

log = logging.getLogger("opencapf.revocation")
EXPIRY_BATCH = 1000  # expired LSCs revoked per transaction
DELIST_BATCH = 500  # revoked LSCs delisted (and, before a CRL is signed, read to find those) per transaction
VALID_STATUSES = ("installed", "issued")  # an LSC that a revocation without a serial revokes
_named_issuers: dict[bytes, tuple[bytes, bytes | None]] = {}  # an LSC PEM's SHA-256: its issuer name and key identifier
_warned: set[tuple[str, str]] = set()  # (store, problem) logged by this process


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


def nothing_to_revoke(name: str, serial: str | None = None) -> dict[str, Any]:
    """``revoke_in``'s result for a phone that holds no LSC (one created in the same change): nothing,
    or, for a given serial, the error ``plan_revocation`` raises for a serial the phone does not have."""
    if serial is not None:
        raise NotFoundError(f"serial: device {name} has no LSC with serial {serial}")
    return converged(False, {"lscs": []}, {"lscs": []}, revoked=[])


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
                                           serial=row["serial"], issuer=row["issuer"], expired_at=row["not_after"])
        done += rows
        if len(rows) < EXPIRY_BATCH:
            return done


def _issuers_of(pem: str, identities: dict[tuple[bytes, bytes], list[str]], issuers: list[dict]) -> list[str]:
    """The fingerprints of the CAPF certificates among ``issuers`` that signed the LSC ``pem``: those
    it names as its issuer, every one of them when several share a name and a key (a CAPF certificate
    renewed with its key: the LSCs of each verify with all of them, and each LSC names the CRL of one)."""
    digest = hashlib.sha256(pem.encode("ascii")).digest()
    named = _named_issuers.get(digest)
    if named is None:
        named = _named_issuers[digest] = crl_module.named_issuer(pem)
    name, key_identifier = named
    if key_identifier is not None:
        return identities.get((name, key_identifier), [])
    # An LSC without a key identifier: its signature tells.
    return [issuer["fingerprint"] for issuer in issuers
            if issuer["certificate"].subject.public_bytes() == name
            and crl_module.signed_by(pem, issuer["certificate"])]


def _identities(issuers: list[dict]) -> dict[tuple[bytes, bytes], list[str]]:
    """The fingerprints of ``issuers`` by the identity relying parties know a CRL's issuer by (``_issuers_of``)."""
    identities: dict[tuple[bytes, bytes], list[str]] = {}
    for issuer in issuers:
        identities.setdefault(crl_module.issuer_identity(issuer["certificate"]), []).append(issuer["fingerprint"])
    return identities


def _entries(tx, issuers: list[dict], now: _dt.datetime) -> tuple[dict[str, list[crl_module.Entry]],
                                                                  list[tuple[dict, list[str]]]]:
    """The entries of the CRL of each of ``issuers`` (by fingerprint) issued at ``now``: the revoked LSCs
    it signed that CRLs list (``certificates.crl_entries``); and each of those LSCs' row with the
    fingerprints of the issuers that list it."""
    identities = _identities(issuers)
    entries: dict[str, list[crl_module.Entry]] = {issuer["fingerprint"]: [] for issuer in issuers}
    rows = []
    for row in certificate_records.crl_entries(tx, CAPF_ISSUER, format_utc(now)):
        fingerprints = _issuers_of(row["pem"], identities, issuers)
        for fingerprint in fingerprints:
            entries[fingerprint].append(
                crl_module.Entry(row["serial"], row["revoked_at"], row["revocation_reason"] or "unspecified"))
        rows.append((row, fingerprints))
    # The issuers of LSCs that CRLs no longer list are not kept: the process's memory follows what CRLs list.
    kept = {hashlib.sha256(row["pem"].encode("ascii")).digest() for row, _fingerprints in rows}
    for digest in [digest for digest in _named_issuers if digest not in kept]:
        del _named_issuers[digest]
    return entries, rows


def _delisted(tx, issuers: list[dict], rows: list[tuple[dict, list[str]]], signed: dict[str, set[str]],
              newest: dict[str, dict], now_text: str, read: dict | None = None) -> list[int]:
    """The revoked LSCs (``certificates.crl_entries`` ids) that CRLs leave out after the CRLs ``signed``
    now (serials listed, by fingerprint; thisUpdate ``now_text``): RFC 5280 3.3, each has appeared on a
    CRL of every CAPF certificate that lists it and can sign one, issued after its notAfter and after
    its revocation (the CRL that listed it, now or the newest of that certificate: one issued after a
    revocation committed while it was being signed does not list it, and does not count). And each that
    no CAPF certificate keeping a CRL lists any more (its own expired), once it has expired itself.
    ``read``: the newest CRLs read by an earlier call for other rows (it adds those it reads)."""
    signing = {issuer["fingerprint"] for issuer in issuers if issuer["signer"] is not None}
    listed: dict[str, tuple[str, set[str]]] = {} if read is None else read
    listed.update({fingerprint: (now_text, serials) for fingerprint, serials in signed.items()})
    ids = []
    for row, fingerprints in rows:
        if row["delisted_after_crl"] is not None:  # listed again by a CRL issued before its notAfter
            continue
        if not fingerprints:
            if row["not_after"] < now_text:
                ids.append(row["id"])
            continue
        able = [fingerprint for fingerprint in fingerprints if fingerprint in signing]
        beyond = max(row["not_after"], row["revoked_at"])
        for fingerprint in able:
            if fingerprint not in listed:
                crl = newest.get(fingerprint)
                der = crl_records.der(tx, crl["number"]) if crl else None
                listed[fingerprint] = (crl["this_update"] if crl else "", set(crl_module.revocation_dates(der)))
        if able and all(listed[fingerprint][0] > beyond and row["serial"] in listed[fingerprint][1]
                        for fingerprint in able):
            ids.append(row["id"])
    return ids


def _due(latest: dict | None, mark: str, hours: int, now: _dt.datetime) -> str | None:
    """Why a CAPF certificate whose newest CRL is ``latest`` needs a new one now, or None."""
    if latest is None:
        return "no CRL yet"
    if latest["revocation_mark"] != mark:
        return "LSCs were revoked"
    this_update = parse_utc(latest["this_update"], "this_update")
    next_update = parse_utc(latest["next_update"], "next_update")
    if next_update - this_update != _dt.timedelta(hours=hours):
        return "crl_validity_hours changed"
    if this_update > now + CLOCK_SKEW:  # signed by a host whose clock runs ahead: relying parties refuse it yet
        return "the newest CRL starts after this host's clock"
    if now >= this_update + (next_update - this_update) / 2:
        return "half of its validity has passed"
    return None


def issuer_problems(issuer: dict) -> list[str]:
    """What keeps the CRL of CAPF certificate ``issuer`` (``authority.crl_issuers``) from being signed or trusted."""
    name = f"CAPF certificate {issuer['common_name']} ({'active' if issuer['active'] else 'retired'})"
    problems = []
    if issuer["problem"]:
        problems.append(f"{name}: no CRL can be signed for its LSCs, {issuer['problem']}; revoked LSCs it signed "
                        "are listed on no CRL: give its phones new LSCs (install_upgrade)")
    if not crl_module.can_sign_crls(issuer["certificate"]):
        remedy = ("regenerate the CAPF certificate (certificates made since carry cRLSign)" if issuer["active"] else
                  "give its phones new LSCs (install_upgrade) from the active CAPF certificate")
        problems.append(f"{name}: its KeyUsage lacks cRLSign, so relying parties that check it (OpenSSL does) refuse "
                        f"the CRL signed with its key; {remedy}")
    return problems


def _warn_once(store: Store, problems: list[str]) -> None:
    for problem in problems:
        if (store.location, problem) not in _warned:
            _warned.add((store.location, problem))
            log.warning("CRL: %s", problem)


def _plan(store: Store, tx, now: _dt.datetime, force: bool) -> tuple[list[dict], int, str, dict, list]:
    """What ``refresh_crls`` would sign as ``tx`` sees the store: the CAPF certificates that keep a CRL,
    the CRL validity, the revocation mark, the newest CRL of each, and those due with the reason."""
    issuers = authority.crl_issuers(store, tx, now)
    hours = int(service_records.value(tx, "crl_validity_hours"))
    mark = certificate_records.revocation_mark(tx, CAPF_ISSUER)
    newest = {row["signer_fingerprint"]: row for row in crl_records.newest_per_signer(tx)}
    why = {issuer["fingerprint"]: "requested" if force else _due(newest.get(issuer["fingerprint"]), mark, hours, now)
           for issuer in issuers if issuer["signer"] is not None}
    # CAPF certificates of one name and key (a renewal of one) list the same LSCs and sign together, so
    # that an LSC leaves their CRLs together (``_delisted``).
    identity = {issuer["fingerprint"]: crl_module.issuer_identity(issuer["certificate"]) for issuer in issuers}
    twins_due = {identity[fingerprint] for fingerprint, reason in why.items() if reason is not None}
    due = [(issuer, why[issuer["fingerprint"]] or "a CAPF certificate of the same name and key is due")
           for issuer in issuers if issuer["fingerprint"] in why and identity[issuer["fingerprint"]] in twins_due]
    return issuers, hours, mark, newest, due


def refresh_crls(store: Store, now: _dt.datetime | None = None, *, force: bool = False) -> list[dict[str, Any]]:
    """Sign and store a new CRL for each CAPF certificate that keeps one (``authority.crl_issuers``)
    and needs one (``force``: for each in any case); the summaries of the CRLs signed.

    First the revoked LSCs that the newest CRLs already listed beyond their validity leave the CRLs
    (``_delist_listed_before``, a batch per transaction: those of a store whose CRLs listed every LSC ever
    revoked). The entries are gathered in a read transaction (the costly part: the issuer of every revoked
    LSC that CRLs still list, ``certificates.crl_entries``), and
    what is signed is decided again in the write transaction that numbers and stores the CRLs, under
    the lock every writer of the store takes: when an LSC was revoked, a CAPF certificate rotated or
    another process (a node's scheduler, ``opencapf crl show``) signed a CRL in between, the entries
    are gathered again there. So no CRL omits a revocation committed before it, nor lists less than a
    CRL of its issuer with a lower number, but the revoked LSCs that one listed beyond their validity:
    after signing, the transaction delists them (``_delisted``, ``certificates.delist``; a CRL issued
    before an LSC's notAfter lists it again all the same, ``certificates.crl_entries``) and gives every
    CRL that saw all revocations the revocation mark after it (a delisting is no revocation to sign for);
    more than ``DELIST_BATCH`` of them are delisted after it, a batch per transaction.

    A CRL's thisUpdate is ``now``, this host's clock, never later (RFC 5280 5.1.2.4: relying parties
    refuse a CRL that starts in their future), even when the newest CRL of its issuer, signed by a host
    whose clock runs ahead, starts later: relying parties and the CRL responder tell the newer CRL by
    its number, which still grows. When that CRL starts more than ``CLOCK_SKEW`` after ``now``, the
    summary says so (``clock_behind_seconds`` and ``previous_this_update``, ``clock_warning``), as does
    the audit event of the CRL. Likewise an entry's revocationDate is never after its CRL's thisUpdate,
    even for a revocation recorded by a host whose clock runs ahead (``ca/crl.revocation_date``)."""
    now = (now or utc_now()).replace(microsecond=0)
    with store.read() as tx:
        issuers, _hours, mark, newest, due = _plan(store, tx, now, force)
        _warn_once(store, [problem for issuer in issuers for problem in issuer_problems(issuer)])
        if not due:
            return []
    _delist_listed_before(store, issuers, newest, now)
    with store.read() as tx:
        issuers, _hours, mark, newest, due = _plan(store, tx, now, force)
        if not due:  # another process signed them meanwhile
            return []
        entries, rows = _entries(tx, issuers, now)
    read = _state(mark, issuers, newest)
    signed = []
    with store.transaction() as tx:
        issuers, hours, mark, newest, due = _plan(store, tx, now, force)
        if _state(mark, issuers, newest) != read:
            entries, rows = _entries(tx, issuers, now)
        for issuer, why in due:
            latest = newest.get(issuer["fingerprint"])
            behind = parse_utc(latest["this_update"], "this_update") - now if latest else _dt.timedelta(0)
            clock = {"clock_behind_seconds": int(behind.total_seconds()) if behind > CLOCK_SKEW else 0,
                     "previous_this_update": latest["this_update"] if behind > CLOCK_SKEW else None}
            number = crl_records.next_number(tx, int(now.timestamp()) * 1000)
            listed = entries[issuer["fingerprint"]]
            # A revocation recorded by a host whose clock runs ahead of this one's is dated by this CRL's
            # thisUpdate at the latest, and no later than the CRL before it dated it (ca/crl.revocation_date).
            earlier = crl_module.revocation_dates(crl_records.der(tx, latest["number"])) if latest and listed else None
            der = crl_module.to_der(crl_module.build(issuer["signer"], listed, number, now, hours, earlier))
            summary = {"number": number, "signer_fingerprint": issuer["fingerprint"], "this_update": format_utc(now),
                       "next_update": format_utc(now + _dt.timedelta(hours=hours)), "entries": len(listed)}
            crl_records.insert(tx, store.actor, revocation_mark=mark, der=der, **summary, **clock)
            signed.append(dict(summary, **clock, reason=why, active=issuer["active"],
                               common_name=issuer["common_name"]))
        listed = {crl["signer_fingerprint"]: {entry.serial for entry in entries[crl["signer_fingerprint"]]}
                  for crl in signed}
        delisted = _delisted(tx, issuers, rows, listed, newest, format_utc(now)) if signed else []
        if delisted and len(delisted) <= DELIST_BATCH:
            certificate_records.delist(tx, delisted, signed[-1]["number"])
            crl_records.update_revocation_mark(tx, mark, certificate_records.revocation_mark(tx, CAPF_ISSUER))
    if len(delisted) > DELIST_BATCH:
        # A CRL that listed more beyond their validity than a transaction delists (the first of a store
        # whose CRLs listed every LSC revoked over the years): a batch per transaction, so that no writer
        # waits for all of them. The revocation mark changes: the next refresh signs a CRL without them.
        for start in range(0, len(delisted), DELIST_BATCH):
            with store.transaction() as tx:
                certificate_records.delist(tx, delisted[start:start + DELIST_BATCH], signed[-1]["number"])
    return signed


def _delist_listed_before(store: Store, issuers: list[dict], newest: dict[str, dict], now: _dt.datetime) -> int:
    """Before CRLs are signed at ``now``: delist the revoked LSCs that the newest CRLs of ``issuers``
    (``newest``, by fingerprint) listed beyond their validity and revocation already (``_delisted``), read
    and delisted ``DELIST_BATCH`` at a time, each batch in a transaction of its own; how many. A store of
    a version whose CRLs left no LSC out (before schema version 19) lists every LSC the renewals of the
    years revoked: its first refresh delists them so, never all under the lock that every writer waits
    for, and signs CRLs of those still to list."""
    if not newest:
        return 0
    number = max(row["number"] for row in newest.values())  # the CRLs after it leave them out
    identities, read, now_text, count = _identities(issuers), {}, format_utc(now), 0
    for removed in (False, True):
        after = None
        while True:
            with store.read() as tx:
                page = certificate_records.listed_page(tx, CAPF_ISSUER, DELIST_BATCH, after, removed)
                rows = [(row, _issuers_of(row["pem"], identities, issuers)) for row in page]
                ids = _delisted(tx, issuers, rows, {}, newest, now_text, read)
            if ids:
                with store.transaction() as tx:
                    certificate_records.delist(tx, ids, number)
                count += len(ids)
            if len(page) < DELIST_BATCH:
                break
            after = (page[-1]["revoked_at"], abs(page[-1]["id"]))
    return count


def _state(mark: str, issuers: list[dict], newest: dict[str, dict]) -> tuple:
    """What the entries gathered depend on: the revocations (``mark``), the CAPF certificates that keep
    a CRL, and the newest CRL of each (a CRL signed since may have delisted revoked LSCs)."""
    return mark, [issuer["fingerprint"] for issuer in issuers], sorted((key, row["number"]) for key, row in newest.items())


def clock_warning(crl: dict[str, Any]) -> str | None:
    """What an operator should hear of the clock of the host that signed ``crl`` (a ``refresh_crls``
    summary), or None: the CRL before it started more than ``CLOCK_SKEW`` after this host's clock."""
    if not crl.get("clock_behind_seconds"):
        return None
    return (f"CRL {crl['number']} of CAPF certificate {crl['common_name']}: the CRL before it starts at "
            f"{crl['previous_this_update']}, {crl['clock_behind_seconds']} s after this host's clock "
            f"({crl['this_update']}, the thisUpdate this CRL got): this host's clock is behind that of the host "
            "that signed it, or that host's clock runs ahead (a relying party with a right clock refuses a CRL "
            "that starts in its future); set both clocks right (NTP)")


def crl_is_current(signer: dict[str, Any], crl: dict[str, Any], now_text: str) -> bool:
    """Whether ``crl`` (``next_update``), the newest CRL of the CAPF certificate ``signer`` (``active``,
    ``not_after``), is current at ``now_text``: its signer keeps a CRL (``capf_certificates.keeps_crl``:
    the active one, each retired one until it expires) and ``now_text`` is before its nextUpdate. The one
    rule of which CRLs are served, published (``served_crls``) and shown (``current_crls``)."""
    return capf_certificates.keeps_crl(signer, now_text) and now_text < crl["next_update"]


def current_crls(store: Store, now: _dt.datetime | None = None) -> list[dict[str, Any]]:
    """The newest CRL (with ``der`` and ``active``) of each CAPF certificate that has signed one, when it
    is current at ``now`` (``crl_is_current``), the active one first."""
    found = []
    now_text = format_utc(now or utc_now())
    with store.read() as tx:
        for issuer in sorted(authority.crl_issuers(store, tx, now), key=lambda issuer: not issuer["active"]):
            row = crl_records.latest(tx, issuer["fingerprint"])
            if row is not None and crl_is_current(issuer, row, now_text):
                found.append(dict(row, active=issuer["active"]))
    return found


def _withheld(row: dict[str, Any]) -> str:
    """Why the newest CRL ``row`` of a CAPF certificate (``crls.newest_per_signer_kept``), not current
    (``crl_is_current``), is neither served nor published."""
    if not row["kept"]:
        return (f"the retired CAPF certificate {row['common_name']} expired at {row['not_after']}, and every LSC it "
                "signed with it: its CRL is served and published no more")
    return (f"CRL {row['number']} of the {'active' if row['active'] else 'retired'} CAPF certificate "
            f"{row['common_name']} passed its nextUpdate {row['next_update']} and no newer one was signed (see "
            "capf_info crl.issuers[].problems): a CRL past its nextUpdate is served and published nowhere")


def served_crls(tx, now: _dt.datetime | None = None) -> tuple[dict[str, dict], dict[str, tuple[dict, str]]]:
    """The CRLs served over HTTP and published as files at ``now``, by their CAPF certificate's
    fingerprint: the newest CRL of each CAPF certificate that keeps one (the active one, each retired
    one until it expires), while it is current (``crl_is_current``). And the newest CRLs withheld, each with
    the reason (``_withheld``)."""
    now_text = format_utc(now or utc_now())
    served: dict[str, dict] = {}
    withheld: dict[str, tuple[dict, str]] = {}
    for row in crl_records.newest_per_signer_kept(tx, now_text):
        if crl_is_current(row, row, now_text):
            served[row["signer_fingerprint"]] = row
        else:
            withheld[row["signer_fingerprint"]] = (row, _withheld(row))
    return served, withheld


def crl_overview(store: Store, tx, now: _dt.datetime | None = None) -> dict[str, Any] | None:
    """``capf_info``'s ``crl``: the newest CRL of the active CAPF certificate (its fields null before
    the first) and, under ``issuers``, each CAPF certificate that keeps a CRL, with its newest CRL, its
    locations and its problems; None when the store has no CAPF certificate."""
    issuers = authority.crl_issuers(store, tx, now)
    if not issuers:
        return None
    newest = {row["signer_fingerprint"]: row for row in crl_records.newest_per_signer(tx)}
    crl_path, crl_url = service_records.value(tx, "crl_path"), service_records.value(tx, "crl_url")
    active = next(issuer for issuer in issuers if issuer["active"])
    fields = ("number", "signer_fingerprint", "this_update", "next_update", "entries", "revocation_mark", "created_at")
    result: dict[str, Any] = dict.fromkeys(fields)
    result.update(newest.get(active["fingerprint"]) or {})
    result["issuers"] = []
    for issuer in issuers:
        crl = newest.get(issuer["fingerprint"]) or {}
        result["issuers"].append({
            "fingerprint": issuer["fingerprint"], "common_name": issuer["common_name"], "serial": issuer["serial"],
            "active": issuer["active"], "not_after": issuer["not_after"],
            "crl_sign": crl_module.can_sign_crls(issuer["certificate"]), "key_held": issuer["signer"] is not None,
            "http_path": crl_module.issuer_location(crl_module.CRL_PATH, issuer["fingerprint"]),
            "file": crl_module.issuer_location(crl_path, issuer["fingerprint"]) if crl_path else None,
            "url": crl_module.issuer_location(crl_url, issuer["fingerprint"]) if crl_url else None,
            "number": crl.get("number"), "this_update": crl.get("this_update"), "next_update": crl.get("next_update"),
            "entries": crl.get("entries"), "problems": issuer_problems(issuer)})
    return result


def run_duty(store: Store, now: _dt.datetime | None = None) -> dict[str, Any]:
    """The service's revocation duty at ``now`` (its clock): revoke expired LSCs, then sign a new CRL
    for each CAPF certificate that needs one. Run by one process per store (``server/scheduling.py``)."""
    now = (now or utc_now()).replace(microsecond=0)
    expired = revoke_expired(store, now)
    return {"expired": expired, "crls": refresh_crls(store, now)}


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
    """Keeps the files of one process equal to the CRLs served (``served_crls``): ``crl_path`` the
    active CAPF certificate's, and beside it (``ca/crl.issuer_location``) each CAPF certificate's own;
    the file of a CRL withheld is removed (and the removal logged)."""

    def __init__(self):
        self._written: dict[str, int] = {}  # path: CRL number last written there

    def publish(self, store: Store, now: _dt.datetime | None = None) -> list[str]:
        """Write each CRL served at ``now`` to its file when it is not there yet, and remove the file of
        each CRL withheld; the paths written."""
        with store.read() as tx:
            path = service_records.value(tx, "crl_path")
            if not path:
                return []
            served, withheld = served_crls(tx, now)
            wanted: dict[str, int] = {}
            for fingerprint, row in served.items():
                wanted[crl_module.issuer_location(path, fingerprint)] = row["number"]
                if row["active"]:
                    wanted[path] = row["number"]
            stale = {crl_module.issuer_location(path, fingerprint): (row, reason)
                     for fingerprint, (row, reason) in withheld.items()}
            stale.update({path: (row, reason) for row, reason in withheld.values() if row["active"] and path not in wanted})
            due = {target: number for target, number in wanted.items()
                   if self._written.get(target) != number or not os.path.exists(target)}
            ders = {number: crl_records.der(tx, number) for number in set(due.values())}
        written = []
        for target, number in sorted(due.items()):
            try:
                write_crl_file(target, ders[number])
            except OSError as exc:
                raise CapfError(f"crl_path: cannot write {target}: {exc.strerror or exc}") from None
            self._written[target] = number
            written.append(target)
        for target, (row, reason) in sorted(stale.items()):
            self._written.pop(target, None)
            try:
                os.unlink(target)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CapfError(f"crl_path: cannot remove {target}: {exc.strerror or exc}") from None
            # A retired CAPF certificate's expiry is the expected end of its CRL; a CRL that lapsed is not.
            log.log(logging.WARNING if row["kept"] else logging.INFO, "CRL file %s removed: %s", target, reason)
        return written


__all__ = ["CrlFile", "check_reason", "check_request", "clock_warning", "crl_is_current", "crl_overview",
           "current_crls", "issuer_problems", "refresh_crls", "revoke_expired", "revoke_in", "revoke_lsc", "run_duty",
           "served_crls", "write_crl_file"]
