"""A CAPF service whose issuer is an online CA runs its sessions' steps in its store threads (they call the CA
over HTTP). While another process holds the store's write lock for a while (a long ``opencapf apply``), those
steps wait for it without holding up the rest of the service: the event loop goes on answering TLS handshakes
at once (on PostgreSQL, where the threads and the loop share one connection, a thread no longer waits for the
lock on it), and every phone's session is served once the writer is done.

Real processes and parts throughout: ``opencapf serve``, the holder (a child process in ``Store.atomic``),
the loopback EST CA and the phone simulator over real TLS."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from support.phones import phone, run_enrol
from support.protocol import add_phone, phone_row
from support.serving import Serving
from support.third_party_ca import EnterprisePki, EstServer, use_online_est
from support.writers import enrol_beside_a_holder
from _opencapf.ca import authority
from _opencapf.protocol.constants import XCAPS_ALL
from _opencapf.protocol.phone import PhoneBehaviour

pytestmark = pytest.mark.both_backends

PHONES = 2
STEP_TIMEOUT = 10  # serve --step-timeout: far longer than the hold
HOLD_SECONDS = 3.0
X_CSR = PhoneBehaviour(x_caps=XCAPS_ALL)  # a phone that signs a CSR for a third-party CA


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


def test_an_online_ca_service_answers_at_once_and_serves_its_phones_once_a_long_writer_is_done(
        ca_store, pki, tmp_path):
    names = [f"SEP00000000CD{index:02X}" for index in range(PHONES)]
    identities = []
    for name in names:
        add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
        identities.append(phone(tmp_path, name))
    capf = SimpleNamespace(capf_pem=authority.current(ca_store)["pem"])
    with EstServer(pki, str(tmp_path / "est")) as est:
        use_online_est(ca_store, pki, est)
        serving = Serving.on(ca_store, tmp_path / "serve.log")
        with serving.start("--enrolment-interval", "0", "--step-timeout", str(STEP_TIMEOUT)):
            capf.port = serving.port
            ended, handshakes, held_since = enrol_beside_a_holder(
                ca_store, serving.port, lambda index: run_enrol(identities[index], capf, behaviour=X_CSR), PHONES,
                HOLD_SECONDS, STEP_TIMEOUT, look_for=HOLD_SECONDS - 0.5, pause=0.3)  # the first writes wait by then
            text = serving.log()
        issued = len(est.issued)
    # The loop answered every handshake at once while the store threads waited for the lock.
    assert handshakes and max(handshakes) < 1.0, handshakes
    for index, name in enumerate(names):
        result, at = ended[index]
        assert result.outcome == "ok", (name, result, text)
        # served after the holder let the lock go (not before: the lock was held), within the step timeout
        assert HOLD_SECONDS * 0.75 <= at - held_since < HOLD_SECONDS + STEP_TIMEOUT, at - held_since
        assert phone_row(ca_store, name)["operation_status"] == "succeeded"
    assert issued == PHONES
    assert "Traceback" not in text and ": failed" not in text, text
