"""Phones that reach the CAPF service while another process holds the store's write lock for a while (a
long ``opencapf apply``, shorter than the step timeout) are served once it is released, on either backend:
each session's step awaits the lock, the event loop serving every other connection meanwhile (TLS
handshakes are answered at once throughout), and enrols its phone when the lock is free again. On
PostgreSQL the lock is the writers' advisory lock, held by another connection to the database.

Real processes throughout: ``opencapf serve``, the holder (a child process in ``Store.atomic`` that
commits after ``HOLD_SECONDS``) and the phone simulator over real TLS."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from support.phones import phone, run_enrol
from support.protocol import add_phone, phone_row
from support.serving import Serving
from support.writers import enrol_beside_a_holder
from _opencapf.ca import authority

pytestmark = pytest.mark.both_backends

PHONES = 3
STEP_TIMEOUT = 10  # serve --step-timeout: far longer than the hold
HOLD_SECONDS = 2.0


def test_phones_are_served_once_a_write_lock_held_shorter_than_the_step_timeout_is_released(ca_store, tmp_path):
    names = [f"SEP00000000CB{index:02X}" for index in range(PHONES)]
    identities = []
    for name in names:
        add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
        identities.append(phone(tmp_path, name))
    capf = SimpleNamespace(capf_pem=authority.current(ca_store)["pem"])
    serving = Serving.on(ca_store, tmp_path / "serve.log")
    with serving.start("--enrolment-interval", "0", "--step-timeout", str(STEP_TIMEOUT)):
        capf.port = serving.port
        ended, handshakes, held_since = enrol_beside_a_holder(
            ca_store, serving.port, lambda index: run_enrol(identities[index], capf), PHONES, HOLD_SECONDS,
            STEP_TIMEOUT, look_for=HOLD_SECONDS, pause=0.2)
        text = serving.log()
    # The loop answered every handshake at once while the sessions awaited the lock.
    assert handshakes and max(handshakes) < 1.0, handshakes
    for index, name in enumerate(names):
        result, at = ended[index]
        assert result.outcome == "ok", (name, result, text)
        # served after the holder let the lock go (not before: the lock was held), within the step timeout
        assert HOLD_SECONDS * 0.75 <= at - held_since < STEP_TIMEOUT, at - held_since
        assert phone_row(ca_store, name)["operation_status"] == "succeeded"
    assert "Traceback" not in text and ": failed" not in text, text
