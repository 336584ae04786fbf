"""X-CSR/1 (capf-protocol.md 6.3) over plain bytes: the server session with the real store decider
and the simulator's phone session, issuer offline_ca (no network needed); on both backends."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from support.protocol import add_phone, phone_row
from _opencapf import csr
from _opencapf.ca import certificates as c
from _opencapf.protocol import codec
from _opencapf.protocol.codec import Decoder
from _opencapf.protocol.constants import (XCAP_PENDING_KEY, XCAP_SIGN_RSA, XCAPS_ALL, Command, Reason, Tag)
from _opencapf.protocol.phone import PhoneBehaviour, PhoneSession
from _opencapf.protocol.session import ServerSession
from _opencapf.server.decider import StoreDecider
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import service as service_records

NAME = "SEP0011223344C0"
pytestmark = pytest.mark.both_backends


def converse(store, identity, behaviour, phone_class=PhoneSession):
    server = ServerSession(99, StoreDecider(store, "test"), step_timeout=5)
    phone = phone_class(identity, behaviour)
    to_phone = server.start(0.0)
    wire = [to_phone]
    while not phone.done:
        reply = phone.receive_data(to_phone)
        if phone.done:
            break
        to_phone = server.receive_data(reply, 0.0)
        wire.append(to_phone)
    assert server.closed
    return server, phone, [message for chunk in wire for message in Decoder().feed(chunk)]


def offline_phone(store, name=NAME, key_order="rsa"):
    with store.transaction() as tx:
        service_records.write(tx, "test", {"issuer": "offline_ca"})
    add_phone(store, name, operation="install_upgrade", key_order=key_order)
    return PhoneIdentity(PhoneSettings(name))


def test_offline_session_signs_a_csr_and_retries_later(ca_store):
    identity = offline_phone(ca_store)
    server, phone, messages = converse(ca_store, identity, PhoneBehaviour(x_caps=XCAPS_ALL))
    assert [m.command for m in messages] == [Command.AUTH_REQUEST, Command.KEY_GENERATE_REQUEST,
                                             Command.ENCRYPT_REQUEST, Command.RETRY_LATER]
    encrypt = messages[2]
    assert encrypt.u8(Tag.KEY_TYPE) == 0 and encrypt.u8(Tag.DIGEST_TYPE) == 2
    assert messages[3].get(Tag.RETRY_DELAY) == (3600).to_bytes(4, "big")
    assert server.outcome.outcome == "deferred" and phone.result.retry_delay == 3600
    with ca_store.read() as tx:
        row = tx.one("SELECT status, csr_pem FROM csrs")
    request = csr.verify(row["csr_pem"].encode())  # signed by the phone's own key
    assert row["status"] == "pending"
    assert c.public_key_der(request.public_key()) == c.public_key_der(identity.pending_key().public_key())
    assert request.tbs_certrequest_bytes == encrypt.get(Tag.X_TBS)
    row = phone_row(ca_store, NAME)  # waiting for the CA: pending work for the phone's next session
    assert row["operation_status"] == "pending" and "offline CA" in row["operation_reason"]
    # The next session, before the import: RETRY_LATER again, no new key.
    _server, again, messages = converse(ca_store, identity, PhoneBehaviour(x_caps=XCAPS_ALL))
    assert [m.command for m in messages] == [Command.AUTH_REQUEST, Command.RETRY_LATER] and again.result.key == ""


def test_without_retry_later_the_session_ends_with_reason_0(ca_store):
    identity = offline_phone(ca_store)
    server, phone, messages = converse(ca_store, identity, PhoneBehaviour(x_caps=XCAP_SIGN_RSA | XCAP_PENDING_KEY))
    assert messages[-1].command == Command.END_SESSION and phone.result.end_reason == Reason.NO_ACTION
    assert server.outcome.outcome == "deferred"


def test_phone_that_cannot_keep_a_pending_key_fails_clearly(ca_store):
    identity = offline_phone(ca_store)
    server, phone, _messages = converse(ca_store, identity, PhoneBehaviour(x_caps=XCAP_SIGN_RSA))
    assert phone.result.end_reason == Reason.INVALID_ELEMENT
    assert "pending key" in phone_row(ca_store, NAME)["operation_reason"]


def test_phone_refusing_to_sign_is_recorded(ca_store):
    identity = offline_phone(ca_store)
    server, phone, _messages = converse(ca_store, identity, PhoneBehaviour(x_caps=XCAPS_ALL, refuse_sign=True))
    assert phone.result.end_reason == Reason.INVALID_ELEMENT
    row = phone_row(ca_store, NAME)
    assert row["operation_status"] == "failed" and "refused to sign the CSR" in row["operation_reason"]
    with ca_store.read() as tx:
        assert tx.scalar("SELECT COUNT(*) FROM csrs") == 0


class _OtherKeySigner(PhoneSession):
    """A broken phone that signs X_TBS with a key other than the one it sent."""

    def _on_sign(self, message):
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signature = other.sign(message.get(Tag.X_TBS), padding.PKCS1v15(), hashes.SHA256())
        return self._send(Command.ENCRYPT_RESPONSE, [(Tag.REASON, codec.u8(Reason.UPDATE_CERTIFICATE)),
                                                     (Tag.SIGNED_DATA, signature)])


def test_a_signature_from_another_key_is_never_accepted(ca_store):
    identity = offline_phone(ca_store)
    server, phone, _messages = converse(ca_store, identity, PhoneBehaviour(x_caps=XCAPS_ALL), _OtherKeySigner)
    assert phone.result.end_reason == Reason.INVALID_ELEMENT
    assert "not signed by the phone's key" in phone_row(ca_store, NAME)["operation_reason"]
    with ca_store.read() as tx:
        assert tx.scalar("SELECT COUNT(*) FROM csrs WHERE csr_pem IS NOT NULL") == 0


def test_capf_issuer_ignores_x_caps(ca_store):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    identity = PhoneIdentity(PhoneSettings(NAME))
    server, _phone, messages = converse(ca_store, identity, PhoneBehaviour(x_caps=XCAPS_ALL))
    assert [m.command for m in messages] == [Command.AUTH_REQUEST, Command.KEY_GENERATE_REQUEST,
                                             Command.STORE_CERTIFICATE_REQUEST, Command.END_SESSION]
    assert server.outcome.outcome == "succeeded"
