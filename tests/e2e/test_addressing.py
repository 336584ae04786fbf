"""Table 2 of the source (phone IP mode x phone addresses x CAPF addresses) over real IPv4 and
IPv6 loopback sockets, and the enable_ipv6 service parameter."""

from __future__ import annotations

import pytest

from support.protocol import HAS_IPV6_LOOPBACK, RunningServer, add_phone
from support.phones import phone, run_enrol
from _opencapf.simulator.addressing import TABLE_2, plan
from _opencapf.store import service as service_records

pytestmark = pytest.mark.skipif(not HAS_IPV6_LOOPBACK, reason="this host has no IPv6 loopback (::1)")
LOOPBACK = {4: "127.0.0.1", 6: "::1"}
ROWS = [(mode, tuple(sorted(phone_families)), tuple(sorted(capf_families)), order)
        for (mode, phone_families, capf_families), order in TABLE_2.items()]


def _ids(row):
    mode, phone_families, capf_families, _order = row
    return f"{mode}-phone{''.join(map(str, phone_families))}-capf{''.join(map(str, capf_families))}"


def test_the_table_has_every_row_of_the_source():
    assert len(ROWS) == 15
    assert plan("dual", {4, 6}, {4, 6}) == (6, 4)
    assert plan("dual", {6}, {4, 6}) == (6, 4)  # kept as the source states it
    assert plan("ipv6", {6}, {4}) == ()


@pytest.fixture
def dual_store(ca_store):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"enable_ipv6": True})
    return ca_store


@pytest.mark.parametrize("row", ROWS, ids=[_ids(row) for row in ROWS])
def test_table_2_row(dual_store, store_path, tmp_path, row):
    mode, phone_families, capf_families, order = row
    server = RunningServer(store_path, [LOOPBACK[family] for family in capf_families])
    try:
        name = "SEP0000000000A1"
        add_phone(dual_store, name, operation="install_upgrade", key_order="ec")
        identity = phone(tmp_path, name, ip_mode=mode, phone_families=list(phone_families))
        result = run_enrol(identity, server, addresses=[LOOPBACK[f] for f in capf_families])
        with dual_store.read() as tx:
            sessions = tx.query("SELECT peer FROM sessions WHERE device_name = ?", (name,))
    finally:
        server.stop()
    if not order:
        assert result.outcome == "cannot_connect" and result.tried == []
        assert sessions == []
        return
    assert result.outcome == "ok"
    assert result.address == LOOPBACK[order[0]]
    (session,) = sessions
    assert session["peer"].startswith("[::1]") if order[0] == 6 else session["peer"].startswith("127.0.0.1:")


@pytest.mark.parametrize("phone_families", [(4, 6), (6,)])
def test_dual_stack_falls_back_to_ipv4_when_ipv6_fails(dual_store, store_path, tmp_path, phone_families):
    server = RunningServer(store_path, ["127.0.0.1"])  # CAPF's IPv6 address does not answer
    try:
        add_phone(dual_store, "SEP0000000000A2", operation="install_upgrade", key_order="ec")
        identity = phone(tmp_path, "SEP0000000000A2", ip_mode="dual", phone_families=list(phone_families))
        result = run_enrol(identity, server, addresses=["127.0.0.1", "::1"])
    finally:
        server.stop()
    assert result.outcome == "ok"
    assert result.tried == ["::1", "127.0.0.1"]


def test_ipv6_disabled_does_not_listen_on_ipv6(ca_store, store_path, caplog):
    server = RunningServer(store_path, ["127.0.0.1", "::1"])
    try:
        assert [host for host, _port in server.bound] == ["127.0.0.1"]
    finally:
        server.stop()
    assert "enable_ipv6 service parameter is false" in caplog.text


def test_ipv6_disabled_at_run_time_refuses_ipv6_peers(dual_store, store_path, tmp_path, caplog):
    server = RunningServer(store_path, ["127.0.0.1", "::1"])
    try:
        add_phone(dual_store, "SEP0000000000A3", operation="install_upgrade", key_order="ec")
        with dual_store.transaction() as tx:  # applies to the next session, no restart
            service_records.write(tx, "test", {"enable_ipv6": False})
        identity = phone(tmp_path, "SEP0000000000A3", ip_mode="ipv6", phone_families=[6])
        result = run_enrol(identity, server, addresses=["::1"])
        with dual_store.read() as tx:
            (session,) = tx.query("SELECT outcome, reason, peer FROM sessions")
    finally:
        server.stop()
    assert result.outcome == "communication_failure"
    assert (session["outcome"], session["reason"]) == ("refused", "IPv6 is disabled")
    assert "refused IPv6 peer" in caplog.text
