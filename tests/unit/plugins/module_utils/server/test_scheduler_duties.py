"""The scheduler's tick: its duties stand apart.

Invariant: whatever one duty of a tick raises (a job, a directory sync, a defect of ours), every
other duty of the tick still runs: expired LSCs are revoked, the CRLs signed and published, the
renewals scheduled and the monitor run, so that a failure that repeats at every tick never leaves the
relying parties with a CRL past its nextUpdate. Only a store that cannot be reached at all ends the
tick, at its first read, before any duty."""

from __future__ import annotations

import logging

import pytest

from support.crl_http import active_crl
from _opencapf.errors import CapfError, StoreError
from _opencapf.server import scheduling
from _opencapf.store import service as service_records

pytestmark = pytest.mark.both_backends

FAILURES = {
    "a defect": RuntimeError("a defect of ours"),
    "a refused input": CapfError("directory corp: bind refused"),
}


def _tick(store) -> None:
    part = scheduling.Scheduling(store)
    try:
        part.tick()
    finally:
        part.close()


@pytest.mark.parametrize("failing", ["scheduler", "directory"])
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failing_duty_leaves_the_crls_and_the_monitor_to_run(ca_store, tmp_path, monkeypatch, caplog,
                                                               failing, failure):
    crl_path = tmp_path / "capf.crl"
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"crl_path": str(crl_path)})
    assert active_crl(ca_store) is None

    def fails(*_args, **_kwargs):
        raise FAILURES[failure]

    monkeypatch.setattr(getattr(scheduling, failing), "run_due", fails)
    with caplog.at_level(logging.WARNING, logger="opencapf.server"):
        _tick(ca_store)
    crl = active_crl(ca_store)
    assert crl is not None  # the revocation duty signed the first CRL after the failure
    assert crl_path.read_bytes() == crl["der"]  # and the CRL file was published
    name = {"scheduler": "scheduled jobs", "directory": "directory syncs"}[failing]
    said = [record.getMessage() for record in caplog.records if record.getMessage().startswith(f"scheduler: {name}")]
    shown = FAILURES[failure] if isinstance(FAILURES[failure], CapfError) else "internal error"
    assert said == [f"scheduler: {name}: {shown}"]


def test_a_duty_that_fails_on_the_store_leaves_the_others_to_run(ca_store, monkeypatch, caplog):
    """A ``StoreError`` of one duty (a directory's bind password that no longer decrypts, say) is that
    duty's: the CRLs are still signed."""
    def undecryptable(*_args, **_kwargs):
        raise StoreError("secret directory.corp.bind_password cannot be decrypted with this store's key")

    monkeypatch.setattr(scheduling.directory, "run_due", undecryptable)
    with caplog.at_level(logging.WARNING, logger="opencapf.server"):
        _tick(ca_store)
    assert active_crl(ca_store) is not None
    assert [record.getMessage() for record in caplog.records if "directory syncs" in record.getMessage()] == [
        "scheduler: directory syncs: secret directory.corp.bind_password cannot be decrypted with this store's key"]


def test_a_stopping_process_takes_up_no_duty_it_does_not_lead(ca_store, monkeypatch):
    """When every worker of a service stops, the one that stops last must not take the lead the first
    gave up and start duties on its way out; a stopping process that leads keeps its duties to the end."""
    ran = []
    monkeypatch.setattr(scheduling.scheduler, "run_due", lambda store: ran.append(store) or [])
    first, second = scheduling.Scheduling(ca_store), scheduling.Scheduling(ca_store)
    try:
        first.tick()
        assert first.leading and len(ran) == 1
        second.tick()
        assert not second.leading and len(ran) == 1
        first.stopping.set()
        first.tick()  # it leads already: its duties go on
        assert len(ran) == 2
        second.stopping.set()
        first.close()  # the lead is free
        second.tick()
        assert not second.leading and len(ran) == 2
    finally:
        first.close()
        second.close()
    again = scheduling.Scheduling(ca_store)
    try:
        again.tick()  # a process not stopping takes the free lead
        assert again.leading and len(ran) == 3
    finally:
        again.close()
