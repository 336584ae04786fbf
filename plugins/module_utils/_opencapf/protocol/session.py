# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The server side of one CAPF connection as a sans-I/O state machine.

``ServerSession`` consumes the bytes a phone sent (and the passing of time) and returns the
bytes to send back. It owns no socket, clock or thread: the driver passes ``now`` (any monotonic
seconds) and asks ``deadline`` when it must call ``time_passed``. Everything that needs the store
goes through a ``Decider`` (see ``server.decider``), so the conversation can be tested with plain
bytes and a dictionary-backed decider.

Conversation (capf-protocol.md section 3): S sends AUTH_REQUEST, P answers AUTH_RESPONSE, S
looks the device up, authenticates it and runs its one pending operation, ending with
END_SESSION. S never sends two messages in a row; REQUEST_IN_PROGRESS from P is accepted as a
keep-alive wherever S waits.

With a third-party issuer (online or offline CA) Install/Upgrade follows the opencapf X-CSR/1
extension (capf-protocol.md 6.3), only with a phone that advertised it in X_CAPS: after
KEY_GENERATE, ENCRYPT_REQUEST carries the request info for the phone to sign, and the certificate
is delivered in the same session or, for a phone that keeps its pending key, in a later one (the
session ends with RETRY_LATER or END_SESSION 0 meanwhile).

A step (``receive_data``, ``time_passed``, ``connection_lost``) whose store work meets the store's write
lock held by another writer (``StoreBusy``) before the decider has written anything or asked a CA anything
is undone: the session and its decider go back to where they were before it (``Decider.checkpoint``,
``Decider.rewind``) and the step raises ``StepUndone``, so that the driver may await the lock and make the
same call again. Met later in a step, it fails the session as any store error does.
"""

from __future__ import annotations

import abc

from dataclasses import dataclass, field, replace

from ..errors import CapfError, StepUndone, StoreBusy, StoreUnreachable, ValidationError
from ..vocabulary import check_wire_device_name
from .codec import (Decoder, Message, ProtocolError, decode_sha2_signature, encode_server, u8, u16,
                    unwrap_certificates, wrap_certificate)
from .constants import (BITS_CURVE, SERVER_VERSION, XCAP_PENDING_KEY, XCAP_RETRY_LATER, XCAP_SIGN_EC,
                        XCAP_SIGN_RSA, AuthType, CertificateType, Command, KeyType, Reason, Tag)

# States
WAIT_AUTH = "wait_auth"
WAIT_KEY = "wait_key"
WAIT_STORE = "wait_store"
WAIT_FETCH = "wait_fetch"
WAIT_DELETE = "wait_delete"
WAIT_SIGN = "wait_sign"  # X-CSR/1: waiting for ENCRYPT_RESPONSE (the phone's signature over the CSR)
CLOSED = "closed"

# The largest message a phone needs is AUTH_RESPONSE with a certificate and two signatures.
MAX_PHONE_BODY = 16384


@dataclass(frozen=True)
class KeyChoice:
    kind: str  # "rsa" or "ec"
    size: int


@dataclass(frozen=True)
class Plan:
    """What the store says about a device, as the decider hands it to the session."""

    device_name: str
    operation: str  # none | install_upgrade | delete | troubleshoot
    auth_mode: str
    key_choices: tuple = ()
    refusal: str = ""  # non-empty: refuse the session (locked, lapsed, unsupported issuer ...)
    keygen_attempts: int = 3
    keygen_timeout: float = 1800.0
    keepalive: float = 900.0
    issuer: str = "capf"  # capf | online_ca | offline_ca (service parameter "Certificate Issuer to Endpoint")


@dataclass(frozen=True)
class Deferred:
    """The CA has not signed the request yet: the phone comes back later with its pending key."""

    retry_after: int
    reason: str = ""


@dataclass(frozen=True)
class AuthOffer:
    """What the phone offered in AUTH_RESPONSE (never logged: it may hold the string)."""

    device_name_raw: bytes
    password: bytes | None
    certificates: tuple = ()  # (type byte, DER)
    signed_data: bytes | None = None
    sha2_signed_data: tuple | None = None  # (hash code, signature)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    presented: str = ""  # "lsc" / "mic" for certificate authentication


@dataclass(frozen=True)
class Issued:
    certificate_id: int
    der: bytes


@dataclass
class Outcome:
    """How a session ended, for the sessions table, the audit log and the driver's log line."""

    device_name: str = ""
    operation: str = ""
    outcome: str = "aborted"
    reason: str = ""
    end_reason: int | None = None
    version: int | None = None
    details: dict = field(default_factory=dict)


class Decider(abc.ABC):
    """The session's window on the store. The server implements it; tests may too."""

    @abc.abstractmethod
    def begin(self, device_name: str, offer=None) -> Plan | None:  # None: unknown device
        """The device's plan. ``offer``: a function returning the phone's ``AuthOffer``, for a decider
        that reads what checking it needs together with the device (one read); called at most once."""

    @abc.abstractmethod
    def authenticate(self, plan: Plan, offer: AuthOffer) -> Verdict:
        """Implemented by the driver."""

    @abc.abstractmethod
    def issue(self, plan: Plan, public_key_der: bytes, choice: KeyChoice) -> Issued:
        """Implemented by the driver."""

    @abc.abstractmethod
    def stored(self, plan: Plan, issued: Issued, ok: bool) -> None:
        """Implemented by the driver."""

    @abc.abstractmethod
    def deleted(self, plan: Plan, ok: bool) -> None:
        """Implemented by the driver."""

    @abc.abstractmethod
    def fetched(self, plan: Plan, certificates: list) -> None:
        """Implemented by the driver."""

    @abc.abstractmethod
    def ended(self, plan: Plan, outcome: Outcome) -> None:
        """The session is over, however it ended: settle what it left of the phone's operation, so
        that no operation stays in progress without a live session."""

    @abc.abstractmethod
    def prepare_csr(self, plan: Plan, public_key_der: bytes, choice: KeyChoice):
        """X-CSR/1: a ``csr.CsrRequest`` for the phone to sign (third-party issuers)."""

    @abc.abstractmethod
    def third_party_state(self, plan: Plan):
        """After authentication, for a third-party issuer: ``Issued`` (a certificate is ready for the
        key the phone kept pending), ``Deferred`` (that key's request is still at the CA) or None."""

    @abc.abstractmethod
    def submit_csr(self, plan: Plan, request, signature: bytes):
        """X-CSR/1: the phone's signature in; ``Issued`` (deliver now) or ``Deferred`` out."""

    @abc.abstractmethod
    def refused(self, plan: Plan, issued: Issued) -> None:
        """X-CSR/1: the phone refused a certificate for its pending key (it no longer holds it)."""

    def checkpoint(self):
        """The decider's state now, before a step of the session, for ``rewind``."""
        return None

    def rewind(self, checkpoint) -> bool:
        """Go back to ``checkpoint`` when nothing the decider did since lasts (nothing committed to the store,
        no CA asked), and say so; else change nothing and say False. A decider that cannot says False: a
        ``StoreBusy`` then fails the session."""
        return False


class ServerSession:
    """One connection, server side."""

    def __init__(self, session_id: int, decider: Decider, *, step_timeout: float = 10.0,
                 max_duration: float | None = None):
        if not 0 < session_id <= 0xFFFFFFFF:
            raise ValueError("session id must be 1..2^32-1")
        self.session_id = session_id
        self.decider = decider
        self.step_timeout = step_timeout
        # The session's time bound from ``start``, whatever the steps and keep-alives allow (None: none).
        self.max_duration = max_duration
        self._ends_by: float | None = None
        self.state = WAIT_AUTH
        self.outcome = Outcome()
        self._deadline: float | None = None
        self._decoder = Decoder(MAX_PHONE_BODY)
        self._plan: Plan | None = None
        self._version = SERVER_VERSION
        self._choices: list = []
        self._attempts = 0
        self._choice: KeyChoice | None = None
        self._keygen_deadline: float | None = None
        self._issued: Issued | None = None
        self._caps = 0
        self._csr_request = None
        self._delivering = False  # STORE of a third-party LSC for the phone's pending key
        self._step_started = 0.0
        self.abandoned = False  # ended by ``abandon``: the decider recorded nothing of its end
        self._before_step: tuple | None = None  # (the session's state, the decider's checkpoint) of the step under way

    # -- driver interface -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    @property
    def deadline(self) -> float | None:
        """When the driver must call ``time_passed``: the step's deadline, never past the session's bound."""
        if self._deadline is None or self._ends_by is None:
            return self._deadline
        return min(self._deadline, self._ends_by)

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._deadline = value

    def start(self, now: float) -> bytes:
        """The first message: AUTH_REQUEST (S speaks first)."""
        if self.max_duration is not None:
            self._ends_by = now + self.max_duration
        self.deadline = now + self.step_timeout
        self._step_started = now
        return self._send(Command.AUTH_REQUEST, [(Tag.VERSION, u8(SERVER_VERSION)), (Tag.AUTH_TYPE, u8(AuthType.NONE))])

    def receive_data(self, data: bytes, now: float) -> bytes:
        """Bytes from the phone in; bytes to send out (possibly empty). ``StepUndone``: nothing of the call
        happened (module docstring); make it again once the store's write lock is free."""
        if self.closed:
            return b""
        return self._undoable(self._receive, data, now)

    def _receive(self, data: bytes, now: float) -> bytes:
        if self._ends_by is not None and now >= self._ends_by:  # a phone that never falls silent ends too
            return self._time_passed(now)
        out = []
        try:
            for message in self._decoder.feed(data):
                out.append(self._handle(message, now))
                if self.closed:
                    break
        except ProtocolError as exc:
            out.append(self._end(Reason.INVALID_ELEMENT, "protocol_error", exc.rule))
        except StoreUnreachable:
            raise  # nothing decided: the driver abandons the session (``abandon``), its store away
        except CapfError as exc:
            if isinstance(exc, StoreBusy) and self._rewound():
                raise StepUndone(str(exc)) from None
            out.append(self._end(Reason.INVALID_ELEMENT, "failed", str(exc)))
        return b"".join(out)

    def _undoable(self, step, *args):
        """``step(*args)``, undone when it meets ``StoreBusy`` before anything of it lasts (``StepUndone``)."""
        self._before_step = (self._state(), self.decider.checkpoint())
        try:
            return step(*args)
        except StoreBusy as exc:
            if isinstance(exc, StepUndone) or not self._rewound():
                raise
            raise StepUndone(str(exc)) from None
        finally:
            self._before_step = None

    def _state(self) -> dict:
        """The session's state, copied deep enough that the step's changes leave the copy as it is."""
        state = dict(vars(self))
        state["outcome"] = replace(self.outcome, details=dict(self.outcome.details))
        state["_decoder"] = self._decoder.copy()
        state["_choices"] = list(self._choices)
        return state

    def _rewound(self) -> bool:
        """Back to the state before the step under way, when its decider can go back too."""
        if self._before_step is None:
            return False
        state, checkpoint = self._before_step
        if not self.decider.rewind(checkpoint):
            return False
        vars(self).update(state)
        return True

    def time_passed(self, now: float) -> bytes:
        """Call when ``deadline`` has passed: a stuck or silent phone ends the session (``StepUndone``: as
        for ``receive_data``)."""
        if self.closed or self.deadline is None or now < self.deadline:
            return b""
        return self._undoable(self._time_passed, now)

    def _time_passed(self, now: float) -> bytes:
        if self.closed or self.deadline is None or now < self.deadline:
            return b""
        if self._ends_by is not None and now >= self._ends_by:
            return self._end(Reason.INVALID_ELEMENT, "timeout",
                             f"the session reached its time bound of {self.max_duration:g} s (serve --max-session-seconds)")
        what = {WAIT_AUTH: "AUTH_RESPONSE", WAIT_KEY: "KEY_GENERATE_RESPONSE", WAIT_STORE: "STORE_CERTIFICATE_RESPONSE",
                WAIT_FETCH: "FETCH_CERTIFICATE_RESPONSE", WAIT_DELETE: "DELETE_CERTIFICATE_RESPONSE",
                WAIT_SIGN: "ENCRYPT_RESPONSE"}[self.state]
        return self._end(Reason.INVALID_ELEMENT, "timeout", f"no {what} in time")

    def connection_lost(self, reason: str = "peer closed the connection") -> None:
        """The connection is gone (``StepUndone``: as for ``receive_data``)."""
        if not self.closed:
            self._undoable(self._close, "aborted", reason)

    def abandon(self, reason: str) -> bytes:
        """End the session failed without asking the decider, whose store cannot be written now (another
        writer holds it, or it cannot be reached): the END_SESSION for the phone, also when a step ended
        the session and its decider failed to record the end. Whatever the session had recorded before
        stays as it was."""
        self.abandoned = True
        self.outcome.outcome = "failed"
        self.outcome.reason = reason
        self.outcome.end_reason = int(Reason.INVALID_ELEMENT)
        self.state = CLOSED
        self.deadline = None
        return self._send(Command.END_SESSION, [(Tag.REASON, u8(Reason.INVALID_ELEMENT))])

    # -- internals --------------------------------------------------------------------------

    def _send(self, command: int, elements) -> bytes:
        return encode_server(Message(command, self.session_id, tuple(elements)))

    def _end(self, reason: int, outcome: str, text: str = "") -> bytes:
        self._close(outcome, text, int(reason))
        return self._send(Command.END_SESSION, [(Tag.REASON, u8(reason))])

    def _close(self, outcome: str, reason: str, end_reason: int | None = None) -> None:
        """Every way the session ends comes through here, once: the decider settles the phone's
        operation from the outcome (whatever step the session had reached)."""
        self.outcome.outcome = outcome
        self.outcome.reason = reason
        self.outcome.end_reason = end_reason
        self.state = CLOSED
        self.deadline = None
        if self._plan is not None:
            self.decider.ended(self._plan, self.outcome)

    def _handle(self, message: Message, now: float) -> bytes:
        if message.session_id != self.session_id:
            raise ProtocolError(f"session id must be {self.session_id}, got {message.session_id}")
        if message.command == Command.REQUEST_IN_PROGRESS:
            self._keepalive(now)
            return b""
        expected, handler = _AWAITED[self.state]
        if message.command != expected:
            raise ProtocolError(f"expected {expected.name}, got {message.name}")
        return handler(self, message, now)

    def _keepalive(self, now: float) -> None:
        if self.state == WAIT_KEY and self._plan is not None:
            self.deadline = min(now + self._plan.keepalive, self._keygen_deadline or now + self._plan.keepalive)
        else:
            # Keep-alives stretch a step, but never past the keep-alive time since the step began.
            limit = self._step_started + (self._plan.keepalive if self._plan else self.step_timeout * 6)
            self.deadline = min(now + self.step_timeout, limit)

    def _on_auth(self, message: Message, now: float) -> bytes:
        version = message.u8(Tag.VERSION)
        if version is None or version > SERVER_VERSION:
            version = SERVER_VERSION
        elif version < 1:
            raise ProtocolError(f"VERSION must be 1-3, got {version}")
        self._version = version
        self.outcome.version = version
        raw_name = message.get(Tag.DEVICE_NAME)
        if raw_name is None:
            raise ProtocolError("AUTH_RESPONSE must carry DEVICE_NAME")
        try:
            name = check_wire_device_name(raw_name)
        except ValidationError as exc:
            raise ProtocolError(str(exc)) from None
        self.outcome.device_name = name.upper()
        caps = message.u16(Tag.X_CAPS)
        self._caps = caps or 0
        offers: list = []

        def offer() -> AuthOffer:  # parsed only when asked for, and once
            if not offers:
                offers.append(self._offer(message, raw_name))
            return offers[0]

        plan = self.decider.begin(name, offer)
        if plan is None:
            return self._end(Reason.UNKNOWN_DEVICE, "unknown_device", "device is not in the store")
        self._plan = plan
        self.outcome.device_name = plan.device_name
        self.outcome.operation = plan.operation
        if plan.refusal:
            return self._end(Reason.INVALID_ELEMENT, "refused", plan.refusal)
        verdict = self.decider.authenticate(plan, offer())
        if not verdict.ok:
            return self._end(Reason.INVALID_ELEMENT, "auth_failed", verdict.reason)
        if verdict.presented:
            self.outcome.details["presented"] = verdict.presented
        return self._dispatch(now)

    def _offer(self, message: Message, raw_name: bytes) -> AuthOffer:
        certificates = ()
        value = message.get(Tag.CERTIFICATE)
        if value:
            certificates = tuple(unwrap_certificates(value))
        sha2 = message.get(Tag.SHA2_SIGNED_DATA)
        return AuthOffer(
            device_name_raw=raw_name[:-1] if raw_name.endswith(b"\x00") else raw_name,
            password=message.text(Tag.PASSWORD) if message.has(Tag.PASSWORD) else None,
            certificates=certificates,
            signed_data=message.get(Tag.SIGNED_DATA),
            sha2_signed_data=decode_sha2_signature(sha2) if sha2 is not None else None,
        )

    def _dispatch(self, now: float) -> bytes:
        plan = self._plan
        if plan.operation == "none":
            return self._end(Reason.NO_ACTION, "no_operation", "no pending operation")
        if plan.operation == "install_upgrade":
            self._choices = [choice for choice in plan.key_choices if choice.kind == "rsa" or self._version >= 3]
            if not self._choices:
                return self._end(Reason.INVALID_ELEMENT, "failed",
                                 f"EC keys cannot be requested from a version {self._version} client")
            if plan.issuer != "capf":
                early = self._third_party_start(now)
                if early is not None:
                    return early
            self._keygen_deadline = now + plan.keygen_timeout
            return self._key_request(now)
        self.deadline = now + self.step_timeout
        self._step_started = now
        if plan.operation == "delete":
            self.state = WAIT_DELETE
            return self._send(Command.DELETE_CERTIFICATE_REQUEST, [(Tag.CERTIFICATE_TYPE, u8(CertificateType.LSC))])
        if plan.operation == "troubleshoot":
            self.state = WAIT_FETCH
            return self._send(Command.FETCH_CERTIFICATE_REQUEST, [(Tag.CERTIFICATE_TYPE, u8(CertificateType.LSC))])
        return self._end(Reason.INVALID_ELEMENT, "failed", f"operation {plan.operation!r} is not served")

    def _third_party_start(self, now: float) -> bytes | None:
        """X-CSR/1 checks before KEY_GENERATE: deliver a ready certificate, or defer again, or
        keep only the key types the phone can sign a CSR for; None: go on to KEY_GENERATE."""
        plan = self._plan
        self.outcome.details["issuer"] = plan.issuer
        if self._caps & XCAP_PENDING_KEY:
            state = self.decider.third_party_state(plan)
            if isinstance(state, Issued):
                self._issued = state
                self._delivering = True
                self.outcome.details["delivered"] = "pending key"
                return self._store_request(now)
            if isinstance(state, Deferred):
                return self._defer(state)
        wanted = {"rsa": XCAP_SIGN_RSA, "ec": XCAP_SIGN_EC}
        signable = [choice for choice in self._choices if self._caps & wanted[choice.kind]]
        reason = ""
        if not signable:
            kinds = "/".join(sorted({choice.kind.upper() for choice in self._choices}))
            reason = (f"issuer {plan.issuer} needs a CSR signed by the phone's own {kinds} key, and the phone does "
                      "not advertise that capability (X-CSR/1 X_CAPS); an LSC is never requested with another key")
        elif plan.issuer == "offline_ca" and not self._caps & XCAP_PENDING_KEY:
            reason = ("issuer offline_ca delivers the LSC in a later session, and the phone cannot keep a pending "
                      "key (X_CAPS bit 2)")
        if reason:
            return self._end(Reason.INVALID_ELEMENT, "failed", reason)
        self._choices = signable
        return None

    def _defer(self, deferred: "Deferred") -> bytes:
        """End the session until the CA has answered: RETRY_LATER when the phone understands it,
        else END_SESSION 0 (the phone comes back on its own schedule)."""
        self.outcome.details["retry_after"] = deferred.retry_after
        if self._caps & XCAP_RETRY_LATER:
            self._close("deferred", deferred.reason)
            return self._send(Command.RETRY_LATER, [(Tag.RETRY_DELAY, max(0, int(deferred.retry_after))
                                                     .to_bytes(4, "big"))])
        return self._end(Reason.NO_ACTION, "deferred", deferred.reason)

    def _key_request(self, now: float) -> bytes:
        self._attempts += 1
        # "EC preferred, RSA backup": after a failed EC attempt move on to the next choice.
        self._choice = self._choices[min(self._attempts - 1, len(self._choices) - 1)]
        self.state = WAIT_KEY
        self.deadline = min(now + self._plan.keepalive, self._keygen_deadline)
        if self._choice.kind == "rsa":
            elements = [(Tag.KEY_SIZE, u16(self._choice.size))]
            if self._version >= 3:
                elements.insert(0, (Tag.KEY_TYPE, u8(KeyType.RSA)))
        else:
            elements = [(Tag.KEY_TYPE, u8(KeyType.EC)), (Tag.CURVE, u8(BITS_CURVE[self._choice.size]))]
        self.outcome.details["key"] = f"{self._choice.kind}{self._choice.size}"
        return self._send(Command.KEY_GENERATE_REQUEST, elements)

    def _on_key(self, message: Message, now: float) -> bytes:
        public_key = message.get(Tag.PUBLIC_KEY)
        if not public_key:
            reason = message.u8(Tag.REASON)
            if self._attempts < self._plan.keygen_attempts:
                return self._key_request(now)
            return self._end(Reason.INVALID_ELEMENT, "failed",
                             f"key generation failed after {self._attempts} attempts (phone reason {reason})")
        if self._plan.issuer != "capf":
            request = self.decider.prepare_csr(self._plan, public_key, self._choice)
            self._csr_request = request
            self.state = WAIT_SIGN
            self.deadline = now + self.step_timeout
            return self._send(Command.ENCRYPT_REQUEST, [(Tag.KEY_TYPE, u8(request.key_type_code)),
                                                        (Tag.DIGEST_TYPE, u8(request.digest_code)),
                                                        (Tag.X_TBS, request.info)])
        self._issued = self.decider.issue(self._plan, public_key, self._choice)
        return self._store_request(now)

    def _store_request(self, now: float) -> bytes:
        self.state = WAIT_STORE
        self.deadline = now + self.step_timeout
        self._step_started = now
        return self._send(Command.STORE_CERTIFICATE_REQUEST,
                          [(Tag.CERTIFICATE_TYPE, u8(CertificateType.LSC)), (Tag.CERTIFICATE, wrap_certificate(self._issued.der))])

    def _on_sign(self, message: Message, now: float) -> bytes:
        signature = message.get(Tag.SIGNED_DATA)
        if message.u8(Tag.REASON) != Reason.UPDATE_CERTIFICATE or not signature:
            detail = message.text(Tag.REASON_INFO) if message.has(Tag.REASON_INFO) else b""
            why = f": {detail.decode('utf-8', 'replace')[:200]}" if detail else ""
            return self._end(Reason.INVALID_ELEMENT, "failed", f"the phone refused to sign the CSR{why}")
        result = self.decider.submit_csr(self._plan, self._csr_request, signature)
        if isinstance(result, Deferred):
            if not self._caps & XCAP_PENDING_KEY:
                return self._end(Reason.INVALID_ELEMENT, "failed",
                                 "the CA did not sign the request in time and the phone cannot keep a pending key "
                                 "(X_CAPS bit 2)")
            return self._defer(result)
        self._issued = result
        return self._store_request(now)

    def _on_store(self, message: Message, now: float) -> bytes:
        ok = message.u8(Tag.REASON) == Reason.UPDATE_CERTIFICATE
        if not ok and self._delivering:
            self.decider.refused(self._plan, self._issued)
            return self._end(Reason.INVALID_ELEMENT, "failed", "the phone no longer holds the key of the waiting "
                                                               "certificate; it is stale")
        self.decider.stored(self._plan, self._issued, ok)
        if ok:
            return self._end(Reason.UPDATE_CERTIFICATE, "succeeded", "LSC installed")
        return self._end(Reason.INVALID_ELEMENT, "failed", "phone did not store the certificate")

    def _on_fetch(self, message: Message, now: float) -> bytes:
        value = message.get(Tag.CERTIFICATE)
        if message.u8(Tag.REASON) != Reason.UPDATE_CERTIFICATE or not value:
            return self._end(Reason.INVALID_ELEMENT, "failed", "phone returned no certificate")
        entries = unwrap_certificates(value)
        self.decider.fetched(self._plan, entries)
        self.outcome.details["retrieved"] = len(entries)
        return self._end(Reason.NO_ACTION, "succeeded", f"retrieved {len(entries)} certificate(s)")

    def _on_delete(self, message: Message, now: float) -> bytes:
        ok = message.u8(Tag.REASON) == Reason.UPDATE_CERTIFICATE
        self.decider.deleted(self._plan, ok)
        return self._end(Reason.UPDATE_CERTIFICATE, "succeeded", "LSC deleted" if ok else "phone had no LSC")


# What the session waits for in each state, and the method that takes it.
# pylint: disable=protected-access
_AWAITED = {
    WAIT_AUTH: (Command.AUTH_RESPONSE, ServerSession._on_auth),
    WAIT_KEY: (Command.KEY_GENERATE_RESPONSE, ServerSession._on_key),
    WAIT_STORE: (Command.STORE_CERTIFICATE_RESPONSE, ServerSession._on_store),
    WAIT_FETCH: (Command.FETCH_CERTIFICATE_RESPONSE, ServerSession._on_fetch),
    WAIT_DELETE: (Command.DELETE_CERTIFICATE_RESPONSE, ServerSession._on_delete),
    WAIT_SIGN: (Command.ENCRYPT_RESPONSE, ServerSession._on_sign),
}
# pylint: enable=protected-access
