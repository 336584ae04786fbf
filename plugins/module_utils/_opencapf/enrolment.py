# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Third-party LSCs in the store: phone-signed CSRs to an online or offline CA, certificates back.

A CSR row (``csrs``) holds the phone-signed PKCS#10 (``csr_pem``) and moves through
``pending`` (at the CA; ``external_ref`` names an online CA's pending request) \u2192 ``issued``
(the certificate is recorded in ``certificates`` with status ``issued`` and waits for the phone's
next session) or ``failed`` (with the reason). A newer CSR from the same phone marks the older
ones ``superseded``: a certificate that arrives for one of those is recorded ``stale`` and never
delivered. So is one for a CSR the operator withdrew (``failed`` by ``phone_config`` when the phone's
operation changes, is armed again, or the phone is removed). The phone's STORE acknowledgement then
marks the LSC ``installed`` exactly as for CAPF-issued LSCs.

Every certificate a CA returns (online in the session, online when a pending request is picked up,
offline on import) passes ``issuers.acceptance.check`` against the phone's device name and the key
of its CSR before anything is recorded: a refused one is never recorded as an LSC nor delivered,
and its code is recorded (the CSR's and the operation's reason, a ``certificate.refused`` audit
event).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field as _field

from . import csr as csr_module
from . import phone_query, secretbox
from .ca import certificates as c
from .errors import CapfError, CodedError, StoreError
from .files import read_input_file, write_private_file
from .issuers import acceptance, base, offline, online
from .server import metrics
from .store import Store, audit
from .store import certificates as certificate_records
from .store import csrs as csr_records
from .store import phones as phone_records
from .store import service as service_records
from .store import trust as trust_records
from .store.backend import Transaction
from .vocabulary import IMPORT_DUPLICATE, format_utc, normalise_device_name

log = logging.getLogger("opencapf.enrolment")
ONLINE_CA_KEY = "online_ca"
PASSWORD_SECRET = "online_ca.password"
# How long a phone waits before asking again about a request an offline CA operator must sign.
OFFLINE_RETRY_SECONDS = 3600
# Inside a phone session the phone waits about 8-10 s for each answer (capf-protocol.md 5, quirk 12):
# the CA gets a short HTTP timeout and a short budget there; a slower answer is picked up later.
IN_SESSION_HTTP_TIMEOUT = 3
IN_SESSION_BUDGET = 4.0


class EnrolmentError(CodedError):
    """A third-party CA did not sign the request; the message is the operation's recorded reason."""


@dataclass(frozen=True)
class Ready:
    """A third-party LSC recorded and waiting for the phone."""

    certificate_id: int
    der: bytes


@dataclass(frozen=True)
class Waiting:
    retry_after: int
    reason: str
    csr_id: int | None = None  # the request that waits, when the phone's next session finds it


class Replaced(Waiting):
    """The CA answered a request that no longer waits (the phone sent a newer CSR, the request failed
    with its session, the operator withdrew the operation it was made for, or an earlier answer of the
    CA was recorded for it): nothing of this answer is delivered."""


REPLACED = ("the CSR no longer waited when the CA answered it (the phone sent a newer one, its session ended, "
            "the operator changed the phone's operation or removed the phone, or the CA had answered it already); "
            "a certificate signed with this answer is stale and never delivered")
# Why a key request is superseded by the enrolment itself (the sessions' reasons: ``csrs.UNENDED``, ``csrs.COMPLETED``).
NEWER_REQUEST = "the phone sent a newer CSR"
KEY_CHANGED = "the phone refused the certificate (its key changed)"


# -- the online CA client from the store -------------------------------------------------------------

def trust_anchors(tx: Transaction) -> list[str]:
    """PEM texts of CAPF-trust: the anchors a third-party LSC (and the CA's HTTPS server) must chain to."""
    return trust_records.anchor_pems(tx)


def online_issuer(store: Store, timeout: int | None = None):
    """The configured online CA client (``issuers.online.build``) from the stored settings
    (``timeout``: HTTP timeout in seconds instead of the client's default)."""
    with store.read() as tx:
        settings = service_records.read_raw(tx, ONLINE_CA_KEY)
        parameters = service_records.read(tx)
        password = secretbox.get(tx, store.secret(), PASSWORD_SECRET)
        pems = trust_anchors(tx)
    if not settings:
        raise EnrolmentError(base.CONFIGURATION, "issuer is online_ca but no online CA is configured "
                                                 "(capf_service online_ca: hostname, port, type, ...)")
    known = {key: value for key, value in settings.items() if key in online.SETTINGS and value is not None}
    if timeout is not None:
        known["timeout_seconds"] = timeout
    try:
        issuer = online.build(known, pems, password=password, fips_mode=bool(parameters.get("fips_mode")))
    except CapfError as exc:
        raise EnrolmentError(base.CONFIGURATION, f"online CA settings: {exc}") from None
    return _Observed(issuer) if metrics.enabled() else issuer


class _Observed:
    """An online CA client whose requests are counted and timed for the metrics endpoint."""

    def __init__(self, issuer):
        self._issuer = issuer

    def __getattr__(self, name):
        return getattr(self._issuer, name)

    def submit(self, request_der: bytes, *, renewal: bool = False):
        return self._observe("submit", self._issuer.submit, request_der, renewal=renewal)

    def poll(self, reference: str, request_der: bytes):
        return self._observe("poll", self._issuer.poll, reference, request_der)

    @staticmethod
    def _observe(request: str, call, *args, **kwargs):
        started, outcome = time.monotonic(), "error"
        try:
            answer = call(*args, **kwargs)
            outcome = {base.Issued: "issued", base.Pending: "pending", base.Rejected: "rejected"}.get(
                type(answer), "error")
            return answer
        finally:
            metrics.online_ca_request(request, outcome, time.monotonic() - started)


def _anchors(tx: Transaction) -> list:
    return [c.load_pem_certificate(pem, "capf-trust certificate") for pem in trust_anchors(tx)]


# -- records -------------------------------------------------------------------------------------

def add_request(tx: Transaction, actor: str, phone: dict, signed: csr_module.SignedCsr) -> int:
    """Record a phone-signed CSR as pending; older unfinished CSRs of the phone become superseded, each
    with its ``csr.superseded`` event (the ``csr.created`` event lists them too). The events are one
    statement, as the ``csr.created`` event alone was."""
    with audit.batched(tx):
        older = csr_records.unfinished_signed(tx, phone["id"])
        for older_id in older:
            csr_records.supersede(tx, older_id, NEWER_REQUEST)
            audit.record(tx, actor, "csr.superseded", phone["name"], csr_id=older_id, reason=NEWER_REQUEST)
            waiting = csr_records.waiting_certificate(tx, older_id)
            if waiting is not None:
                certificate_records.set_status(tx, actor, waiting, "stale", phone["name"],
                                               reason="the phone replaced the CSR before the LSC was delivered")
        csr_id = csr_records.add_signed(tx, phone["id"], signed.public_key_fingerprint,
                                        c.public_key_der(signed.csr.public_key()), signed.pem)
        audit.record(tx, actor, "csr.created", phone["name"], csr_id=csr_id, superseded=older)
    return csr_id


def set_csr(tx: Transaction, csr_id: int, status: str, reason: str = "", *, certificate_id=None,
            external_ref=None) -> None:
    csr_records.set_status(tx, csr_id, status, reason, certificate_id=certificate_id, external_ref=external_ref)


def record_certificate(tx: Transaction, actor: str, phone: dict, certificate, source: str,
                       status: str = "issued", chain=(), reason: str = "") -> int:
    """A third-party LSC in ``certificates``: issuer = the CA's subject, like a CAPF-issued one, and its
    audit event in the shape of a CAPF-issued one's (``certificate.issued``, or ``certificate.stale``
    with ``reason`` when it arrived for a request that no longer waits); ``chain``: the accepted chain
    (``acceptance.Accepted.chain``), whose CA certificates below CAPF-trust are kept to check the LSC
    again when it is delivered."""
    fingerprint = c.fingerprint(certificate)
    existing = certificate_records.id_for(tx, phone["id"], fingerprint, source)
    if existing is not None:
        return existing
    serial = format(certificate.serial_number, "x")
    issuer = certificate.issuer.rfc4514_string()
    not_after = format_utc(c.not_after(certificate))
    certificate_id = certificate_records.insert(
        tx, phone_id=phone["id"], kind="lsc", serial=serial, issuer=issuer, fingerprint=fingerprint,
        public_key_fingerprint=c.public_key_fingerprint(certificate.public_key()), status=status, source=source,
        pem=c.to_pem(certificate), not_before=format_utc(c.not_before(certificate)), not_after=not_after,
        chain_pem="".join(c.to_pem(item) for item in list(chain)[1:-1]) or None)
    audit.record(tx, actor, f"certificate.{status}", phone["name"], certificate_id=certificate_id, serial=serial,
                 issuer=issuer, signer=c.common_name(certificate.issuer), source=source, not_after=not_after,
                 **({"reason": reason} if status == "stale" else {}))
    return certificate_id


def _fail_waiting(tx: Transaction, actor: str, device_name: str, csr_id: int, reason: str) -> bool:
    """The online CA refused the request ``csr_id`` (failed already): the phone's operation fails with
    ``reason`` only while it waits for that request, ``pending`` (``phones.waits_for_a_session``: its
    session deferred) with the request the phone's newest. An operation in progress is its session's
    (which finds the request failed and starts with a new key), and a result recorded stands. Whether
    it failed."""
    phone = phone_records.get(tx, device_name)
    if phone is None or not phone_records.waits_for_a_session(phone):
        return False
    newest = csr_records.latest_signed(tx, phone["id"])
    if newest is None or newest["id"] != csr_id:
        return False
    phone_records.set_operation_result(tx, actor, phone, "failed", reason)
    return True


def record_refusal(tx: Transaction, actor: str, device_name: str, certificate, source: str, code: str,
                   reason: str) -> None:
    """Audit a certificate that ``acceptance.check`` refused (it is recorded nowhere else)."""
    audit.record(tx, actor, "certificate.refused", device_name, code=code, reason=reason, source=source,
                 certificate_subject=certificate.subject.rfc4514_string(), issuer=certificate.issuer.rfc4514_string(),
                 serial=format(certificate.serial_number, "x"), fingerprint=c.fingerprint(certificate))


# -- online CA -------------------------------------------------------------------------------------

def submit_online(store: Store, actor: str, phone: dict, csr_id: int, signed: csr_module.SignedCsr, *,
                  budget_seconds: float = IN_SESSION_BUDGET, issuer=None, renewal: bool = False):
    """Send the request to the online CA: Ready, Waiting, or EnrolmentError (recorded on the CSR)."""
    own = issuer is None
    try:
        if own:
            issuer = online_issuer(store, IN_SESSION_HTTP_TIMEOUT)
        outcome = issuer.submit(signed.der, renewal=renewal)
        outcome = base.resolve(issuer, outcome, signed.der, budget_seconds)
    except base.IssuerError as exc:
        reason = f"online CA: {exc} [{exc.code}]"
        with store.transaction() as tx:
            csr_records.fail_pending(tx, actor, phone["name"], csr_id, reason)
        raise EnrolmentError(exc.code, reason) from None
    finally:
        if own and issuer is not None:
            issuer.close()
    return _settle(store, actor, phone, csr_id, outcome, signed.csr)


def _settle(store: Store, actor: str, phone: dict, csr_id: int, outcome, request):
    """Record what the online CA answered; an issued certificate is recorded only when
    ``acceptance.check`` accepts it for this phone's name and its request's key."""
    refused, chain = None, ()
    if isinstance(outcome, base.Issued):
        with store.read() as tx:
            anchors = _anchors(tx)
        verdict = acceptance.check(outcome.certificate, device_name=phone["name"], public_key=request.public_key(),
                                   anchors=anchors, intermediates=outcome.intermediates)
        if isinstance(verdict, acceptance.Refused):
            refused = outcome.certificate
            outcome = base.Rejected(verdict.code, verdict.reason, outcome.reference)
        else:
            chain = verdict.chain
    with store.transaction() as tx:
        status = csr_records.reported_status_of(tx, csr_id, clock_skew=store.clock_skew)
        if status != "pending":
            # Superseded by a newer CSR of the phone, failed with its session or by the operator's change of
            # the operation, or answered already while the CA answered: the CSR keeps its status, and the phone
            # is never given this answer's certificate. Reported failed meanwhile (its session's process died,
            # or the operation lapsed: the scheduler fails it): the same. A CSR gone with its removed phone:
            # nothing to keep.
            if isinstance(outcome, base.Issued) and status is not None:
                record_certificate(tx, actor, phone, outcome.certificate, "online_ca", status="stale", chain=chain,
                                   reason=REPLACED)
            audit.record(tx, actor, "csr.answer_ignored", phone["name"], csr_id=csr_id, reason=REPLACED,
                         answer=type(outcome).__name__.lower())
            return Replaced(base.DEFAULT_RETRY_AFTER, REPLACED)
        if isinstance(outcome, base.Issued):
            certificate_id = record_certificate(tx, actor, phone, outcome.certificate, "online_ca", chain=chain)
            set_csr(tx, csr_id, "issued", certificate_id=certificate_id, external_ref=outcome.reference or None)
            return Ready(certificate_id, c.to_der(outcome.certificate))
        if isinstance(outcome, base.Pending):
            set_csr(tx, csr_id, "pending", "the online CA has not signed the request yet",
                    external_ref=outcome.reference)
            audit.record(tx, actor, "csr.pending", phone["name"], csr_id=csr_id, reference=outcome.reference)
            return Waiting(outcome.retry_after, f"the online CA holds request {outcome.reference} pending")
        what = "online CA refused" if refused is None else "certificate from the online CA refused"
        reason = f"{what}: {outcome.reason} [{outcome.code}]"
        csr_records.fail_pending(tx, actor, phone["name"], csr_id, reason)
        if refused is not None:
            record_refusal(tx, actor, phone["name"], refused, "online_ca", outcome.code, reason)
    raise EnrolmentError(outcome.code, reason)


def poll_pending(store: Store, actor: str, *, issuer=None, device_name: str | None = None,
                 timeout: int | None = None) -> dict:
    """Ask the online CA again about every pending request (the enrolment service's work); returns
    counts of issued / pending / failed, and of stale answers (for a request that no longer waited)
    when there were any."""
    with store.read() as tx:
        rows = csr_records.pending_online(tx, device_name, clock_skew=store.clock_skew)
    counts = {"issued": 0, "pending": 0, "failed": 0}
    if not rows:
        return counts
    own = issuer is None
    try:
        if own:
            issuer = online_issuer(store, timeout)
        for row in rows:
            request = csr_module.verify(row["csr_pem"].encode(), "stored CSR")
            request_der = csr_module.to_der(request)
            with store.read() as tx:
                phone = phone_records.get(tx, row["name"])
            try:
                outcome = issuer.poll(row["external_ref"], request_der)
            except base.IssuerError as exc:
                # Transport trouble says nothing about the request: keep it pending, try again later.
                log.warning("polling request %s of %s: %s", row["external_ref"], row["name"], exc)
                counts["pending"] += 1
                continue
            try:
                result = _settle(store, actor, phone, row["id"], outcome, request)
            except EnrolmentError as exc:
                with store.transaction() as tx:
                    _fail_waiting(tx, actor, row["name"], row["id"], str(exc))
                counts["failed"] += 1
                continue
            if isinstance(result, Replaced):
                counts["stale"] = counts.get("stale", 0) + 1
                continue
            counts["issued" if isinstance(result, Ready) else "pending"] += 1
    finally:
        if own and issuer is not None:
            issuer.close()
    return counts


# -- what the phone's next session finds -------------------------------------------------------------

def next_for_phone(tx: Transaction, phone: dict, sent_before: str | None = None, kept=()):
    """Ready (deliver to the pending key), Waiting (at the CA), or None (start with a new key).
    ``sent_before``: the start of the session that asks, and ``kept`` the requests waiting then that it
    found sent in that second: a request still at the CA sent since, and not found then, is another
    session's, whose end told the phone nothing (``csrs.UNENDED``): the phone keeps no key for it."""
    row = csr_records.latest_signed(tx, phone["id"])
    if row is None or (row["status"] == "pending" and sent_before is not None and row["created_at"] >= sent_before
                       and row["id"] not in kept):
        return None
    if row["status"] == "issued" and row["certificate_status"] == "issued":
        return Ready(row["certificate_id"], c.to_der(c.load_pem_certificate(row["pem"], "stored LSC")))
    if row["status"] == "pending":
        if row["external_ref"]:
            return Waiting(base.DEFAULT_RETRY_AFTER, f"the online CA holds request {row['external_ref']} pending",
                           row["id"])
        return Waiting(OFFLINE_RETRY_SECONDS, "the CSR waits for the offline CA (export, sign, import)", row["id"])
    return None


class DeliveryRefused(EnrolmentError):
    """A waiting third-party LSC failed its check at delivery; the message is the operation's reason."""


def deliverable(store: Store, actor: str, phone: dict, sent_before: str | None = None, kept=()):
    """``next_for_phone`` at the moment of delivery: a waiting certificate passes ``acceptance.check``
    again, against its request and now (it may have expired while it waited, or its CA may have left
    CAPF-trust). A refused one is never delivered: it becomes ``stale`` and its CSR ``failed`` with the
    reason and code, a ``certificate.refused`` audit event names it, and ``DeliveryRefused`` (the
    reason) ends the session, which fails the operation with that reason."""
    with store.read() as tx:
        state = next_for_phone(tx, phone, sent_before, kept)
        if not isinstance(state, Ready):
            return state
        row = certificate_records.by_id(tx, state.certificate_id)
        request_row = csr_records.for_certificate(tx, state.certificate_id)
        anchors = _anchors(tx)
    certificate = c.load_pem_certificate(row["pem"], "stored LSC")
    request = csr_module.verify(request_row["csr_pem"].encode(), "stored CSR")
    intermediates = c.load_pem_certificates(row["chain_pem"].encode(), "stored chain") if row["chain_pem"] else []
    verdict = acceptance.check(certificate, device_name=phone["name"], public_key=request.public_key(),
                               anchors=anchors, intermediates=intermediates)
    if isinstance(verdict, acceptance.Accepted):
        return state
    what = "online" if row["source"] == "online_ca" else "offline"
    reason = f"certificate from the {what} CA refused at delivery: {verdict.reason} [{verdict.code}]"
    with store.transaction() as tx:
        record_refusal(tx, actor, phone["name"], certificate, row["source"], verdict.code, reason)
        # Unless it no longer waits: an operator revoked it meanwhile (final), or another session of the
        # phone delivered it.
        if certificate_records.set_stale_if_waiting(tx, actor, phone, state.certificate_id, reason, code=verdict.code):
            csr_records.fail_pending(tx, actor, phone["name"], request_row["id"], reason, was="issued")
    raise DeliveryRefused(verdict.code, reason)


def refused_delivery(tx: Transaction, actor: str, phone: dict, certificate_id: int, **details) -> bool:
    """The phone no longer holds the key of a delivered LSC: the LSC is stale, its CSR superseded (its
    ``csr.superseded`` event with ``details``), unless the LSC no longer waits
    (``certificates.set_stale_if_waiting``: another session of the phone delivered it and the phone
    stored it, leaving this session's phone no pending key). Returns whether the LSC became stale."""
    if not certificate_records.set_stale_if_waiting(tx, actor, phone, certificate_id,
                                                    reason="the phone no longer holds the key of this certificate"):
        return False
    requests = csr_records.of_certificate(tx, certificate_id)
    csr_records.supersede_for_certificate(tx, certificate_id, KEY_CHANGED)
    for csr_id in requests:
        audit.record(tx, actor, "csr.superseded", phone["name"], csr_id=csr_id, reason=KEY_CHANGED, **details)
    return True


# -- offline CA ------------------------------------------------------------------------------------

def _pending(tx: Transaction, status: str, clock_skew) -> list:
    rows = csr_records.offline_signed(tx, status, clock_skew=clock_skew)
    return [(row["id"], offline.PendingCsr(row["name"], row["csr_pem"].encode(), row["created_at"])) for row in rows]


def pending_csrs(store: Store, devices=None) -> list:
    """Pending offline CSRs as ``offline.PendingCsr``, oldest first (optionally only for ``devices``)."""
    with store.read() as tx:
        items = [item for _id, item in _pending(tx, "pending", store.clock_skew)]
    if devices:
        wanted = {name.upper() for name in devices}
        items = [item for item in items if item.device_name.upper() in wanted]
    return items


def export_csrs(store: Store, directory: str, *, bundle: bool = False, devices=None) -> list[str]:
    """Write the pending CSRs for the CA operator; returns the paths written."""
    return offline.export(pending_csrs(store, devices), directory, bundle=bundle)


@dataclass
class ImportResult:
    matched: list = _field(default_factory=list)  # device names
    already: list = _field(default_factory=list)  # (source, device) already imported earlier
    stale: list = _field(default_factory=list)  # (source, device, reason)
    problems: list = _field(default_factory=list)  # offline.Problem

    @property
    def changed(self) -> bool:
        return bool(self.matched or self.stale)

    def as_dict(self) -> dict:
        return {"matched": self.matched,
                "already_imported": [{"file": s, "device_name": d} for s, d in self.already],
                "stale": [{"file": s, "device_name": d, "reason": r} for s, d, r in self.stale],
                "problems": [{"file": item.source, "subject": item.subject, "reason": item.reason, "code": item.code,
                              "device_name": item.device_name} for item in self.problems]}


def _no_progress(_stage: str, _done: int = 0, _total: int = 0) -> None:
    """The progress callback of callers that draw none."""


def import_certificates(store: Store, actor: str, sources, *, check_mode: bool = False,
                        progress=None) -> ImportResult:
    """Match signed certificates ((name, bytes) pairs) to pending offline CSRs, check and record
    them; they reach the phones on their next CAPF session. ``check_mode`` records nothing;
    ``progress(stage, done, total)``, when given, is told how far the files and the records are."""
    progress = progress or _no_progress
    sources = list(sources)
    with store.read() as tx:
        pending = _pending(tx, "pending", store.clock_skew)
        # A certificate for a CSR that no longer waits (a newer one replaced it, or it failed: its session
        # ended, the operator withdrew its operation) is recorded stale, never delivered.
        superseded = _pending(tx, "superseded", store.clock_skew) + _pending(tx, "failed", store.clock_skew)
        anchors = _anchors(tx)
        known = certificate_records.device_names_by_fingerprint(tx, "offline_ca")
    result = ImportResult()
    fresh = []
    for done, (source, data) in enumerate(sources, 1):
        progress("files", done, len(sources))
        try:
            certificates = offline.parse_certificates(data, source)
        except CapfError as exc:
            result.problems.append(offline.Problem(source, "", str(exc)))
            continue
        remaining = [item for item in certificates if c.is_ca(item) or c.fingerprint(item) not in known]
        for item in certificates:
            if not c.is_ca(item) and c.fingerprint(item) in known:
                result.already.append((source, known[c.fingerprint(item)]))
        if remaining:
            fresh.append((source, b"".join(c.to_pem(item).encode() for item in remaining)))
    if not anchors and fresh:
        raise StoreError("capf-trust holds no certificate: upload the offline CA's root before importing")
    progress("matching")
    report = offline.import_certificates(fresh, [item for _id, item in pending], anchors,
                                         superseded=[item for _id, item in superseded])
    by_name = {item.device_name: csr_id for csr_id, item in pending}
    result.matched = [item.device_name for item in report.matched]
    result.stale = [(item.source, item.device_name, item.reason) for item in report.stale]
    result.problems += report.problems
    refused = [item for item in report.problems if item.certificate is not None]
    if check_mode or not (report.matched or report.stale or refused):
        return result
    with store.transaction() as tx:
        # A CSR the phone replaced (or whose session failed it) since the read above no longer waits:
        # a certificate matched to it is stale, as for a CSR already superseded then.
        waiting = {name for name, csr_id in by_name.items()
                   if csr_records.reported_status_of(tx, csr_id, clock_skew=store.clock_skew) == "pending"}
        replaced = [item for item in report.matched if item.device_name not in waiting]
        for item in replaced:
            report.matched.remove(item)
            result.matched.remove(item.device_name)
            report.stale.append(offline.Stale(item.device_name, item.certificate, item.source, REPLACED))
            result.stale.append((item.source, item.device_name, REPLACED))
        for item in refused:
            record_refusal(tx, actor, item.device_name or "offline_ca", item.certificate, "offline_ca", item.code,
                           f"{item.source}: {item.reason}")
            if item.device_name in waiting and item.device_name not in result.matched and item.code != IMPORT_DUPLICATE:
                reason = (f"certificate from the offline CA refused ({item.source}): {item.reason} [{item.code}]; "
                          "the CSR still waits for a certificate that passes")
                set_csr(tx, by_name[item.device_name], "pending", reason)
                phone = phone_records.get(tx, item.device_name)
                phone_records.set_operation_result(tx, actor, phone, phone["operation_status"], reason)
        for done, item in enumerate(report.matched, 1):
            phone = phone_records.get(tx, item.device_name)
            certificate_id = record_certificate(tx, actor, phone, item.certificate, "offline_ca", chain=item.chain)
            set_csr(tx, by_name[item.device_name], "issued", certificate_id=certificate_id)
            progress("recording", done, len(report.matched))
        for item in report.stale:
            phone = phone_records.get(tx, item.device_name)
            if phone is None:  # removed since the read above, with its CSRs
                continue
            record_certificate(tx, actor, phone, item.certificate, "offline_ca", status="stale", reason=item.reason)
        audit.record(tx, actor, "csr.imported", "offline_ca", matched=result.matched,
                     stale=[device for _s, device, _r in result.stale], problems=len(result.problems))
    return result


def worker_step(store: Store, actor: str = "enrolment-service") -> dict:
    """One pass of the enrolment service: poll pending online requests when issuer is online_ca."""
    with store.read() as tx:
        issuer_kind = service_records.read(tx)["issuer"]
    if issuer_kind != "online_ca":
        return {}
    try:
        return poll_pending(store, actor)
    except EnrolmentError as exc:
        log.warning("enrolment service: %s", exc)
        return {"error": str(exc)}


def run_worker(store: Store, stop, interval: float = 30.0, actor: str = "enrolment-service") -> None:
    """The enrolment service loop: ``worker_step`` every ``interval`` seconds until ``stop`` (an
    object with ``wait(timeout) -> bool``, e.g. threading.Event) is set."""
    while not stop.wait(interval):
        started = time.monotonic()
        try:
            counts = worker_step(store, actor)
        except CapfError as exc:  # a store or CA problem must not end the service
            log.warning("enrolment service pass failed: %s", exc)
            continue
        if counts.get("issued") or counts.get("failed"):
            log.info("enrolment service: %s (%.1f s)", counts, time.monotonic() - started)


def converge_export(store: Store, directory: str, *, bundle: bool = False, devices=None,
                    fail_on_unmatched: bool = False, check_mode: bool = False) -> dict:
    """Make ``directory`` hold the pending CSRs (files rewritten only when their content differs).
    ``devices`` not in the store are returned (``unmatched``) with a warning, or with
    ``fail_on_unmatched`` fail the call before any file is written."""
    names = [normalise_device_name(name, f"devices[{index}]") for index, name in enumerate(devices or ())]
    with store.read() as tx:
        unmatched, warnings = phone_query.check_unmatched(tx, names, "devices", fail=fail_on_unmatched)
    items = pending_csrs(store, devices)
    scratch = tempfile.mkdtemp(prefix="opencapf-csr-")
    try:
        written = offline.export(items, scratch, bundle=bundle)
        files, changed = [], []
        for path in written:
            target = os.path.join(directory, os.path.basename(path))
            content = read_input_file(path, "exported CSR")
            files.append(target)
            if not os.path.exists(target) or read_input_file(target, "exported CSR") != content:
                changed.append(target)
                if not check_mode:
                    write_private_file(target, content)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"changed": bool(changed), "files": files, "written": changed,
            "csrs": [{"device_name": item.device_name, "requested_at": item.requested_at} for item in items],
            "unmatched": unmatched, "warnings": warnings}
