"""A directory sync while one of a phone's sessions is under way, or while an operator changes the same
phone, never leaves an untrue result: against a real slapd, on both stores.

* Whatever the sync does to the phone (re-applies the template unchanged, declares another operation
  through a changed template, removes the phone whose entry left, or puts back the operation an
  operator changed) and between whichever two exchanges of the session it comes, no operation is left
  ``in_progress``; an operation the sync declared during the session is still to be done when the
  session ends; a phone the sync removed gets nothing of the session recorded; the sync's lists of
  changed and removed devices are what the store shows of that phone.
* A CSR the online CA holds for the phone is failed (``csr.failed``, ``via: ldap``) by a sync that
  withdraws its operation or removes the phone, and no longer listed as pending.

The session is the service's own sans-I/O ``ServerSession`` with its ``StoreDecider`` and the
simulator's ``PhoneSession`` (``support.sessions.SessionLeg``), driven an exchange at a time."""

from __future__ import annotations

import pytest

from support.protocol import certificate_rows, phone_row
from support.sessions import SessionLeg
from support.slapd import SYNC_DN
from support.third_party_ca import PASSWORD, USERNAME, EnterprisePki, pem
from _opencapf import directory, phone_config, service_config, templates, trust
from _opencapf.protocol.constants import XCAPS_ALL
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import audit
from _opencapf.store import csrs as csr_records

pytestmark = pytest.mark.both_backends

INSTALL = {"certificate_operation": "install_upgrade", "key_order": "ec", "description": "Jabber of {user}"}
# The operation a session ran, by what the server asked of the phone.
RAN = {"install": "install_upgrade", "delete": "delete", "fetch": "troubleshoot", "": "none"}
CHANGES = ("same template", "template declares none", "entry removed", "operator's change put back")


def _directory(store, server, user: str) -> dict:
    base = server.new_base({user: ()})
    templates.define(store, "jabber", INSTALL)
    config = {"name": "corp", "urls": [server.ldaps_url], "ca_file": server.ca_file, "bind_dn": SYNC_DN,
              "search_base": base, "device_template": "jabber", "reapply_template": True,
              "absent_devices": "remove"}
    result = directory.sync(store, config, bind_password=server.sync_password)
    assert result["devices"]["created"] == [f"CSF{user.upper()}"]
    return config


def _change(store, server, config: dict, name: str, change: str) -> dict:
    """The change, ending with a sync; returns the sync's result and the phone before and after it."""
    if change == "template declares none":
        templates.define(store, "jabber", dict(INSTALL, certificate_operation="none"))
    elif change == "entry removed":
        server.remove_user(name[3:].lower(), base=config["search_base"])
    elif change == "operator's change put back":
        phone_config.converge(store, name, settings={"certificate_operation": "delete"})
    before = phone_row(store, name)
    result = directory.sync(store, config, bind_password=server.sync_password)
    after = phone_row(store, name)
    changed = before is not None and after is not None and before != after
    assert result["devices"]["changed"] == ([name] if changed else []), (result["devices"], before, after)
    assert result["devices"]["removed"] == ([name] if after is None else [])
    return {"result": result, "before": before, "after": after}


@pytest.mark.parametrize("at", range(7))
@pytest.mark.parametrize("change", CHANGES)
def test_a_sync_during_a_session_leaves_a_true_result(ca_store, slapd_server, change, at):
    user = f"s{CHANGES.index(change)}a{at}"
    name = f"CSF{user.upper()}"
    config = _directory(ca_store, slapd_server, user)
    leg = SessionLeg(ca_store, PhoneIdentity(PhoneSettings(name)), 1)
    outcome, steps, now, events = None, 0, 0.0, []
    while not leg.done:
        if steps == at:
            outcome = _change(ca_store, slapd_server, config, name, change)
        now += 0.01
        steps += 1
        events.append(leg.step(now))
    during = outcome is not None
    if not during:  # the session ended first
        outcome = _change(ca_store, slapd_server, config, name, change)
    phone = phone_row(ca_store, name)
    context = (change, at, events, phone and (phone["operation"], phone["operation_status"],
                                              phone["operation_reason"]))
    if change == "entry removed":
        assert phone is None, context
        with ca_store.read() as tx:
            late = [row for row in audit.events(tx, subject=name) if row["actor"] != "test"]
        assert all(row["id"] < _removal_id(ca_store, name) for row in late), (context, late)
        return
    assert phone["operation_status"] != "in_progress", context
    if not during:
        assert (phone["operation"], phone["operation_status"]) == {
            "same template": ("install_upgrade", "succeeded"), "template declares none": ("none", "none"),
            "operator's change put back": ("install_upgrade", "pending")}[change], context
        return
    ran = RAN[leg.phone.result.operation]
    if ran == "none":
        assert phone["operation_status"] == ("none" if phone["operation"] == "none" else "pending"), context
    elif phone["operation"] != ran:
        # The sync declared another operation while the session ran: it is still to be done.
        assert phone["operation_status"] == ("none" if phone["operation"] == "none" else "pending"), context
    elif "installed" in events:
        assert phone["operation_status"] == "succeeded", context
    else:
        # Pending still, or failed: a session settles only an operation nobody touched since it read the phone.
        assert phone["operation_status"] in ("failed", "pending"), context
    with ca_store.read() as tx:
        succeeded = [row["details"] for row in audit.events(tx, action="phone.operation_succeeded", subject=name)]
    # An operation reported succeeded is one the phone carried out; the LSC installed is the one it holds.
    assert all(item["operation"] == ran and "installed" in events for item in succeeded), (context, succeeded)
    assert bool(succeeded) == (phone["operation_status"] == "succeeded"), (context, succeeded)
    installed = [row["serial"] for row in certificate_rows(ca_store, name) if row["status"] == "installed"]
    assert installed == ([leg.issued] if "installed" in events else []), (context, installed)


def _removal_id(store, name: str) -> int:
    with store.read() as tx:
        return max(row["id"] for row in audit.events(tx, action="phone.delete", subject=name))


def _pending(store) -> list[str]:
    """The devices with a CSR still at the CA."""
    with store.read() as tx:
        return [row["device_name"] for row in csr_records.listing(tx, None) if row["status"] == "pending"]


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki()


@pytest.mark.parametrize("change", ["template declares none", "entry removed"])
def test_a_sync_that_withdraws_the_operation_fails_the_csr_the_ca_holds(ca_store, slapd_server, pki, est, change):
    trust.converge(ca_store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    service_config.converge(ca_store, parameters_wanted={"issuer": "online_ca"},
                            online_ca={"hostname": "localhost", "port": est.port, "type": "est",
                                       "username": USERNAME, "password": PASSWORD})
    user = f"held{CHANGES.index(change)}"
    name = f"CSF{user.upper()}"
    config = _directory(ca_store, slapd_server, user)
    est.pending_first = 10 ** 6  # the CA holds the request
    leg = SessionLeg(ca_store, PhoneIdentity(PhoneSettings(name)), 1, x_caps=XCAPS_ALL)
    for step in range(4):
        leg.step(0.01 * (step + 1))
    assert leg.done and _pending(ca_store) == [name]
    _change(ca_store, slapd_server, config, name, change)
    assert _pending(ca_store) == []
    with ca_store.read() as tx:
        failed = [row["details"] for row in audit.events(tx, action="csr.failed", subject=name)]
    assert len(failed) == 1 and failed[0]["via"] == "ldap", failed
