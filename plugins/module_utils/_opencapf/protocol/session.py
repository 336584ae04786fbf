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
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CapfError, ValidationError
from ..vocabulary import check_wire_device_name
from .codec import (Decoder, Message, ProtocolError, decode_sha2_signature, encode_server, u8, u16,
                    unwrap_certificates, wrap_certificate)
from .constants import (BITS_CURVE, SERVER_VERSION, AuthType, CertificateType, Command, KeyType, Reason, Tag)

# States
WAIT_AUTH = "wait_auth"
WAIT_KEY = "wait_key"
WAIT_STORE = "wait_store"
WAIT_FETCH = "wait_fetch"
WAIT_DELETE = "wait_delete"
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


class Decider:
    """The session's window on the store. The server implements it; tests may too."""

    def begin(self, device_name: str) -> Plan | None:  # None: unknown device
        raise NotImplementedError

    def authenticate(self, plan: Plan, offer: AuthOffer) -> Verdict:
        raise NotImplementedError

    def issue(self, plan: Plan, public_key_der: bytes, choice: KeyChoice) -> Issued:
        raise NotImplementedError

    def stored(self, plan: Plan, issued: Issued, ok: bool) -> None:
        raise NotImplementedError

    def deleted(self, plan: Plan, ok: bool) -> None:
        raise NotImplementedError

    def fetched(self, plan: Plan, certificates: list) -> None:
        raise NotImplementedError

    def failed(self, plan: Plan, reason: str) -> None:
        raise NotImplementedError


class ServerSession:
    """One connection, server side."""

    def __init__(self, session_id: int, decider: Decider, *, step_timeout: float = 10.0):
        if not 0 < session_id <= 0xFFFFFFFF:
            raise ValueError("session id must be 1..2^32-1")
        self.session_id = session_id
        self.decider = decider
        self.step_timeout = step_timeout
        self.state = WAIT_AUTH
        self.outcome = Outcome()
        self.deadline: float | None = None
        self._decoder = Decoder(MAX_PHONE_BODY)
        self._plan: Plan | None = None
        self._version = SERVER_VERSION
        self._choices: list = []
        self._attempts = 0
        self._choice: KeyChoice | None = None
        self._keygen_deadline: float | None = None
        self._issued: Issued | None = None
        self._step_started = 0.0

    # -- driver interface -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    def start(self, now: float) -> bytes:
        """The first message: AUTH_REQUEST (S speaks first)."""
        self.deadline = now + self.step_timeout
        self._step_started = now
        return self._send(Command.AUTH_REQUEST, [(Tag.VERSION, u8(SERVER_VERSION)), (Tag.AUTH_TYPE, u8(AuthType.NONE))])

    def receive_data(self, data: bytes, now: float) -> bytes:
        """Bytes from the phone in; bytes to send out (possibly empty)."""
        if self.closed:
            return b""
        out = []
        try:
            for message in self._decoder.feed(data):
                out.append(self._handle(message, now))
                if self.closed:
                    break
        except ProtocolError as exc:
            out.append(self._end(Reason.INVALID_ELEMENT, "protocol_error", exc.rule))
        except CapfError as exc:
            out.append(self._end(Reason.INVALID_ELEMENT, "failed", str(exc)))
        return b"".join(out)

    def time_passed(self, now: float) -> bytes:
        """Call when ``deadline`` has passed: a stuck or silent phone ends the session."""
        if self.closed or self.deadline is None or now < self.deadline:
            return b""
        what = {WAIT_AUTH: "AUTH_RESPONSE", WAIT_KEY: "KEY_GENERATE_RESPONSE", WAIT_STORE: "STORE_CERTIFICATE_RESPONSE",
                WAIT_FETCH: "FETCH_CERTIFICATE_RESPONSE", WAIT_DELETE: "DELETE_CERTIFICATE_RESPONSE"}[self.state]
        return self._end(Reason.INVALID_ELEMENT, "timeout", f"no {what} in time")

    def connection_lost(self, reason: str = "peer closed the connection") -> None:
        if not self.closed:
            self._fail_operation(reason)
            self.outcome.outcome = "aborted"
            self.outcome.reason = reason
            self.state = CLOSED
            self.deadline = None

    # -- internals --------------------------------------------------------------------------

    def _send(self, command: int, elements) -> bytes:
        return encode_server(Message(command, self.session_id, tuple(elements)))

    def _end(self, reason: int, outcome: str, text: str = "") -> bytes:
        if outcome not in ("succeeded", "no_operation", "unknown_device"):
            self._fail_operation(text or outcome)
        self.outcome.outcome = outcome
        self.outcome.reason = text
        self.outcome.end_reason = int(reason)
        self.state = CLOSED
        self.deadline = None
        return self._send(Command.END_SESSION, [(Tag.REASON, u8(reason))])

    def _fail_operation(self, reason: str) -> None:
        waiting = self.state in (WAIT_KEY, WAIT_STORE, WAIT_FETCH, WAIT_DELETE)
        if self._plan is not None and self._plan.operation != "none" and waiting:
            self.decider.failed(self._plan, reason)

    def _handle(self, message: Message, now: float) -> bytes:
        if message.session_id != self.session_id:
            raise ProtocolError(f"session id must be {self.session_id}, got {message.session_id}")
        if message.command == Command.REQUEST_IN_PROGRESS:
            self._keepalive(now)
            return b""
        expected = {WAIT_AUTH: Command.AUTH_RESPONSE, WAIT_KEY: Command.KEY_GENERATE_RESPONSE,
                    WAIT_STORE: Command.STORE_CERTIFICATE_RESPONSE, WAIT_FETCH: Command.FETCH_CERTIFICATE_RESPONSE,
                    WAIT_DELETE: Command.DELETE_CERTIFICATE_RESPONSE}[self.state]
        if message.command != expected:
            raise ProtocolError(f"expected {expected.name}, got {message.name}")
        handler = {WAIT_AUTH: self._on_auth, WAIT_KEY: self._on_key, WAIT_STORE: self._on_store,
                   WAIT_FETCH: self._on_fetch, WAIT_DELETE: self._on_delete}[self.state]
        return handler(message, now)

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
        plan = self.decider.begin(name)
        if plan is None:
            return self._end(Reason.UNKNOWN_DEVICE, "unknown_device", "device is not in the store")
        self._plan = plan
        self.outcome.device_name = plan.device_name
        self.outcome.operation = plan.operation
        if plan.refusal:
            return self._end(Reason.INVALID_ELEMENT, "refused", plan.refusal)
        verdict = self.decider.authenticate(plan, self._offer(message, raw_name))
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
        self._issued = self.decider.issue(self._plan, public_key, self._choice)
        self.state = WAIT_STORE
        self.deadline = now + self.step_timeout
        self._step_started = now
        return self._send(Command.STORE_CERTIFICATE_REQUEST,
                          [(Tag.CERTIFICATE_TYPE, u8(CertificateType.LSC)), (Tag.CERTIFICATE, wrap_certificate(self._issued.der))])

    def _on_store(self, message: Message, now: float) -> bytes:
        ok = message.u8(Tag.REASON) == Reason.UPDATE_CERTIFICATE
        self.decider.stored(self._plan, self._issued, ok)
        self.state = CLOSED  # the decider recorded the result; nothing left to fail
        if ok:
            return self._end(Reason.UPDATE_CERTIFICATE, "succeeded", "LSC installed")
        return self._end(Reason.INVALID_ELEMENT, "failed", "phone did not store the certificate")

    def _on_fetch(self, message: Message, now: float) -> bytes:
        value = message.get(Tag.CERTIFICATE)
        if message.u8(Tag.REASON) != Reason.UPDATE_CERTIFICATE or not value:
            return self._end(Reason.INVALID_ELEMENT, "failed", "phone returned no certificate")
        entries = unwrap_certificates(value)
        self.decider.fetched(self._plan, entries)
        self.state = CLOSED
        self.outcome.details["retrieved"] = len(entries)
        return self._end(Reason.NO_ACTION, "succeeded", f"retrieved {len(entries)} certificate(s)")

    def _on_delete(self, message: Message, now: float) -> bytes:
        ok = message.u8(Tag.REASON) == Reason.UPDATE_CERTIFICATE
        self.decider.deleted(self._plan, ok)
        self.state = CLOSED
        return self._end(Reason.UPDATE_CERTIFICATE, "succeeded", "LSC deleted" if ok else "phone had no LSC")
