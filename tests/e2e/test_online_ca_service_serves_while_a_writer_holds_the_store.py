"""A CAPF service whose issuer is an online CA runs its sessions' steps in its store threads (they call the CA
over HTTP). While another process holds the store's write lock for a while (a long ``opencapf apply``), those
steps wait for it without holding up the rest of the service: the event loop goes on answering TLS handshakes
at once (on PostgreSQL, where the threads and the loop share one connection, a thread no longer waits for the
lock on it), and every phone's session is served once the writer is done. A writer that holds the lock longer
than the step timeout holds up no online CA phone longer than that: its step in the store thread waits for the lock
as long as the loop's steps do at most (``serve --step-timeout``), then the phone hears END_SESSION, failed, and
nothing of the step is written.

Real processes and parts throughout: ``opencapf serve``, the holder (a child process in ``Store.atomic``),
the loopback EST CA and the phone simulator over real TLS."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from support.phones import phone, run_enrol
from support.protocol import add_phone, phone_row
from support.serving import Serving
from support.third_party_ca import EnterprisePki, EstServer, use_online_est
from support.writers import enrol_beside_a_holder, start_holder
from _opencapf.ca import authority
from _opencapf.protocol.constants import XCAPS_ALL
from _opencapf.protocol.phone import PhoneBehaviour
from _opencapf.store import sessions as session_records

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


SHORT_STEP_TIMEOUT = 2  # serve --step-timeout of the next test: far shorter than the hold
LONG_HOLD_SECONDS = 60  # the holder is killed (its change rolled back) once the phone's session has ended
MARGIN = 2.5  # the phone's TLS handshake and the first messages, the session's END_SESSION


def test_an_online_ca_phone_waits_for_a_longer_writer_no_longer_than_the_step_timeout(ca_store, pki, tmp_path):
    """Invariant: an online-CA phone's session never waits on the store longer than the step timeout: it hears
    END_SESSION (failed) within the step timeout and a margin while a longer writer holds the lock, and nothing of
    its step is written (the phone's row as before, no session record, nothing asked of the CA)."""
    name = "SEP00000000CE01"
    add_phone(ca_store, name, operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, name)
    capf = SimpleNamespace(capf_pem=authority.current(ca_store)["pem"])
    with EstServer(pki, str(tmp_path / "est")) as est:
        use_online_est(ca_store, pki, est)
        before = dict(phone_row(ca_store, name))
        serving = Serving.on(ca_store, tmp_path / "serve.log")
        with serving.start("--enrolment-interval", "0", "--step-timeout", str(SHORT_STEP_TIMEOUT)):
            capf.port = serving.port
            holder = start_holder(ca_store, LONG_HOLD_SECONDS)
            try:
                ended = {}

                def enrol():
                    started = time.monotonic()
                    ended["result"] = run_enrol(identity, capf, behaviour=X_CSR)
                    ended["seconds"] = time.monotonic() - started

                session = threading.Thread(target=enrol)
                session.start()
                session.join(SHORT_STEP_TIMEOUT + MARGIN + 10)
                assert not session.is_alive(), "the phone's session waited on for the writer"
                assert holder.poll() is None, "the other writer still holds the store"
            finally:
                if holder.poll() is None:
                    holder.kill()  # its change is rolled back
                    holder.communicate()
            session.join(60)
            text = serving.log()
        issued = len(est.issued)
    result = ended["result"]
    assert result.outcome == "failed" and result.end_reason == 7, (result, text)  # END_SESSION, INVALID_ELEMENT
    assert ended["seconds"] < SHORT_STEP_TIMEOUT + MARGIN, (ended["seconds"], text)
    assert dict(phone_row(ca_store, name)) == before
    with ca_store.read() as tx:
        assert name not in [row["device_name"] for row in session_records.recent(tx, limit=1000)]
    assert issued == 0
    assert ": failed (another writer (such as a long 'opencapf apply') held the store's write lock for longer than " \
           f"the step may wait ({SHORT_STEP_TIMEOUT} s); nothing of the step was written); the session is not recorded" \
           in text, text
    assert "Traceback" not in text, text
