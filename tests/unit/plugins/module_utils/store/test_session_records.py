"""A phone's last session, as its status shows it (``capf_phone``, the per-phone report), is the newest
session recorded for that device, and finding it costs the same whatever the number of other
sessions: a store that has served a fleet for years holds millions of session rows, and a phone that
never connected must not have its status read by walking all of them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from _opencapf.store import sessions as session_records
from support.stores import vm_steps

DEVICES = (0, 1, 2)  # each example's own devices: the store lives through every example of the test
STARTS = ("2026-03-01T10:00:00Z", "2026-03-01T10:00:01Z", "2026-05-17T23:59:59Z")


def _record(tx, device_name: str, started_at: str, session_id: int, outcome: str = "succeeded") -> None:
    session_records.record(tx, "test", session_id=session_id, device_name=device_name, peer="192.0.2.7:50000",
                           operation="install_upgrade", outcome=outcome, reason="", started_at=started_at,
                           duration_ms=120)


@pytest.mark.both_backends
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sessions=st.lists(st.tuples(st.sampled_from(DEVICES), st.sampled_from(STARTS),
                                   st.sampled_from(("succeeded", "failed", "no_operation"))), max_size=8))
def test_a_phone_s_last_session_is_its_newest_by_start_then_by_record(store, sessions):
    with store.transaction() as tx:
        first = tx.scalar("SELECT COALESCE(MAX(session_id), 0) FROM sessions") + 1
        names = [f"SEP{first:08X}{device:04X}" for device in DEVICES + (9,)]
        for offset, (device, started_at, outcome) in enumerate(sessions):
            _record(tx, names[device], started_at, first + offset, outcome)
    with store.read() as tx:
        for device, name in enumerate(names):
            mine = [(started_at, first + offset, outcome)
                    for offset, (of, started_at, outcome) in enumerate(sessions) if of == device]
            found = session_records.last_for_device(tx, name.lower())
            newest = max(mine, default=None)
            assert ((found["started_at"], found["outcome"]) if found else None) == \
                ((newest[0], newest[2]) if newest else None)


def test_finding_a_phone_s_last_session_does_not_walk_the_other_devices_sessions(sqlite_store):
    store = sqlite_store
    """SQLite's virtual machine steps, counted by its progress handler, for the last session of a
    device with none and of one with a single old session, among 20,000 sessions of other devices."""
    with store.transaction() as tx:
        for index in range(20000):
            _record(tx, f"SEP{index % 400:012X}", f"2026-04-{1 + index // 1000:02d}T00:00:00Z", index + 1)
        _record(tx, "SEP00000000A001", "2026-01-01T00:00:00Z", 20001)
    steps = []
    with store.read() as tx:
        for device in ("SEP00000000A001", "SEP00000000B999"):
            with vm_steps(store) as counted:
                found = session_records.last_for_device(tx, device)
            steps.append(counted[0])
            assert (found["started_at"] if found else None) == ("2026-01-01T00:00:00Z" if device.endswith("A001")
                                                                else None)
    # Reading the device's own index entries takes a few hundred steps; walking 20,000 rows, about a million.
    assert max(steps) < 2000, steps
