# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store behind a protocol session: device lookup, authentication, issuance and records.

One ``StoreDecider`` serves one session with the service parameters the driver read when the
connection came (or reads them once, when the phone names itself), so parameter changes apply to
the next session without a restart; the LSC it issues follows those in force when it is issued
(its validity and CRL distribution point: ``lsc.issue`` checks them as it records it). Every change
is in one transaction with its audit record.

A session's store work is as few transactions as its guarantees allow: one read when the phone
names itself (its row and whatever its authentication needs); for an install by CAPF, one durable
write before the LSC goes out (the session start, the LSC, its key request); and one durable write
when the session ends (the installation, the operation's result or its settling, and the session
record, which the driver hands in as ``recorder``). An authentication string is checked in a write
transaction of its own, so that failures are counted serialised.
"""

from __future__ import annotations

import datetime as _dt
import logging

from .. import authstrings, der, enrolment, faults
from .. import csr as csr_module
from ..ca import authority, lsc, rules
from ..ca import certificates as c
from ..dependencies import UnsupportedAlgorithm, serialization
from ..errors import CapfError, CertificateError, StoreError
from ..protocol import proof
from ..protocol.codec import ProtocolError
from ..protocol.session import AuthOffer, Decider, Deferred, Issued, KeyChoice, Outcome, Plan, Verdict
from ..store import Store, audit
from ..store import certificates as certificate_records
from ..store import csrs as csr_records
from ..store import phones as phone_records
from ..store import service as service_records
from ..store import trust as trust_records
from . import metrics
from ..vocabulary import (DEFAULT_MAX_SESSION_SECONDS, KEY_ORDER_KINDS, LIVENESS_MARGIN_SECONDS, format_utc, key_allowed,
                          utc_now)

log = logging.getLogger("opencapf.server")
ACTOR = "capf-server"
THIRD_PARTY_SOURCES = ("online_ca", "offline_ca")


def key_choices(phone: dict) -> tuple:
    return tuple(KeyChoice(kind, int(phone[f"{kind}_key_size"])) for kind in KEY_ORDER_KINDS[phone["key_order"]])


def load_phone_key(data: bytes):
    """The phone's PUBLIC_KEY element as a key: strict DER SubjectPublicKeyInfo, with one repair:
    old Jabber builds leave out the BIT STRING's unused-bits octet (quirk 10)."""
    data = bytes(data)
    try:
        return serialization.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # e.g. an algorithm identifier nobody knows
        pass
    repaired = _repair_bit_string(data)  # only for a key that does not load as it came
    if repaired is not None:
        try:
            return serialization.load_der_public_key(repaired)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            pass
    raise ProtocolError("PUBLIC_KEY is not a DER SubjectPublicKeyInfo")


def _repair_bit_string(data: bytes) -> bytes | None:
    """SEQUENCE{algorithm, BIT STRING} whose BIT STRING lacks its unused-bits octet, re-encoded."""
    try:
        parts = der.children(der.read_one(data, der.SEQUENCE))
    except der.DerError:
        return None
    if len(parts) != 2 or parts[0].tag != der.SEQUENCE or parts[1].tag != der.BIT_STRING \
            or not parts[1].value.startswith(b"\x30"):
        return None
    return der.sequence(parts[0].encoded, der.bit_string(parts[1].value))


def load_certificate(encoded: bytes):
    """(certificate, public key) from a phone's DER; anything unreadable is a CertificateError."""
    certificate = c.load_der_certificate(encoded, "CERTIFICATE")
    try:
        # Names, dates and extensions are parsed on first use: parse them now, so that a malformed
        # one is the phone's error here and not an exception deep in chain building or the store.
        for name in (certificate.subject, certificate.issuer):
            name.rfc4514_string()
            c.common_name(name)
        c.not_before(certificate)
        c.not_after(certificate)
        _extensions = certificate.extensions
        _algorithm = certificate.signature_hash_algorithm
    except Exception as exc:  # ValueError, UnsupportedAlgorithm, UnsupportedGeneralNameType, DuplicateExtension...
        raise CertificateError(f"CERTIFICATE has a malformed field: {exc}") from None
    try:
        public_key = certificate.public_key()
        c.key_description(public_key)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"CERTIFICATE carries an unreadable public key: {exc}") from None
    return certificate, public_key


# A declared operation stays in the phone's settings after it succeeds (so that a playbook declaring
# it converges); only these statuses make it pending work for the phone's next session.
PENDING_STATUSES = ("pending", "in_progress", "failed")


def pending_operation(phone: dict) -> str:
    """The operation the phone's next session runs: its declared one while not yet finished."""
    return phone["operation"] if phone["operation_status"] in PENDING_STATUSES else "none"


def names_device(common_name: str, device_name: str, kind: str) -> bool:
    """Whether a certificate's CN names exactly this device: an LSC's CN is the device name; a MIC's
    is ``<model>-<device name>`` (or the bare name). Never a substring match, or the LSC of
    CSFJSMITH2 would authenticate CSFJSMITH."""
    cn, name = (common_name or "").upper(), device_name.upper()
    if cn == name:
        return True
    return kind == "mic" and cn.endswith("-" + name)


def _checked_key(public_key_der: bytes, choice: KeyChoice):
    public_key = load_phone_key(public_key_der)
    kind, size = c.key_description(public_key)
    if (kind, size) != (choice.kind, choice.size):
        raise ProtocolError(f"PUBLIC_KEY must be {choice.kind.upper()}-{choice.size} as requested, "
                            f"got {kind.upper()}-{size}")
    return public_key


# Only past a session's bound and ``LIVENESS_MARGIN_SECONDS`` is its operation surely abandoned, by the
# clock of the node that served the session; the scheduler of another node, whose clock may run ahead
# by up to ``CLOCK_SKEW``, waits that much longer (``Store.clock_skew``). The rule, and the reason the
# operation is settled with, are ``phone_records.abandoned``'s.
ABANDONED_REASON = phone_records.ABANDONED_REASON


def settle_unfinished(tx, actor: str, phone: dict | None, outcome: str, reason: str, csr_ids=(), own=(),
                      **details) -> bool:
    """The one rule for an operation a session put in progress and left there when it ended:
    ``pending`` again, with the reason, when the session was deferred (the CA holds its request and
    the phone comes back for the certificate), else ``failed`` with the reason, together with the key
    requests the session left pending. A result recorded meanwhile stands (the session's own, or that
    of a newer session of the phone, a lapse or a withdrawal): only ``in_progress`` is settled. While a
    request of another session of the phone waits (``csr_records.waiting_for_another_session``; ``own``
    and ``csr_ids``: the session's own requests), that session has not ended: the operation stays in
    progress for it, settled by its end or, its process dead, once its bound has passed."""
    if phone is None or phone["operation_status"] != "in_progress":
        return False
    if csr_records.waiting_for_another_session(tx, phone, (*own, *csr_ids)):
        return False
    _settle(tx, actor, phone, outcome, reason, csr_ids, **details)
    return True


def _settle(tx, actor: str, phone: dict, outcome: str, reason: str, csr_ids=(), **details) -> None:
    deferred = outcome == "deferred"
    phone_records.set_operation_result(tx, actor, phone, "pending" if deferred else "failed", reason, **details)
    if not deferred:
        for csr_id in csr_ids:
            csr_records.fail_pending(tx, actor, phone["name"], csr_id, reason, **details)


def settle_abandoned(store: Store, now=None) -> list[str]:
    """Settle every operation left ``in_progress`` by a session that cannot be live any more (its
    process died: SIGKILL, power loss): the session's time bound and ``LIVENESS_MARGIN_SECONDS``
    (``operation_live_until``) have passed, so no process of any node serves it. Each is settled as
    its session's end would have settled it, aborted (``csr_records.settle_abandoned_phone``): ``failed``,
    with ``ABANDONED_REASON``, together with the key requests the session left pending.
    ``operation_live_until`` is the clock of the node that served the session, which may run behind
    this one's by up to ``store.clock_skew`` (``CLOCK_SKEW`` on a store several hosts share): only a
    bound passed by more than that is surely passed (``phone_records.abandoned``, whose rule the views
    apply too: they report the operation and its requests settled from that moment on, whether or not
    this has run since). Returns the names."""
    settled = []
    with store.transaction() as tx:
        for phone in phone_records.abandoned(tx, format_utc(now or utc_now()), store.clock_skew):
            csr_records.settle_abandoned_phone(tx, store.actor, phone)
            settled.append(phone["name"])
    return settled


CERTIFICATE_MODES = {"existing_cert_lsc": "lsc", "existing_cert_mic": "mic"}  # auth mode -> precedence


def _untouched(before: dict, now: dict) -> bool:
    """Whether nobody changed the phone's operation since ``before`` was read (no result, no new
    declaration, no other session's start): a session that wrote nothing yet may settle it."""
    return now["operation_status"] in ("pending", "failed") and now["operation"] == before["operation"] \
        and now["updated_at"] == before["updated_at"]


class StoreDecider(Decider):
    def __init__(self, store: Store, peer: str = "", session_id: int | None = None, parameters: dict | None = None,
                 signer: authority.Signer | None = None, max_session: float = DEFAULT_MAX_SESSION_SECONDS,
                 recorder=None):
        self.store = store
        self.max_session = max_session  # the session's time bound (seconds), enforced by its ServerSession
        # The active CAPF certificate when the phone connected (None: look it up): the LSC is signed
        # with it while it is still the active one, else with the one active when the LSC is recorded.
        self.signer = signer
        self.peer = peer
        # ``recorder(tx, outcome)`` writes the session record in the session's last transaction and
        # returns its fields; ``recorded`` holds them once committed (None: not recorded here).
        self.recorder = recorder
        self.recorded: dict | None = None
        # Every operation result names its session, so that the audit log accounts also for a
        # session cut by a crash after its result committed and before its session record.
        self._session = {} if session_id is None else {"session_id": session_id}
        self.parameters: dict = parameters or {}
        self._phone: dict | None = None  # the phone's row as the session's one read found it
        self._verdict: Verdict | None = None  # a presented certificate, checked in that read
        self._csr_id: int | None = None
        self._adopted: int | None = None  # the request the phone kept its key for and this session waits on
        self._found: tuple = ()  # the requests waiting when the session started, of sessions that had ended
        self._authenticated = False
        self._start_written = False  # the session start is in the store (with the LSC, or before a CA's step)
        self._live_until: str | None = None  # the session's bound, as its start recorded it
        self._started_at: str | None = None  # the moment its start was recorded
        self._started = False  # this session put the phone's operation in progress (``ended`` settles it)
        # Work of the session's last transaction: callables (tx, phone), ``phone`` the current row's
        # ``phones.SESSION_COLUMNS``.
        self._closing: list = []
        self._result = False  # that work records the operation's result
        self._installing = False
        self._ended = False
        self._ca_asked = 0  # calls to the online CA: what they told it lasts (``rewind``)

    def checkpoint(self):
        return self.store.commits(), dict(vars(self)), list(self._closing)

    def rewind(self, checkpoint) -> bool:
        """Back to ``checkpoint`` unless this thread committed to the store or the online CA was asked
        since: reads, and the work a transaction the store could not begin was to do, leave nothing."""
        commits, state, closing = checkpoint
        if self.store.commits() != commits or self._ca_asked != state["_ca_asked"]:
            return False
        vars(self).update(state)
        self._closing = closing
        return True

    def _same(self, phone: dict) -> bool:
        """Whether ``phone`` (a row read now) is the row the session read, not one added under its name
        after its removal during the session (which SQLite may give the same id)."""
        return (phone["id"], phone["incarnation"]) == (self._phone["id"], self._phone["incarnation"])

    def _runs(self, phone: dict) -> bool:
        """Whether ``phone`` (a row read now) still declares the operation this session runs: an
        operation the operator declared during the session is not this session's to start or to end."""
        return phone["operation"] == self._phone["operation"]

    def _set_result(self, tx, phone: dict, status: str, reason: str = "", **details) -> None:
        if self._runs(phone):
            phone_records.set_operation_result(tx, ACTOR, phone, status, reason, **details, **self._session)
            if status == "succeeded":  # no other session of the phone delivers what it asked for
                csr_records.supersede_at_success(tx, ACTOR, phone, **self._session)

    def _set_late_failure(self, tx, phone: dict, reason: str, **details) -> None:
        """The phone's answer failed the operation this session put in progress; a result recorded
        meanwhile stands (another session of the phone installed its LSC, a lapse, a withdrawal), as
        in ``settle_unfinished``: the session record keeps this session's failure either way."""
        if phone["operation_status"] == "in_progress" and not csr_records.waiting_for_another_session(
                tx, phone, self._own()):
            self._set_result(tx, phone, "failed", reason, **details)

    def _own(self) -> tuple:
        """The requests this session sent or waits on (``settle_unfinished``)."""
        return tuple(csr_id for csr_id in (self._csr_id, self._adopted, *self._found) if csr_id is not None)

    def _at_end(self, step, result: bool = True) -> None:
        """Add ``step(tx, phone)`` to the session's last transaction (durable before END_SESSION)."""
        self._closing.append(step)
        self._result = self._result or result

    # -- session start ------------------------------------------------------------------------

    def begin(self, device_name: str, offer=None) -> Plan | None:
        """The session's one read: the phone's row, the parameters when the driver had none, and, for
        existing-certificate authentication, what checking the certificate ``offer()`` needs."""
        with self.store.read() as tx:
            if not self.parameters:
                self.parameters = service_records.read(tx)
            phone = phone_records.get(tx, device_name)
            if phone is None:
                return None
            refusal, lapsed = self._refusal(phone)
            if not refusal and offer is not None and phone["auth_mode"] in CERTIFICATE_MODES:
                try:
                    presented = offer()
                except CapfError:  # malformed: the session ends with it at authentication, its plan known
                    presented = None
                if presented is not None:
                    self._verdict = self._check_certificate(phone["name"], presented,
                                                            CERTIFICATE_MODES[phone["auth_mode"]], tx)
        self._phone = phone
        if refusal and lapsed:
            self._at_end(self._lapse())
        return Plan(
            device_name=phone["name"], operation=pending_operation(phone), auth_mode=phone["auth_mode"],
            key_choices=key_choices(phone), refusal=refusal,
            keygen_attempts=int(self.parameters["keygen_attempts"]),
            keygen_timeout=60.0 * int(self.parameters["keygen_timeout_minutes"]),
            keepalive=60.0 * int(self.parameters["keepalive_minutes"]),
            issuer=Plan.issuer if refusal else self.parameters["issuer"],  # a refused session reaches no issuer
        )

    def _lapse(self):
        """The session's last step for a phone whose operation's deadline passed: the phone's operation and
        its requests recorded as the scheduler's round would record them at that moment, and as every view
        reported them (an abandoned operation settled first, then an overdue one ``lapsed`` with
        ``phones.LAPSED_REASON`` and its CSRs still at a CA failed with it: ``csr_records.withdraw_pending``).
        The refusal's own words go to the phone and the session's record. An operation in progress in
        another session that may be live is not lapsed (its session began in time): nothing is recorded."""

        def step(tx, current: dict) -> None:
            if not self._runs(current):
                return
            now = format_utc(utc_now())
            if phone_records.is_left_abandoned(current, now, self.store.clock_skew):
                current = csr_records.settle_abandoned_phone(tx, ACTOR, current)
            if phone_records.lapse_if_overdue(tx, now, current["id"]):
                action, subject, details = phone_records.lapsed_event(current["name"], current["operation"])
                audit.record(tx, ACTOR, action, subject, **details, **self._session)
                csr_records.withdraw_pending(tx, ACTOR, {current["id"]: current["name"]}, csr_records.LAPSED)

        return step

    def third_party_state(self, plan: Plan):
        phone = self._phone
        if plan.issuer == "online_ca":
            self._ca_asked += 1
            try:
                enrolment.poll_pending(self.store, ACTOR, device_name=phone["name"],
                                       timeout=enrolment.IN_SESSION_HTTP_TIMEOUT)
            except CapfError as exc:  # the CA may be down: the phone hears "later" and nothing is lost
                log.warning("polling the online CA for %s: %s", phone["name"], exc)
        # DeliveryRefused: the session fails with why
        state = enrolment.deliverable(self.store, ACTOR, phone, self._started_at, self._found)
        if isinstance(state, enrolment.Ready):
            return Issued(state.certificate_id, state.der)
        if isinstance(state, enrolment.Waiting):
            self._adopted = state.csr_id  # the phone's request, of a session that ended: not another's
            return Deferred(state.retry_after, state.reason)
        return None

    def _refusal(self, phone: dict) -> tuple[str, bool]:
        """(why the session is refused, whether because its operation lapsed); ("", False): served."""
        if phone["locked"]:
            return f"phone is locked out after {phone['auth_failures']} failed authentication attempts", False
        # The deadline's moment as every view compares it (``phones.overdue``): to the second.
        deadline = phone["operation_deadline"]
        if pending_operation(phone) != "none" and deadline is not None and deadline < format_utc(utc_now()):
            return f"operation {phone['operation']} lapsed at {deadline}", True
        return "", False

    # -- authentication -----------------------------------------------------------------------

    def authenticate(self, plan: Plan, offer: AuthOffer) -> Verdict:
        mode = plan.auth_mode
        if mode == "auth_string":
            verdict = self._authenticate_string(plan, offer)
        else:
            if mode == "null_string":
                verdict = Verdict(True)
            else:
                prefer = CERTIFICATE_MODES.get(mode, "mic")
                verdict = self._verdict or self._check_certificate(plan.device_name, offer, prefer)
            if not verdict.ok:
                reason = verdict.reason
                self._at_end(lambda tx, phone: self._set_auth_failure(tx, phone, plan, reason))
            elif self._starts_early(plan):
                with self.store.transaction(durable=False) as tx:  # on disk with the session's next durable commit
                    phone = phone_records.get_for_session(tx, plan.device_name)
                    if phone is not None:
                        self._start(tx, phone)
        self._authenticated = verdict.ok
        return verdict

    def _set_auth_failure(self, tx, phone: dict, plan: Plan, reason: str) -> None:
        """A certificate that failed authentication fails the operation only by the rule of
        ``phones.fails_at_authentication`` (as a wrong string does: ``phones.record_auth_failure``)."""
        if phone_records.fails_at_authentication(phone, plan.operation):
            self._set_result(tx, phone, "failed", reason)

    @staticmethod
    def _starts_early(plan: Plan) -> bool:
        """Whether the session start is written at authentication: an install by a third-party CA,
        whose steps (the CA's own records, HTTP) come before any LSC of ours. Otherwise the start goes
        with the session's first durable write: the LSC's issuance, or its end."""
        return plan.operation == "install_upgrade" and plan.issuer != "capf"

    def _start(self, tx, phone: dict) -> None:
        now = self._started_at = format_utc(utc_now())
        if phone_records.is_left_abandoned(phone, now, self.store.clock_skew):
            # Settled first, as the scheduler would have: the views reported it so, and the requests that
            # session left are failed, not this session's to pick up.
            phone = csr_records.settle_abandoned_phone(tx, ACTOR, phone)
        started = pending_operation(phone) != "none" and self._runs(phone)
        joins = started and phone_records.may_be_live(phone, now, self.store.clock_skew)
        if joins:
            # The phone reconnected while another session of it may still run: that session's requests
            # are not the phone's any more (the phone keeps no key for them), and this one joins it.
            csr_records.supersede_unended(tx, ACTOR, phone, **self._session)
        # The session began before this moment: it has surely ended by then, live or not.
        self._live_until = format_utc(utc_now() + _dt.timedelta(seconds=self.max_session + LIVENESS_MARGIN_SECONDS))
        phone_records.record_session_start(tx, phone, started, self._live_until, now=now,
                                           clock_skew=self.store.clock_skew)
        if started and not joins and self.parameters.get("issuer") != "capf":
            # A request waiting at the CA sent in this second by a session that has ended: the phone's, not
            # another live session's (``third_party_state``, ``settle_unfinished``), though sent since this start's second.
            self._found = tuple(csr_records.pending_since(tx, phone["id"], now))
        self._started, self._start_written = started, True

    def _authenticate_string(self, plan: Plan, offer: AuthOffer) -> Verdict:
        """Check the string and count a failure in ONE write transaction on the phone's current row:
        concurrent sessions are serialised, so a lock-out reached by one of them stops the others,
        and no more than ``lockout_failures`` guesses are ever compared (brute-force bound). Not
        durable: the phone learns the verdict only after the session's durable end, which takes it along."""
        with self.store.transaction(durable=False) as tx:
            phone = phone_records.get(tx, plan.device_name)
            if phone is None:
                return Verdict(False, "device was removed from the store during the session")
            if phone["locked"]:
                return Verdict(False, f"phone is locked out after {phone['auth_failures']} failed authentication "
                                      "attempts")
            verdict = self._check_string(phone, offer)
            if verdict.ok:
                if self._starts_early(plan):
                    self._start(tx, phone)
                elif phone["auth_failures"]:
                    phone_records.reset_auth_failures(tx, phone)  # at once: the count is the lock-out's
                return verdict
            failures, locked = phone_records.record_auth_failure(
                tx, ACTOR, phone, int(self.parameters["lockout_failures"]), verdict.reason, operation=plan.operation,
                **self._session)
        if locked:
            metrics.locked_out()
            return Verdict(False, f"{verdict.reason}; phone locked out after {failures} failures")
        return verdict

    def _check_string(self, phone: dict, offer: AuthOffer) -> Verdict:
        if not phone["auth_hash"]:
            return Verdict(False, "no authentication string is set for this phone")
        if authstrings.matches(self.store.secret(), phone["auth_salt"], phone["auth_hash"], offer.password or b""):
            return Verdict(True)
        return Verdict(False, "wrong authentication string")

    def _check_certificate(self, device_name: str, offer: AuthOffer, prefer: str, tx=None) -> Verdict:
        """The presented certificate's proofs, chain and records; ``tx``: the session's read (else one of its own)."""
        if not offer.certificates:
            return Verdict(False, f"existing-certificate authentication ({prefer.upper()} precedence) needs a "
                                  "certificate, and the phone presented none")
        if offer.signed_data is None or offer.sha2_signed_data is None:
            return Verdict(False, "existing-certificate authentication needs SIGNED_DATA and SHA2_SIGNED_DATA")
        _type, encoded = offer.certificates[0]
        try:
            certificate, public_key = load_certificate(encoded)
        except CertificateError as exc:
            return Verdict(False, str(exc))
        data = proof.message(offer.device_name_raw, encoded)
        code, sha2_signature = offer.sha2_signed_data
        sha2 = proof.hash_name(code)
        if sha2 is None or not proof.verify(public_key, sha2_signature, data, sha2):
            return Verdict(False, "SHA2_SIGNED_DATA does not verify with the presented certificate")
        if not proof.verify(public_key, offer.signed_data, data, "sha1"):
            return Verdict(False, "SIGNED_DATA does not verify with the presented certificate")
        if tx is None:
            with self.store.read() as own:
                kind, why = self._classify(certificate, own)
        else:
            kind, why = self._classify(certificate, tx)
        if kind is None:
            return Verdict(False, why)
        if not names_device(c.common_name(certificate.subject), device_name, kind):
            return Verdict(False, "the presented certificate was not issued to this device name")
        return Verdict(True, presented=kind)

    def _classify(self, certificate, tx) -> tuple[str | None, str]:
        """("lsc"|"mic", "") when the certificate chains to a trusted issuer, else (None, why)."""
        try:
            rules.build_chain(certificate, authority.all_certificates(self.store, tx))
        except CertificateError as lsc_problem:
            pool = [c.load_pem_certificate(pem) for pem in trust_records.anchor_pems(tx)]
            try:
                # Field phones carry MICs past their dates; the chain, not the calendar, is the proof.
                rules.build_chain(certificate, pool, check_dates=False)
            except CertificateError as mic_problem:
                return None, f"the presented certificate is neither a valid LSC ({lsc_problem}) nor a MIC " \
                             f"trusted in capf-trust ({mic_problem})"
            # An LSC from a third-party CA chains to capf-trust too: our own records tell it from a MIC.
            rows = [row for row in certificate_records.by_fingerprint(tx, c.fingerprint(certificate))
                    if row["source"] in THIRD_PARTY_SOURCES]
            if not rows:
                return "mic", ""
            if any(row["status"] in ("revoked", "stale") for row in rows):
                return None, "the presented LSC has been revoked"
            return "lsc", ""
        rows = [row for row in certificate_records.by_fingerprint(tx, c.fingerprint(certificate))
                if row["source"] != "troubleshoot"]
        if not rows:
            # Signed by us but no longer on record: its phone (or the stale record) was deleted.
            return None, "the presented LSC is not on record in the store (deleted with its phone or as stale)"
        if any(row["status"] in ("revoked", "stale") for row in rows):
            return None, "the presented LSC has been revoked"
        return "lsc", ""

    # -- operations ---------------------------------------------------------------------------

    def issue(self, plan: Plan, public_key_der: bytes, choice: KeyChoice) -> Issued:
        """Sign the LSC and commit it durably with the session start and the key request: the one
        write before STORE_CERTIFICATE_REQUEST, which the driver sends only once it is on disk."""
        public_key = _checked_key(public_key_der, choice)
        key_der = c.public_key_der(public_key, loaded_from=public_key_der)
        key_fingerprint = c.sha256_hex(key_der)
        phone_id = self._phone["id"]
        before = (self._started, self._start_written)

        def opening(tx, phone: dict) -> None:
            if not self._same(phone):
                raise StoreError(f"device {phone['name']} was removed from the store during the session")
            if not self._start_written:
                self._start(tx, phone)

        def record_request(tx, certificate_id: int) -> None:
            # In the issuance's own transaction: a crash before its commit leaves neither the LSC
            # nor a key request that would stay pending for ever.
            csr_records.add_issued(tx, phone_id, key_fingerprint, key_der, certificate_id)

        try:
            issued = lsc.issue(self.store, plan.device_name, public_key, source="capf", create_phone=False,
                               device_name_is_wire=True, opening=opening, recorded=record_request,
                               signer=self.signer, settings=self.parameters, public_key_der=key_der)
        except CapfError as exc:
            self._started, self._start_written = before  # rolled back with the issuance
            reason = str(exc)
            self._at_end(lambda tx, phone: csr_records.add_failed(tx, phone["id"], key_fingerprint, key_der, reason),
                         result=False)
            raise
        except BaseException:
            self._started, self._start_written = before
            raise
        faults.checkpoint("lsc.committed")
        return Issued(issued.id, issued.der)

    def prepare_csr(self, plan: Plan, public_key_der: bytes, choice: KeyChoice):
        public_key = _checked_key(public_key_der, choice)
        return csr_module.prepare(plan.device_name, c.public_key_der(public_key), digest="sha256")

    def submit_csr(self, plan: Plan, request, signature: bytes):
        signed = csr_module.assemble(request, signature)  # CsrError: the signature is not the phone's key's
        with self.store.transaction() as tx:
            phone = phone_records.get(tx, plan.device_name)
            withdrawn = self._withdrawn(phone, signed)
            if withdrawn:  # the session ends failed with it; no CA is asked
                raise StoreError(f"{withdrawn}: the CSR was not sent to the CA")
            if phone["operation_status"] != "in_progress":
                # Another session of the phone settled the operation as it ended: the request is sent in
                # progress again, so that it is settled with the operation should this session's process die.
                phone_records.record_session_start(tx, phone, True, self._live_until, clock_skew=self.store.clock_skew)
                self._started = True
            self._csr_id = enrolment.add_request(tx, ACTOR, phone, signed)
        if plan.issuer == "offline_ca":
            result = enrolment.Waiting(enrolment.OFFLINE_RETRY_SECONDS,
                                       "the CSR waits for the offline CA (csr export, sign, csr import)")
        else:
            with self.store.read() as tx:
                # EST simplereenroll when the phone holds an LSC from the online CA (RFC 7030 4.2.2).
                renewal = certificate_records.has_installed_lsc(tx, phone["id"], "online_ca")
            self._ca_asked += 1
            result = enrolment.submit_online(self.store, ACTOR, phone, self._csr_id, signed, renewal=renewal)
        if isinstance(result, enrolment.Waiting):
            return Deferred(result.retry_after, result.reason)  # the session's end records it (``ended``)
        return Issued(result.certificate_id, result.der)

    def _withdrawn(self, phone: dict | None, signed) -> str:
        """Why the operator's changes since the session began withdrew the request it is about to send
        ("": none did), by the rule a change of the phone's settings applies to the CSRs already at a CA
        (``phone_config``): the phone removed, its operation changed, or its key settings no longer asking
        for the session's key."""
        if phone is None or not self._same(phone):
            return f"device {self._phone['name']} was removed from the store during the session"
        if not self._runs(phone):
            return f"the operator changed the phone's operation to {phone['operation']} during the session"
        # As every view reports it now: a failed operation past its deadline has lapsed.
        status = phone_records.reported_operation(phone, format_utc(utc_now()), self.store.clock_skew)[0]
        if status not in PENDING_STATUSES:
            return f"another session of the phone or the scheduler recorded the operation {status} meanwhile"
        kind, size = c.key_description(signed.csr.public_key())
        if not key_allowed(phone, kind, size):
            return f"the operator changed the phone's key settings during the session: no longer {kind.upper()}-{size}"
        return ""

    def stored(self, plan: Plan, issued: Issued, ok: bool) -> None:
        """Recorded by the session's end, with the session record, before END_SESSION goes out."""
        certificate_id = issued.certificate_id

        def record(tx, phone: dict) -> None:
            if ok:
                changes = certificate_records.install(tx, ACTOR, phone, certificate_id)
                faults.checkpoint("install.recording")
                self._set_result(tx, phone, "succeeded", "", clear_operation=False, certificate_id=certificate_id,
                                 **changes)
            else:
                stale = certificate_records.set_stale_if_waiting(tx, ACTOR, phone, certificate_id)
                self._set_late_failure(tx, phone, "phone did not store the LSC", certificate_id=certificate_id,
                                       stale=[certificate_id] if stale else [])

        self._installing = True
        self._at_end(record)

    def refused(self, plan: Plan, issued: Issued) -> None:
        def record(tx, phone: dict) -> None:
            # Not stale when another session of the phone delivered it first and the phone stored it.
            stale = enrolment.refused_delivery(tx, ACTOR, phone, issued.certificate_id, **self._session)
            self._set_late_failure(
                tx, phone, "the phone refused the third-party LSC (it no longer holds the pending key)"
                + ("; the certificate is stale and the next session starts with a new key" if stale else ""),
                certificate_id=issued.certificate_id)

        self._at_end(record)

    def deleted(self, plan: Plan, ok: bool) -> None:
        def record(tx, phone: dict) -> None:
            # The phone holds no LSC now: neither the one it acknowledged nor one that went out to it
            # and was never acknowledged (its session was cut), which would stay its current LSC.
            revoked = certificate_records.revoke_installed(tx, ACTOR, phone, statuses=("installed", "issued"))
            self._set_result(tx, phone, "succeeded", "" if ok else "phone reported no LSC to delete",
                             clear_operation=False, revoked=revoked)

        self._at_end(record)

    def fetched(self, plan: Plan, certificates: list) -> None:
        """Keep the copies now, in a transaction of their own (a copy the store refuses fails this step
        of the session, not its end); the result goes with the session's end."""
        parsed = [load_certificate(encoded)[0] for _type, encoded in certificates]
        with self.store.transaction(durable=False) as tx:  # on disk with the session's end, before END_SESSION
            anchors = authority.all_certificates(self.store, tx)
            kinds = [self._kind_of(certificate, anchors) for certificate in parsed]
            phone = phone_records.get(tx, plan.device_name)
            for kind, certificate in zip(kinds, parsed):
                certificate_records.record_retrieved(
                    tx, ACTOR, phone, kind=kind, serial=format(certificate.serial_number, "x"),
                    issuer=certificate.issuer.rfc4514_string(), fingerprint=c.fingerprint(certificate),
                    public_key_fingerprint=c.public_key_fingerprint(certificate.public_key()),
                    pem=c.to_pem(certificate), not_before=format_utc(c.not_before(certificate)),
                    not_after=format_utc(c.not_after(certificate)))
        self._at_end(lambda tx, current: self._set_result(tx, current, "succeeded", "", clear_operation=False,
                                                          retrieved=kinds))

    @staticmethod
    def _kind_of(certificate, anchors: list) -> str:
        # Never trust the wrapper's type byte: an LSC is whatever chains to one of our CAPF certificates.
        try:
            rules.build_chain(certificate, anchors, check_dates=False)
        except CertificateError:
            return "mic"
        return "lsc"

    def ended(self, plan: Plan, outcome: Outcome) -> None:
        """The session's last transaction, durable (the driver sends END_SESSION once it is on disk):
        what the session's end records (an installation, a result), the session start when nothing
        wrote it yet, the settling of an operation this session left unfinished, and the session
        record (``recorder``). Settling: ``pending`` again, with the reason, when the CA still holds
        its request (the phone comes back for the certificate), else ``failed`` with the reason. A
        result recorded meanwhile stands: that of a newer session of the phone (its retry), a lapse
        or a withdrawal."""
        if self._ended:
            return
        unstarted = self._authenticated and not self._start_written
        if not (self._closing or self._started or unstarted or self.recorder):
            self._ended = True
            return
        reason = outcome.reason or outcome.outcome
        csr_ids = () if self._csr_id is None else (self._csr_id,)
        with self.store.transaction() as tx, audit.batched(tx):
            phone = phone_records.get_for_session(tx, plan.device_name, at_end=True) \
                if self._closing or self._started or unstarted else None
            if phone is not None and not self._same(phone):
                phone = None  # removed during the session and added again: this session records nothing on it
            if phone is not None:
                if unstarted:  # a check-in, or a session that ends before its first durable write
                    phone_records.record_session_start(tx, phone, False, clock_skew=self.store.clock_skew)
                for step in self._closing:
                    step(tx, phone)
                # The session's CSR is failed below, also when another session of the phone recorded the
                # operation's result first and nothing is settled here.
                if not self._result and self._started:
                    settle_unfinished(tx, ACTOR, phone, outcome.outcome, reason, own=self._own(), **self._session)
                elif not self._result and unstarted and pending_operation(self._phone) != "none" \
                        and _untouched(self._phone, phone):
                    _settle(tx, ACTOR, phone, outcome.outcome, reason, **self._session)
                if outcome.outcome != "deferred":
                    for csr_id in csr_ids:  # no longer waits: the phone keeps no key for it
                        csr_records.fail_pending(tx, ACTOR, phone["name"], csr_id, reason, **self._session)
            fields = None if self.recorder is None else self.recorder(tx, outcome)
        self._ended = True
        self.recorded = fields
        if self._installing:
            faults.checkpoint("install.committed")
