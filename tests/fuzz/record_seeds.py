"""Record the seed corpus: one real session per scenario, phone bytes only, plus the public anchors.

    python tests/fuzz/record_seeds.py      # rewrites tests/fuzz/corpus/* and tests/fuzz/anchors/*

The simulator's phone talks to a ServerSession over plain bytes (no sockets); what the phone sent
becomes the seed. Re-recording changes every byte (fresh keys), not what the seeds cover.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import capf_session as world
from _opencapf.ca import authority
from _opencapf.ca import certificates as c
from _opencapf.phone_config import COLUMN_OPTIONS, PhoneRequest, check_settings, converge_many
from _opencapf.protocol.phone import PhoneBehaviour, PhoneSession
from _opencapf.protocol.session import ServerSession
from _opencapf.server.decider import StoreDecider
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.simulator.manufacturing import ManufacturingCa
from _opencapf.store import phones as phone_records

BEHAVIOURS = {
    "install-ec-preferred-retry": PhoneBehaviour(fail_keygen=1),
    "jabber-version-2": PhoneBehaviour(version=2, request_in_progress=False, empty_password=False, send_reason=False),
}


def converse(store, identity, behaviour) -> tuple[bytes, str]:
    server = ServerSession(world.SESSION_ID, StoreDecider(store, "record"), step_timeout=10.0)
    phone = PhoneSession(identity, behaviour or PhoneBehaviour())
    to_phone = server.start(0.0)
    sent = []
    while not phone.done:
        reply = phone.receive_data(to_phone)
        if phone.done:
            break
        sent.append(reply)
        to_phone = server.receive_data(reply, 1.0)
    return b"".join(sent), server.outcome.outcome


def record(directory: str) -> dict:
    store = world.open_store(os.path.join(directory, "record.db"), actor="record")
    authority.ensure(store)
    mic_ca = ManufacturingCa.create(os.path.join(directory, "mic-ca"))
    mic_ca.trust_in(store)
    world.add_phones(store)
    seeds = {}
    for seed, (name, settings, expected) in world.SCENARIOS.items():
        auth_mode = (settings or {}).get("auth_mode", "null_string")
        identity = PhoneIdentity.create(None, PhoneSettings(name, auth_mode="null_string"),
                                        mic_ca=mic_ca if auth_mode == "existing_cert_mic" else None)
        if auth_mode == "existing_cert_lsc":  # a first, null-string install gives the phone its LSC
            _change(store, name, auth_mode="null_string", operation="install_upgrade")
            _bytes, outcome = converse(store, identity, None)
            assert outcome == "succeeded" and identity.lsc is not None, outcome
            world.reset(store)
            _change(store, name, auth_mode="existing_cert_lsc")
        identity.settings.auth_mode = auth_mode
        identity.settings.auth_string = world.AUTH_STRING if auth_mode == "auth_string" else ""
        stream, outcome = converse(store, identity, BEHAVIOURS.get(seed))
        assert outcome == expected, (seed, outcome, expected)
        seeds[seed] = b"\x00" + stream
    anchors = {"capf.pem": authority.current(store)["pem"], "mic-ca.pem": c.to_pem(mic_ca.certificate)}
    store.close()
    return seeds, anchors


def _change(store, name: str, **columns) -> None:
    """The operator changes the phone's settings ``columns`` (store columns) as capf_phone does, its operation
    armed again once finished (``reissue``)."""
    with store.transaction() as tx:
        wanted = check_settings({COLUMN_OPTIONS[column]: value for column, value in columns.items()})
        request = PhoneRequest(name, wanted, reissue=True)
        converge_many(tx, "record", b"", [(phone_records.get(tx, name), request)], via="capf_phone")


def main() -> None:
    directory = tempfile.mkdtemp(prefix="capf-seeds-")
    try:
        seeds, anchors = record(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(world.SEEDS, ignore_errors=True)
    os.makedirs(world.SEEDS)
    os.makedirs(world.ANCHORS, exist_ok=True)
    for seed, data in seeds.items():
        with open(os.path.join(world.SEEDS, seed), "wb") as handle:
            handle.write(data)
    for name, pem in anchors.items():
        with open(os.path.join(world.ANCHORS, name), "w", encoding="ascii") as handle:
            handle.write(pem)
    print(f"{len(seeds)} seeds in {world.SEEDS}, anchors in {world.ANCHORS}")


if __name__ == "__main__":
    main()
