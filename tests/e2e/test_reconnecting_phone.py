"""Two sessions of one phone at once, over TLS: the phone ends up holding the LSC it stored last, and the
store, the CLI and the renewal scheduler all name that LSC as its current one.

A phone whose connection dropped reconnects while the service still waits in the old session; both get
an LSC, and the phone may answer them in the other order than the service issued them. The property
over every interleaving, on the service's own sessions: tests/unit/plugins/module_utils/server/
test_overlapping_sessions.py."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from support.phones import SteppedConnection, phone
from support.protocol import RunningServer, add_phone
from support.tools import run_cli
from _opencapf import renewal
from _opencapf.protocol.constants import Command
from _opencapf.store import service as service_records
from _opencapf.vocabulary import parse_utc

NAME = "SEP00000000D0D0"


@pytest.fixture
def server(ca_store):
    running = RunningServer(ca_store, ["127.0.0.1"], step_timeout=10.0)
    yield running
    running.stop()


def _cli_json(store, *args):
    result = run_cli("--store", store.location, "--state-dir", store.state_dir, "--json", *args, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("answered", ["in the order issued", "in the other order"])
def test_the_lsc_the_phone_stored_last_is_its_current_one(server, ca_store, tmp_path, answered):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    with ca_store.transaction() as tx:
        # A year: an LSC of the default 1825 days ends with the CAPF certificate made just before it,
        # and renewal holds such an LSC back (a new one would end no later).
        service_records.write(tx, "test", {"renew_before_days": 30, "validity_days": 365})
    identity = phone(tmp_path, NAME)
    first = SteppedConnection(server.port, identity)
    first.until(Command.STORE_CERTIFICATE_REQUEST)  # the first LSC is issued and on its way
    second = SteppedConnection(server.port, identity)
    second.until(Command.STORE_CERTIFICATE_REQUEST)  # the phone reconnected: a second LSC
    for connection in (first, second) if answered == "in the order issued" else (second, first):
        connection.answer_and_end()
    held = format(identity.lsc.serial_number, "x")

    shown = _cli_json(ca_store, "phones", "show", NAME)["lsc"]
    assert (shown["serial"], shown["status"]) == (held, "installed")
    listed = _cli_json(ca_store, "phones", "list", "--lsc-status", "installed")
    assert [(row["device_name"], row["lsc"]["serial"]) for row in listed] == [(NAME, held)]
    # The other LSC left the phone: revoked, or stale if it was never installed.
    with ca_store.read() as tx:
        statuses = {row["serial"]: row["status"] for row in tx.query(
            "SELECT serial, status FROM certificates WHERE kind = 'lsc'")}
    assert statuses.pop(held) == "installed" and list(statuses.values()) in (["revoked"], ["stale"])
    # Renewal (renew_before_days 30) takes the held LSC for the phone's current one: due within 30 days
    # of its expiry, not before. ``renew run`` acts as at the host's clock, at most (a year before the
    # expiry); the renewal scheduler itself as at the later times.
    assert _cli_json(ca_store, "renew", "run")["scheduled"] == []
    expires = parse_utc(shown["not_after"], "not_after")
    for days_before, due in ((60, []), (10, [NAME])):
        renewed = renewal.run(ca_store, expires - dt.timedelta(days=days_before))
        assert [item["name"] for item in renewed["scheduled"]] == due
