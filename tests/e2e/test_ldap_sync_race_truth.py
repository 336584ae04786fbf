"""Syncs of one directory at once never put its older state back: a property over any interleaving of
several syncs of one directory (each of its own store connection, as the service's scheduler, an
operator's CLI and other hosts of one PostgreSQL store have), with the directory changed between their
reads, against a real slapd, on both stores.

Each sync reads the directory, then waits until the example lets it apply. Invariant: after every
apply, the directory's devices in the store (phones, their description from the entry, and the
devices the directory records) are exactly what the newest reading applied so far says; so a sync
whose reading is older than one already applied changes nothing and says so (``superseded``), and
after all the syncs the store says what the newest reading of the directory said.

A bind password given to a sync is the operator's word that it is the one to bind with: it is kept when
that sync's bind with it succeeded, even when a later reading applied first and the sync applied nothing
else. Invariant: whenever a sync ends, the store keeps the password given to the sync of the latest ticket
among those that were given one, bound with it and ended; no audit event holds a password.
"""

from __future__ import annotations

import itertools
import logging
import threading

import ldap3
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.slapd import SYNC_DN, ssha
from _opencapf import directory, secretbox, templates
from _opencapf.cli.main import main
from _opencapf.server import scheduling
from _opencapf.store import open_store
from _opencapf.store import directories as directory_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import format_utc, utc_now

KEYS = 3  # entries per example
CNS = ("Ann", "Bob", "Cy")
PENDING = 4  # syncs read and waiting to apply, at most
WAIT = 60  # seconds a step may take before the test gives up on a sync thread
_examples = itertools.count(1)

STEPS = st.one_of(
    st.tuples(st.just("put"), st.integers(0, KEYS - 1), st.integers(0, 1), st.integers(0, len(CNS) - 1)),
    st.tuples(st.just("cn"), st.integers(0, KEYS - 1), st.integers(0, len(CNS) - 1)),
    st.tuples(st.just("delete"), st.integers(0, KEYS - 1)),
    st.tuples(st.just("read"), st.sampled_from(["config", "stored"])),
    st.tuples(st.just("apply"), st.integers(0, PENDING - 1)),
)


class Directory:
    """The example's entries in slapd and the model of them: key -> (device variant, cn)."""

    def __init__(self, server, example: int):
        self.server, self.example = server, example
        self.base = server.new_base()
        self.entries: dict[int, tuple[int, str]] = {}

    def dn(self, key: int) -> str:
        return f"uid=k{key}x{self.example},{self.base}"

    def number(self, key: int, variant: int) -> str:
        return f"{key}v{variant}x{self.example}"

    def put(self, key: int, variant: int, cn: int) -> None:
        with self.server.admin() as connection:
            if key in self.entries:
                connection.delete(self.dn(key))
            attributes = {"uid": f"k{key}x{self.example}", "cn": CNS[cn], "sn": "Doe",
                          "employeeNumber": self.number(key, variant)}
            connection.add(self.dn(key), ["inetOrgPerson"], attributes)
        self.entries[key] = (variant, CNS[cn])

    def set_cn(self, key: int, cn: int) -> None:
        if key in self.entries:
            with self.server.admin() as connection:
                connection.modify(self.dn(key), {"cn": [(ldap3.MODIFY_REPLACE, [CNS[cn]])]})
            self.entries[key] = (self.entries[key][0], CNS[cn])

    def delete(self, key: int) -> None:
        if self.entries.pop(key, None) is not None:
            with self.server.admin() as connection:
                connection.delete(self.dn(key))

    def config(self) -> dict:
        return {"name": f"race{self.example}", "urls": [self.server.ldaps_url], "ca_file": self.server.ca_file,
                "bind_dn": SYNC_DN, "search_base": self.base, "user_attribute": "employeeNumber",
                "device_template": "race", "reapply_template": True, "absent_devices": "remove"}

    def says(self) -> dict:
        """What the store must hold of this directory after applying a reading of it now."""
        return {f"CSF{self.number(key, variant)}".upper(): (self.dn(key), f"Of {cn}")
                for key, (variant, cn) in self.entries.items()}


class Gates:
    """Holds each sync thread between its reading of the directory and its application of it."""

    def __init__(self, monkeypatch):
        self._real = directory.read_entries
        monkeypatch.setattr(directory, "read_entries", self._read)

    def _read(self, config, password):
        entries = self._real(config, password)
        gate = getattr(threading.current_thread(), "gate", None)
        if gate is not None:
            gate["read"].set()
            assert gate["go"].wait(WAIT), "never let apply"
        return entries

    @staticmethod
    def start(run) -> dict:
        """Run ``run()`` in a thread until it has read the directory; the gate lets it apply (``finish``)."""
        gate = {"read": threading.Event(), "go": threading.Event(), "result": None, "error": None}

        def body():
            try:
                gate["result"] = run()
            except BaseException as exc:  # pylint: disable=broad-except
                gate["error"] = exc  # raised by start or finish
            finally:
                gate["read"].set()

        thread = threading.Thread(target=body, daemon=True)
        thread.gate = gate
        gate["thread"] = thread
        thread.start()
        assert gate["read"].wait(WAIT), "the sync never read the directory"
        if gate["error"] is not None:
            raise AssertionError(f"the sync failed: {gate['error']!r}") from gate["error"]
        return gate

    @staticmethod
    def finish(gate: dict):
        gate["go"].set()
        gate["thread"].join(WAIT)
        assert not gate["thread"].is_alive(), "the sync never finished"
        if gate["error"] is not None:
            raise AssertionError(f"the sync failed: {gate['error']!r}") from gate["error"]
        return gate["result"]


def _held(store, model: Directory) -> dict:
    """What the store holds of the directory: its devices with their entry DN and description."""
    suffix = f"X{model.example}"
    with store.read() as tx:
        row = directory_records.get(tx, model.config()["name"])
        owned = directory_records.devices(tx, row["id"]) if row is not None else {}
        phones = {name: phone["description"] for name, phone in phone_records.by_name(tx).items()
                  if name.endswith(suffix)}
    assert set(phones) == set(owned), (phones, owned)
    return {device: (dn, phones[device]) for device, dn in owned.items()}


def _syncing(store, model: Directory, via: str):
    return _syncing_as(store, model.config(), via, model.server.sync_password)


@pytest.fixture
def store(store_on_both):
    templates.define(store_on_both, "race", {"certificate_operation": "none", "description": "Of {cn}"})
    return store_on_both


@pytest.fixture
def gates(monkeypatch):
    return Gates(monkeypatch)


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEPS, min_size=1, max_size=12), order=st.lists(st.integers(0, PENDING - 1), max_size=PENDING))
# The sync that read first applies last: it must not put the older directory back.
@example(steps=[("put", 0, 0, 0), ("read", "config"), ("cn", 0, 1), ("put", 1, 0, 0), ("read", "config"),
                ("apply", 1)], order=[0])
# Three at once (the scheduler's stored configuration among them), a device renamed and one deleted between.
@example(steps=[("put", 0, 0, 0), ("put", 1, 0, 1), ("read", "config"), ("apply", 0), ("put", 0, 1, 2),
                ("read", "stored"), ("delete", 1), ("read", "config"), ("apply", 1)], order=[1, 0])
def test_no_sync_puts_an_older_directory_back(store, slapd_server, gates, steps, order):
    model = Directory(slapd_server, next(_examples))
    pending: list[tuple[int, dict]] = []  # (reading number, gate), oldest first
    readings: list[dict] = []  # what the directory said at each sync's reading
    newest_applied = None
    directory_exists = False

    def apply(index: int) -> None:
        nonlocal newest_applied, directory_exists
        reading, gate = pending.pop(index % len(pending))
        result = gates.finish(gate)
        superseded = newest_applied is not None and newest_applied > reading
        newest_applied = reading if not superseded else newest_applied
        directory_exists = True
        assert _held(store, model) == readings[newest_applied], (
            f"reading {reading} applied after reading {newest_applied}: the store went back to an older directory")
        assert bool(result.get("superseded")) is superseded, result
        if superseded:
            assert not result["changed"] and not any(result["devices"].values()), result
            assert any("superseded" in warning for warning in result["warnings"]), result["warnings"]

    try:
        for step in steps + [("read", "config")]:
            kind = step[0]
            if kind == "put":
                model.put(*step[1:])
            elif kind == "cn":
                model.set_cn(*step[1:])
            elif kind == "delete":
                model.delete(step[1])
            elif kind == "read" and len(pending) < PENDING:
                via = step[1] if directory_exists else "config"
                readings.append(model.says())
                pending.append((len(readings) - 1, gates.start(_syncing(store, model, via))))
            elif kind == "apply" and pending:
                apply(step[1])
        for index in order + [0] * len(pending):
            if pending:
                apply(index)
        assert _held(store, model) == readings[-1], "after every sync, the store is not the newest reading"
    finally:
        for _reading, gate in pending:
            gate["go"].set()
            gate["thread"].join(WAIT)


def test_a_superseded_scheduled_sync_is_no_failure(store, slapd_server, gates, caplog):
    """The scheduler's sync that read before an operator's applies nothing, is logged as superseded, and
    is neither an error nor the directory's last result; the operator's sync stands."""
    caplog.set_level(logging.INFO)
    model = Directory(slapd_server, next(_examples))
    model.put(0, 0, 0)
    earlier = format_utc(utc_now())
    config = dict(model.config(), sync_interval_minutes=5)
    directory.sync(store, config, bind_password=slapd_server.sync_password, now=earlier)
    due = open_store(store.location, state_dir=store.state_dir, actor="scheduler")
    try:
        scheduled = gates.start(lambda: directory.run_due(due, format_utc(utc_now().replace(year=2100))))
        model.set_cn(0, 1)
        operator = directory.sync(store, config, bind_password=slapd_server.sync_password)
        assert operator["devices"]["changed"] and not operator.get("superseded")
        outcomes = gates.finish(scheduled)
    finally:
        due.close()
    assert _held(store, model) == model.says(), "the scheduler's older reading was applied last"
    [outcome] = outcomes
    assert outcome.get("superseded") and "error" not in outcome, outcome
    with store.read() as tx:
        row = directory_records.get(tx, config["name"])
        events = tx.query("SELECT action, actor FROM audit_events WHERE action LIKE 'directory.%' ORDER BY id")
    assert row["last_result"]["changed"] == 1 and "error" not in row["last_result"], row["last_result"]
    assert events[-2:] == [{"action": "directory.sync", "actor": "test"},
                           {"action": "directory.sync_superseded", "actor": "scheduler"}], events
    scheduling._log_directories(outcomes)  # pylint: disable=protected-access
    line = [record for record in caplog.records if "superseded" in record.getMessage()]
    assert line and all(record.levelno == logging.INFO for record in line), caplog.text


def test_the_cli_says_its_sync_was_superseded(store, slapd_server, gates, capsys):
    """``opencapf ldap sync`` whose reading another sync overtook prints that it applied nothing, exit 0."""
    model = Directory(slapd_server, next(_examples))
    model.put(0, 0, 0)
    config = model.config()
    directory.sync(store, config, bind_password=slapd_server.sync_password)
    argv = ["--store", store.location, "--state-dir", store.state_dir, "ldap", "sync", "--name", config["name"]]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENCAPF_LDAP_BIND_PASSWORD", slapd_server.sync_password)
        cli = gates.start(lambda: main(argv))
        model.set_cn(0, 2)
        directory.sync(store, config, bind_password=slapd_server.sync_password)
        assert gates.finish(cli) == 0
    assert _held(store, model) == model.says(), "the CLI's older reading was applied last"
    out = capsys.readouterr().out
    assert "superseded" in out and "applied nothing" in out, out


def test_a_scheduled_sync_never_puts_back_a_configuration_an_operator_replaced(store, slapd_server, gates):
    """The scheduler took up the stored configuration and read the directory; meanwhile an operator's sync
    (which began to read first) replaced the configuration and applied. The scheduler's sync applies
    nothing: the operator's configuration stays the stored one, and it says why."""
    model = Directory(slapd_server, next(_examples))
    model.put(0, 0, 0)
    old = dict(model.config(), sync_interval_minutes=5)
    new = dict(old, sync_interval_minutes=60, absent_devices="report")
    directory.sync(store, old, bind_password=slapd_server.sync_password, now=format_utc(utc_now()))
    due = open_store(store.location, state_dir=store.state_dir, actor="scheduler")
    try:
        operator = gates.start(_syncing_as(store, new, "config", slapd_server.sync_password))  # its ticket first
        scheduled = gates.start(lambda: directory.run_due(due, format_utc(utc_now().replace(year=2100))))
        assert not gates.finish(operator).get("superseded")
        outcomes = gates.finish(scheduled)
    finally:
        due.close()
    with store.read() as tx:
        row = directory_records.get(tx, old["name"])
        events = tx.query("SELECT action, actor, details FROM audit_events WHERE action LIKE 'directory.%' "
                          "ORDER BY id")
    assert row["config"]["sync_interval_minutes"] == 60 and row["config"]["absent_devices"] == "report", \
        "the scheduler's sync put the older configuration back"
    assert outcomes == [{"name": old["name"], "superseded": True}], outcomes
    assert events[-1]["action"] == "directory.sync_superseded" and events[-1]["actor"] == "scheduler", events
    assert "configuration was replaced" in str(events[-1]["details"]), events[-1]
    assert _held(store, model) == model.says()


PASSWORDS = 3  # passwords of an example's service account, any of them accepted at a time

PASSWORD_STEPS = st.one_of(
    st.tuples(st.just("accept"), st.integers(0, PASSWORDS - 1)),
    st.tuples(st.just("refuse"), st.integers(0, PASSWORDS - 1)),
    st.tuples(st.just("read"), st.sampled_from(["config", "stored"]), st.none() | st.integers(0, PASSWORDS - 1)),
    st.tuples(st.just("apply"), st.integers(0, PENDING - 1)),
)


class Account:
    """The example's service account in slapd: the passwords it accepts (a password being changed: the
    old and the new accepted at once)."""

    def __init__(self, model: Directory):
        self.server, self.dn = model.server, f"uid=svc{model.example},{model.base}"
        self.passwords = [f"bind-{index}-{model.example}-secret" for index in range(PASSWORDS)]
        self.accepted = {0}
        with self.server.admin() as connection:
            connection.add(self.dn, ["account", "simpleSecurityObject"],
                           {"uid": f"svc{model.example}", "userPassword": ssha(self.passwords[0])})

    def accept(self, index: int, accepted: bool) -> None:
        wanted = self.accepted | {index} if accepted else self.accepted - {index}
        if wanted and wanted != self.accepted:  # the account keeps one password at least
            self.accepted = wanted
            with self.server.admin() as connection:
                connection.modify(self.dn, {"userPassword": [(ldap3.MODIFY_REPLACE,
                                                              [ssha(self.passwords[i]) for i in sorted(wanted)])]})


def _stored_password(store, name: str) -> str | None:
    with store.read() as tx:
        return secretbox.get(tx, store.secret(), f"directory:{name}:bind_password")


def _syncing_as(store, config: dict, via: str, password: str | None):
    def run():
        own = open_store(store.location, state_dir=store.state_dir, actor=f"sync-{via}")
        try:
            if via == "stored":
                return directory.sync_stored(own, config["name"], bind_password=password)
            return directory.sync(own, config, bind_password=password)
        finally:
            own.close()
    return run


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(PASSWORD_STEPS, min_size=1, max_size=10),
       order=st.lists(st.integers(0, PENDING - 1), max_size=PENDING))
# The password is being changed: the sync given the new one read first, the scheduler's (with the stored
# old one) read after it and applied first. The new password must be kept.
@example(steps=[("accept", 1), ("read", "stored", 1), ("read", "stored", None), ("apply", 1)], order=[0])
# Two operators give two new passwords; the later-given one stands, whichever applies last.
@example(steps=[("accept", 1), ("accept", 2), ("read", "config", 1), ("read", "config", 2), ("read", "stored", None),
                ("apply", 2), ("apply", 1)], order=[0])
def test_a_given_bind_password_is_kept_exactly_when_its_bind_succeeded(store, slapd_server, gates, steps, order):
    model = Directory(slapd_server, next(_examples))
    account = Account(model)
    config = dict(model.config(), bind_dn=account.dn, sync_interval_minutes=60)
    directory.sync(store, config, bind_password=account.passwords[0])
    stored = 0  # the index of the password the store must keep
    newest_given = 0  # the latest ticket among the ended syncs given a password that bound
    pending: list[tuple[int, int | None, dict]] = []  # (ticket, index of the password given or None, gate)
    tickets = itertools.count(2)

    def end(index: int) -> None:
        nonlocal stored, newest_given
        ticket, given, gate = pending.pop(index % len(pending))
        gates.finish(gate)
        if given is not None and ticket > newest_given:
            stored, newest_given = given, ticket
        assert _stored_password(store, config["name"]) == account.passwords[stored], (
            f"the sync of ticket {ticket} given password {given} ended: the store must keep password {stored}")

    try:
        for step in steps:
            kind = step[0]
            if kind in ("accept", "refuse"):
                account.accept(step[1], kind == "accept")
            elif kind == "read" and len(pending) < PENDING:
                _kind, via, given = step
                ticket = next(tickets)
                binds = (stored if given is None else given) in account.accepted
                run = _syncing_as(store, config, via, None if given is None else account.passwords[given])
                try:
                    gate = gates.start(run)
                except AssertionError as exc:
                    assert not binds, f"the sync of ticket {ticket} failed: {exc.__cause__!r}"
                    assert getattr(exc.__cause__, "field", None) == "bind_password", repr(exc.__cause__)
                    continue
                assert binds, f"the sync of ticket {ticket} bound with a password the account refuses"
                pending.append((ticket, given, gate))
            elif kind == "apply" and pending:
                end(step[1])
        for index in order + [0] * len(pending):
            if pending:
                end(index)
    finally:
        for _ticket, _given, gate in pending:
            gate["go"].set()
            gate["thread"].join(WAIT)
    with store.read() as tx:
        details = " ".join(str(row["details"]) for row in tx.query("SELECT details FROM audit_events"))
    assert not [password for password in account.passwords if password in details], "a password in the audit"


def test_a_superseded_sync_keeps_its_new_password_and_says_so(store, slapd_server, gates):
    """The password is being changed: an operator's sync given the new one is overtaken by the scheduler's
    (the old one, still accepted). The operator's sync applies nothing else, keeps the new password, says so
    (changed, its warning, the audit event without the password), and the next scheduled sync binds with
    it once the old one is refused."""
    model = Directory(slapd_server, next(_examples))
    model.put(0, 0, 0)
    account = Account(model)
    config = dict(model.config(), bind_dn=account.dn, sync_interval_minutes=5)
    directory.sync(store, config, bind_password=account.passwords[0], now=format_utc(utc_now()))
    account.accept(1, True)
    due = open_store(store.location, state_dir=store.state_dir, actor="scheduler")
    try:
        operator = gates.start(_syncing_as(store, config, "config", account.passwords[1]))
        assert directory.run_due(due, format_utc(utc_now().replace(year=2100)))[0].get("devices") is not None
        result = gates.finish(operator)
        assert result["superseded"] and result["changed"] and not any(result["devices"].values()), result
        assert result["warnings"][-1].endswith("applied nothing but the bind password given, which it bound with "
                                               "(stored)"), result["warnings"]
        with store.read() as tx:
            [event] = tx.query("SELECT details FROM audit_events WHERE action = 'directory.sync_superseded'")
        assert '"bind_given": "stored"' in str(event["details"]), event
        assert account.passwords[1] not in str(event["details"])
        account.accept(0, False)
        [outcome] = directory.run_due(due, format_utc(utc_now().replace(year=2101)))
        assert "error" not in outcome, outcome
    finally:
        due.close()
    assert _stored_password(store, config["name"]) == account.passwords[1]


def test_a_superseded_sync_keeps_no_password_its_configuration_keeps_none(store, slapd_server, gates):
    """A sync without a schedule keeps no password, superseded or not: the stored one stays, and it says why."""
    model = Directory(slapd_server, next(_examples))
    account = Account(model)
    config = dict(model.config(), bind_dn=account.dn, sync_interval_minutes=5)
    directory.sync(store, config, bind_password=account.passwords[0])
    account.accept(1, True)
    unscheduled = dict(config, sync_interval_minutes=None)
    operator = gates.start(_syncing_as(store, unscheduled, "config", account.passwords[1]))
    directory.sync_stored(store, config["name"])
    result = gates.finish(operator)
    assert result["superseded"] and not result["changed"], result
    assert "is not stored: this sync's configuration keeps no bind password" in result["warnings"][-1], result
    assert _stored_password(store, config["name"]) == account.passwords[0]
