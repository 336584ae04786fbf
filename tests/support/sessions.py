"""A session of one device without sockets: the service's own sans-I/O ``ServerSession`` with its
``StoreDecider``, and the simulator's ``PhoneSession``, driven an exchange at a time, so that a test
can interleave several sessions of a phone, or change the phone or the CAPF certificate between any
two exchanges."""

from __future__ import annotations

import dataclasses
import itertools

from _opencapf.ca import certificates as c
from _opencapf.protocol import codec
from _opencapf.protocol.codec import Decoder, Message, u8
from _opencapf.protocol.constants import Command, Reason, Tag
from _opencapf.protocol.phone import PhoneBehaviour, PhoneSession, PowerFailure
from _opencapf.protocol.session import Outcome, ServerSession
from _opencapf.server.decider import StoreDecider
from _opencapf.simulator.identity import PhoneIdentity

NOT_STORING = "answers that it did not store"
# What the phone of a session does, by name: the simulator's behaviours, and answering
# STORE_CERTIFICATE_REQUEST with a failure (the phone keeps its previous LSC).
BEHAVIOURS = {
    "completes": PhoneBehaviour(),
    "loses power before its key": PhoneBehaviour(power_failure_at="key"),
    "loses power before storing": PhoneBehaviour(power_failure_at="store"),
    NOT_STORING: PhoneBehaviour(),
}


class SessionLeg:
    """One session of the device: the server's session and the phone's, one exchange per ``step``.
    ``signer``: the CAPF certificate active when the phone connected, as the service gives it to the
    session's decider (the LSC is signed by the one active when it is issued; default: read then);
    ``x_caps``: the X-CSR/1 capabilities the phone advertises (third-party CAs; 0: none, as real phones)."""

    def __init__(self, store, identity: PhoneIdentity, session_id: int, behaviour: str = "completes",
                 signer=None, x_caps: int = 0):
        decider = StoreDecider(store, "test", session_id=session_id, max_session=600, signer=signer)
        self.server = ServerSession(session_id, decider, step_timeout=30, max_duration=600)
        self.phone = PhoneSession(identity, dataclasses.replace(BEHAVIOURS[behaviour], x_caps=x_caps))
        self.session_id = session_id
        self.refuses = behaviour == NOT_STORING
        self.outgoing: bytes | None = None  # what the server sent last, not yet read by the phone
        self.certificate = None  # the LSC the server sent, once it sent one
        self.issued: str | None = None  # its serial, as the store keeps it

    @property
    def done(self) -> bool:
        return self.server.closed

    def step(self, now: float) -> str | None:
        """One exchange; returns what the store recorded in it: "issued", "installed", "not stored",
        "deleted" or "fetched" (None: nothing of these)."""
        if self.outgoing is None:
            self.outgoing = self.server.start(now)
            return None
        if self.refuses and self.issued is not None:
            self.outgoing = self.server.receive_data(codec.encode(Message(
                Command.STORE_CERTIFICATE_RESPONSE, self.session_id, ((Tag.REASON, u8(Reason.INVALID_ELEMENT)),))), now)
            return "not stored"
        try:
            reply = self.phone.receive_data(self.outgoing)
        except PowerFailure:
            self.server.connection_lost()
            return None
        stored = self.phone.result.stored
        self.outgoing = self.server.receive_data(reply, now)
        for message in Decoder().feed(self.outgoing):
            if message.command == Command.STORE_CERTIFICATE_REQUEST:
                ((_type, der),) = codec.unwrap_certificates(message.get(Tag.CERTIFICATE))
                self.certificate = c.load_der_certificate(der, "LSC")
                self.issued = format(self.certificate.serial_number, "x")
                return "issued"
        if self.server.outcome is not None and self.server.outcome.outcome == "succeeded":
            return "installed" if stored else {"delete": "deleted", "fetch": "fetched"}.get(self.phone.result.operation)
        return None


def in_turn(legs, schedule):
    """The legs to step, one at a time: first as ``schedule`` names them (each an index, taken modulo
    their number), then each in turn, until every one has ended; a leg that has ended is passed over.
    The caller steps each leg it is given before asking for the next."""
    for index in itertools.chain(schedule, itertools.cycle(range(len(legs)))):
        if all(leg.done for leg in legs):
            return
        leg = legs[index % len(legs)]
        if not leg.done:
            yield leg


class DeciderLeg:
    """One session of the phone ``name`` driven through its ``StoreDecider`` alone (no codec, no phone
    session), a step at a time: a subclass's ``_steps`` is a generator that yields between two steps;
    ``fate`` says what becomes of the session. ``done`` once it ended (``_end``) or died; ``ended_as``:
    the outcome its end recorded (None: none, it died or runs)."""

    def __init__(self, store, name: str, fate: str, max_session: int):
        self.store, self.name, self.fate = store, name, fate
        self.decider = StoreDecider(store, max_session=max_session)
        self.plan = None
        self.steps = iter(self._steps())
        self.done = False  # ended or dead: nothing more of it reaches the store
        self.ended_as: str | None = None

    def step(self) -> None:
        try:
            next(self.steps)
        except StopIteration:
            self.done = True

    def _end(self, outcome: str, reason: str) -> None:
        self.decider.ended(self.plan, Outcome(self.name, self.plan.operation, outcome, reason))
        self.ended_as, self.done = outcome, True

    def _steps(self):
        raise NotImplementedError
