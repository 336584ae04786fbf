"""Scheduled bulk jobs run once, as declared, and report what they did, however the ticks of two hosts
(two store connections, as two ``serve`` processes on one store) and ``opencapf jobs run-due`` typed by
hand interleave, on either backend:

- every due job that nobody cancelled runs exactly once, never before its ``run_at``; a cancelled job
  never runs, also when the cancel races another host's claim;
- a job's recorded result (status, counts, error) is what it did to the store; a job that fails
  leaves the store as it was and says why, whatever failed (a rule, the file system, a secret, a
  process killed in the middle of the job: that job is still due and runs once later);
- its changes go through the one converge path (a ``phone.update`` per phone, ``via: bulk``), and a
  job that withdraws an operation fails the phone's CSR still at a CA;
- a job's authentication string is stored encrypted, shown nowhere (listings, results, audit events,
  logs) and deleted once the job has finished or was cancelled; a redeclaration without a secret never
  loses the stored one, and a declaration's ``changed`` is true exactly when it stores something new;
- a job's run time is what was declared, or the declaration is refused (naming ``run_at``);
- every ``job.failed`` event names its reason: the job's recorded error;
- ``opencapf jobs run-due --now`` acts only as at a time the host's clock has reached: a later one is
  refused (exit status 2, naming ``--now`` and the rule) with nothing written, so no job runs before
  its time by the host's clock and no operation whose deadline is still to come is lapsed;
- the listings (``scheduler.list_jobs``, ``capf_info``'s jobs, ``opencapf --json jobs list``) tell
  the stored status and UTC times, consistent with the status.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import signal
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.declarations import as_declared
from support.protocol import add_phone, phone_row
from support.stores import dump
from support.tools import run_cli
from _opencapf import authstrings, bulk, phone_config, reports, scheduler, secretbox
from _opencapf.cli.main import main as cli_main
from _opencapf.errors import ValidationError
from _opencapf.faults import ENV_CRASH_AT
from _opencapf.server.scheduling import ACTOR, Scheduling
from _opencapf.store import audit, csrs, open_store
from _opencapf.vocabulary import format_utc, parse_utc, utc_now

pytestmark = pytest.mark.both_backends

PHONES = 4
SECRETS = ("8642097531", "5318642097")  # digits no timestamp, id or count of these tests contains
DESCRIPTIONS = ("lobby", "desk")
KEY_ORDERS = ("rsa", "ec", "ec_preferred")
AUTH_SETTINGS = {"authentication_mode": "auth_string", "certificate_operation": "install_upgrade"}
SECURE = {"security_mode": "authenticated", "authentication_mode": "null_string", "certificate_operation": "none"}
_examples = itertools.count(1)


@pytest.fixture
def hosts(store):
    """Two more connections to the test's store, as the scheduler of two hosts sees it."""
    opened = [open_store(store.location, state_dir=store.state_dir, actor=ACTOR, create=False) for _host in range(2)]
    yield opened
    for host in opened:
        host.close()


def _secret_name(job_id):
    return f"job.{job_id}.authentication_string"


def _rows(store, names):
    with store.read() as tx:
        return {name: tx.one("SELECT key_order, description, security_mode, auth_mode, operation, auth_salt, "
                             "auth_hash FROM phones WHERE name = ?", (name,)) for name in names}


def _events_after(store, first_id):
    """The audit events after ``first_id``, oldest first."""
    with store.read() as tx:
        rows = tx.query("SELECT id, actor, action, subject, details FROM audit_events WHERE id > ? ORDER BY id",
                        (first_id,))
    return [dict(row, details=json.loads(row["details"])) for row in rows]


def _last_event_id(store):
    with store.read() as tx:
        return tx.scalar("SELECT COALESCE(MAX(id), 0) FROM audit_events")


def _listed(store, store_cli, capsys):
    """The jobs as each listing tells them: the engine's, capf_info's and the CLI's (JSON)."""
    with store.read() as tx:
        engine = scheduler.list_jobs(tx, limit=1000)
    info = reports.gather(store, ["jobs"], limit=1000)["jobs"]
    capsys.readouterr()
    assert cli_main([*store_cli, "--json", "jobs", "list", "--limit", "1000"]) == 0
    cli = json.loads(capsys.readouterr().out)
    return engine, info, cli


def _check_listing(store, store_cli, capsys, model_jobs):
    engine, info, cli = _listed(store, store_cli, capsys)
    assert engine == info == cli
    by_id = {job["id"]: job for job in engine}
    for job in model_jobs.values():
        listed = by_id[job["id"]]
        assert listed["status"] == job["status"], (listed, job)
        assert listed["run_at"] == job["run_at"]
        times = [listed[key] for key in ("created_at", "started_at", "finished_at") if listed[key] is not None]
        assert all(format_utc(parse_utc(value, "time")) == value for value in times), listed
        assert times == sorted(times), listed
        if listed["status"] == "scheduled":
            assert listed["started_at"] is None and listed["finished_at"] is None and listed["result"] is None, listed
        elif listed["status"] == "cancelled":
            assert listed["started_at"] is None and listed["finished_at"] is not None and listed["result"] is None
        else:
            assert listed["started_at"] is not None and listed["finished_at"] is not None and listed["result"], listed
    text = json.dumps([engine, info, cli])
    assert not any(secret in text for secret in SECRETS), "a job's authentication string is listed"


class _Fleet:
    """The model: what the phones of one example should hold, and which jobs exist."""

    def __init__(self, store, hosts, store_cli, capsys, base):
        self.store, self.hosts, self.store_cli, self.capsys = store, hosts, store_cli, capsys
        example = next(_examples)
        self.names = [f"SEP{example:06X}{index:06X}" for index in range(PHONES)]
        self.phones = {name: {"key_order": "rsa", "description": "", "security_mode": "non_secure",
                              "auth_mode": "null_string", "operation": "none", "secret": None}
                       for name in self.names}
        for name in self.names:
            add_phone(store, name)
        self.now = base
        self.jobs = {}  # id -> the job as it should be stored
        self.slots = {}  # a declaration's index -> the id of the job it last declared
        self.declared = {}  # a declaration's index -> its run_at, names and settings
        self.ran = set()

    def declare(self, index, declaration, check_mode=False):
        """Declare a job (again): the same query, settings and time as a scheduled job is that job (its
        string replaced when one is given, kept when none is), anything else a new job; ``changed`` says
        whether the declaration stores something new, in check mode as in a real run."""
        offset, names, key_order, description, auth, secret = declaration
        job_settings = {"key_order": key_order, "description": description}
        if auth:
            job_settings.update(AUTH_SETTINGS)
        run_at = format_utc(self.now + dt.timedelta(minutes=offset))
        self._declare(index, run_at, sorted(self.names[i] for i in names), job_settings, secret, check_mode)

    def redeclare(self, pick, secret, check_mode):
        """Declare a job again as it was declared (the ``pick``-th of those whose time is still to come,
        whatever became of it meanwhile), with this string or none: a playbook run again."""
        slots = sorted(index for index, declared in self.declared.items() if declared[0] > format_utc(self.now))
        if slots:
            index = slots[pick % len(slots)]
            self._declare(index, *self.declared[index], secret, check_mode)

    def _declare(self, index, run_at, names, job_settings, secret, check_mode):
        same = [known for known in self.jobs.values() if known["status"] == "scheduled" and known["run_at"] == run_at
                and known["names"] == names and known["settings"] == job_settings]
        expected_change = not same or (secret is not None and secret != same[0]["secret"])
        stored_before = self.stored()
        result = bulk.converge(self.store, query={"names": names}, settings=job_settings,
                               authentication_string=secret, run_at=run_at, now=format_utc(self.now),
                               check_mode=check_mode)
        assert result["changed"] == expected_change, (result, same, secret)
        job = result["job"]
        assert job["status"] == "scheduled" and job["run_at"] == run_at and result["counts"] is None
        if check_mode:
            assert self.stored() == stored_before, "a declaration in check mode wrote to the store"
            assert job["id"] == (same[0]["id"] if same else None)
            return
        assert [known["id"] for known in same] == ([job["id"]] if same else []), "a job declared again is a new job"
        if same:
            if secret is not None:
                same[0]["secret"] = secret
        else:
            assert job["id"] not in {known["id"] for known in self.jobs.values()}
            self.jobs[job["id"]] = {"id": job["id"], "run_at": run_at, "status": "scheduled", "names": names,
                                    "settings": job_settings, "secret": secret}
        self.slots[index] = job["id"]
        self.declared[index] = (run_at, names, job_settings)

    def stored(self):
        """The jobs and secrets as stored (ciphertexts included: a rewritten secret is a write)."""
        with self.store.read() as tx:
            return (tx.query("SELECT * FROM jobs ORDER BY id"),
                    [dict(row) for row in tx.query("SELECT * FROM secrets ORDER BY name")])

    def cancel(self, index):
        if index not in self.slots:
            return
        job = self.jobs[self.slots[index]]
        result = scheduler.cancel(self.store, job["id"])
        assert result["changed"] == (job["status"] == "scheduled"), (result, job)
        if job["status"] == "scheduled":
            job["status"] = "cancelled"
        assert result["job"]["status"] == job["status"]

    def secure(self, index):
        name = self.names[index]
        phone_config.converge(self.store, name, settings=SECURE)
        self.phones[name].update(security_mode="authenticated", auth_mode="null_string", operation="none",
                                 secret=None)

    def tick(self, who):
        """A tick of host 0 or 1, or ``opencapf jobs run-due`` by hand, at the model's time."""
        now = format_utc(self.now)
        before = _rows(self.store, self.names)
        first_event = _last_event_id(self.store)
        if who == "cli":
            self.capsys.readouterr()
            cli_main([*self.store_cli, "--json", "jobs", "run-due", "--now", now])
            outcome = json.loads(self.capsys.readouterr().out)
        else:
            outcome = scheduler.run_due(self.hosts[who], now)
        due = sorted((job for job in self.jobs.values() if job["status"] == "scheduled" and job["run_at"] <= now),
                     key=lambda job: (job["run_at"], job["id"]))
        ours = {job["id"]: job for job in self.jobs.values()}
        reported = [item for item in outcome["jobs"] if item["id"] in ours]
        assert [item["id"] for item in reported] == [job["id"] for job in due], (outcome, due)
        events = _events_after(self.store, first_event)
        for item, job in zip(reported, due):
            assert job["id"] not in self.ran, "a job ran twice"
            self.ran.add(job["id"])
            assert job["run_at"] <= now
            self._check_run(item, job, events)
        after = _rows(self.store, self.names)
        for name in self.names:
            self._check_phone(name, after[name])
        changed = {name for name in self.names if after[name] != before[name]}
        updated = {event["subject"] for event in events if event["action"] == "phone.update"}
        assert changed <= updated, "a phone changed without its audit event"

    def _check_run(self, item, job, events):
        ended = [index for index, event in enumerate(events)
                 if event["action"] in ("job.succeeded", "job.failed") and event["subject"] == str(job["id"])]
        assert len(ended) == 1, ("a job that ran is recorded once", job, events)
        begun = max((index for index, event in enumerate(events[:ended[0]])
                     if event["action"] in ("job.succeeded", "job.failed")), default=-1)
        own = events[begun + 1:ended[0]]
        updates = [event for event in own if event["action"] == "phone.update"]
        auth = job["settings"].get("authentication_mode") == "auth_string"
        reasons = []
        if auth and any(self.phones[name]["security_mode"] != "non_secure" for name in job["names"]):
            reasons.append("must not be auth_string")
        if auth and job["secret"] is None and any(self.phones[name]["secret"] is None for name in job["names"]):
            reasons.append("authentication_string is required when authentication_mode is auth_string")
        if reasons:
            assert item["status"] == "failed", item
            assert any(reason in item["result"]["error"] for reason in reasons), (item, reasons)
            assert updates == [] and not [event for event in own if event["action"] == "bulk.apply"]
            assert events[ended[0]]["action"] == "job.failed"
            assert events[ended[0]]["details"] == {"kind": bulk.JOB_KIND, "reason": item["result"]["error"]}, \
                "a job.failed event does not name its reason"
            job["status"] = "failed"
            return
        assert item["status"] == "succeeded", item
        job["status"] = "succeeded"
        counts = item["result"]["counts"]
        changed = [name for name in job["names"] if self._apply(name, job)]
        assert counts == {"matched": len(job["names"]), "changed": len(changed), "unchanged": len(job["names"]) -
                          len(changed), "inserted": 0}, (counts, changed)
        assert sorted(event["subject"] for event in updates) == sorted(changed)
        assert all(event["actor"] == ACTOR and event["details"]["via"] == "bulk" for event in updates)

    def _apply(self, name, job):
        """Apply ``job`` to the model of ``name``; whether that changed the phone."""
        phone = self.phones[name]
        before = dict(phone)
        phone.update(key_order=job["settings"]["key_order"], description=job["settings"]["description"])
        if job["settings"].get("authentication_mode") == "auth_string":
            phone.update(auth_mode="auth_string", operation="install_upgrade")
            if job["secret"] is not None:
                phone.update(secret=job["secret"])
        return phone != before

    def _check_phone(self, name, row):
        phone = self.phones[name]
        assert {key: row[key] for key in ("key_order", "description", "security_mode", "auth_mode", "operation")} == \
            {key: phone[key] for key in ("key_order", "description", "security_mode", "auth_mode", "operation")}, name
        if phone["secret"] is None:
            assert row["auth_hash"] is None, name
        else:
            assert authstrings.matches(self.store.secret(), row["auth_salt"], row["auth_hash"], phone["secret"])

    def check_secrets(self):
        with self.store.read() as tx:
            for job in self.jobs.values():
                stored = secretbox.exists(tx, _secret_name(job["id"]))
                assert stored == (job["status"] == "scheduled" and job["secret"] is not None), job
            sealed = tx.query("SELECT ciphertext FROM secrets")
            events = json.dumps(tx.query("SELECT details FROM audit_events"))
        assert not any(secret.encode() in bytes(row["ciphertext"]) for row in sealed for secret in SECRETS)
        assert not any(secret in events for secret in SECRETS), "an audit event tells a job's authentication string"


# (offset in minutes, phones, key order, description, auth_string settings, shared string): a job
# with auth_string settings may come without its string (declared again without repeating it)
DECLARATIONS = st.tuples(st.integers(min_value=1, max_value=4),
                         st.lists(st.integers(min_value=0, max_value=PHONES - 1), min_size=1, max_size=PHONES,
                                  unique=True),
                         st.sampled_from(KEY_ORDERS), st.sampled_from(DESCRIPTIONS), st.sampled_from((True, False)),
                         st.sampled_from(SECRETS + (None,))).map(
    lambda declaration: declaration if declaration[4] else declaration[:5] + (None,))
STEPS = st.lists(st.one_of(
    st.tuples(st.just("declare"), st.integers(min_value=0, max_value=3), DECLARATIONS, st.booleans()),
    st.tuples(st.just("redeclare"), st.integers(min_value=0, max_value=3), st.sampled_from((None,) + SECRETS),
              st.booleans()),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=3)),
    st.tuples(st.just("secure"), st.integers(min_value=0, max_value=PHONES - 1)),
    st.tuples(st.just("tick"), st.sampled_from((0, 1, 0, 1, "cli")), st.integers(min_value=0, max_value=3)),
), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(STEPS)
def test_whatever_the_interleaving_each_due_job_runs_once_and_tells_what_it_did(store, hosts, store_cli, capsys, steps):
    """Jobs declared, declared again (in check mode or not) with another authentication string or
    without one, cancelled, made to fail by a phone turned secure before they run; ticks of two hosts
    and ``jobs run-due`` by hand as time passes: each due job that was not cancelled runs once, in its
    time, with the result and the changes the model predicts (a failed one with its reason in the
    ``job.failed`` event); the store keeps a job's string, the last one declared, only while the job
    is scheduled, and every listing tells the same, true story."""
    # The model's time is in the past: ``jobs run-due --now`` acts only as at a time the host's clock has reached.
    fleet = _Fleet(store, hosts, store_cli, capsys, dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    for step in steps:
        if step[0] == "declare":
            fleet.declare(step[1], step[2], check_mode=step[3])
        elif step[0] == "redeclare":
            fleet.redeclare(step[1], step[2], step[3])
        elif step[0] == "cancel":
            fleet.cancel(step[1])
        elif step[0] == "secure":
            fleet.secure(step[1])
        else:
            fleet.now += dt.timedelta(minutes=step[2])
            fleet.tick(step[1])
        fleet.check_secrets()
    fleet.now += dt.timedelta(minutes=10)  # everything still scheduled falls due
    fleet.tick(1)
    assert all(job["status"] in ("succeeded", "failed", "cancelled") for job in fleet.jobs.values())
    assert fleet.ran == {job["id"] for job in fleet.jobs.values() if job["status"] != "cancelled"}
    fleet.check_secrets()
    _check_listing(store, store_cli, capsys, fleet.jobs)


def _declare_auth_job(store, names, run_at="2090-06-01T00:00:00Z", now="2090-01-01T00:00:00Z", secret=SECRETS[0]):
    return bulk.converge(store, query={"names": names}, settings=dict(AUTH_SETTINGS, key_order="ec"),
                         authentication_string=secret, run_at=run_at, now=now)["job"]


def _job(store, job_id):
    with store.read() as tx:
        (job,) = [job for job in scheduler.list_jobs(tx, limit=1000) if job["id"] == job_id]
    return job


def test_a_job_killed_in_the_middle_changed_nothing_and_runs_once_later(store, hosts, store_cli):
    """``jobs run-due`` killed (SIGKILL) while the job writes the phones: the job changed nothing and
    is still due with its authentication string; the next tick, on the other host, runs it once."""
    names = [f"SEP00000000A{index:03X}" for index in range(3)]
    for name in names:
        add_phone(store, name)
    job = _declare_auth_job(store, names, run_at="2020-06-01T00:00:00Z", now="2020-01-01T00:00:00Z")
    before = _rows(store, names)
    killed = run_cli(*store_cli, "jobs", "run-due", "--now", "2020-06-01T00:00:01Z",
                     env=dict(os.environ, **{ENV_CRASH_AT: "bulk.updated:1"}))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _rows(store, names) == before
    assert _job(store, job["id"])["status"] == "scheduled", "a job nobody runs any longer is listed running"
    with store.read() as tx:
        assert secretbox.exists(tx, _secret_name(job["id"]))
    ran = scheduler.run_due(hosts[1], "2020-06-01T00:00:02Z")
    assert [(item["id"], item["status"]) for item in ran["jobs"]] == [(job["id"], "succeeded")]
    assert ran["jobs"][0]["result"]["counts"]["changed"] == 3
    assert scheduler.run_due(hosts[0], "2020-06-02T00:00:00Z")["jobs"] == []
    listed = _job(store, job["id"])
    assert listed["status"] == "succeeded" and listed["started_at"] <= listed["finished_at"]
    with store.read() as tx:
        assert not secretbox.exists(tx, _secret_name(job["id"]))
        assert len(audit.events(tx, action="job.succeeded", subject=str(job["id"]))) == 1
    assert all(authstrings.matches(store.secret(), row["auth_salt"], row["auth_hash"], SECRETS[0])
               for row in _rows(store, names).values())


def test_a_job_whose_strings_file_cannot_be_written_fails_and_changes_nothing(store, hosts, tmp_path):
    """A scheduled job that generates strings into a file it cannot write (its directory is a file on
    the host that runs it) fails with the reason; no phone changed, and it is not left running."""
    names = [f"SEP00000000B{index:03X}" for index in range(2)]
    for name in names:
        add_phone(store, name)
    (tmp_path / "not-a-directory").write_text("")
    job = bulk.converge(store, query={"names": names}, settings=AUTH_SETTINGS, generate_authentication_strings=True,
                        strings_file=str(tmp_path / "not-a-directory" / "strings.csv"),
                        run_at="2090-06-01T00:00:00Z", now="2090-01-01T00:00:00Z")["job"]
    before = _rows(store, names)
    ran = scheduler.run_due(hosts[0], "2090-06-01T00:00:00Z")
    assert [(item["id"], item["status"]) for item in ran["jobs"]] == [(job["id"], "failed")]
    assert "strings.csv" in ran["jobs"][0]["result"]["error"]
    assert _rows(store, names) == before
    listed = _job(store, job["id"])
    assert listed["status"] == "failed" and listed["result"] == ran["jobs"][0]["result"]
    assert scheduler.run_due(hosts[1], "2090-06-02T00:00:00Z")["jobs"] == []


def test_a_job_whose_string_cannot_be_decrypted_fails_and_the_tick_goes_on(store, hosts):
    """A job whose stored authentication string this store's secret file does not open (a tampered
    row) fails with the reason and loses the unusable secret; the tick runs the other due jobs."""
    names = [f"SEP00000000C{index:03X}" for index in range(2)]
    for name in names:
        add_phone(store, name)
    broken = _declare_auth_job(store, names[:1])
    other = bulk.converge(store, query={"names": names[1:]}, settings={"description": "after"},
                          run_at="2090-06-01T00:00:01Z", now="2090-01-01T00:00:00Z")["job"]
    with store.transaction() as tx:
        tx.execute("UPDATE secrets SET nonce = ? WHERE name = ?", (b"\0" * 12, _secret_name(broken["id"])))
    ran = scheduler.run_due(hosts[0], "2090-06-02T00:00:00Z")
    assert [(item["id"], item["status"]) for item in ran["jobs"]] == [(broken["id"], "failed"), (other["id"], "succeeded")]
    assert "cannot be decrypted" in ran["jobs"][0]["result"]["error"]
    assert phone_row(store, names[0])["key_order"] == "rsa" and phone_row(store, names[1])["description"] == "after"
    with store.read() as tx:
        assert not secretbox.exists(tx, _secret_name(broken["id"]))


def _tick_when_started(host, start, ran):
    start.wait()
    ran.update(scheduler.run_due(host, "2090-06-01T00:00:00Z"))


def test_a_cancel_racing_another_host_s_claim_either_wins_whole_or_sees_the_job_run(store, hosts):
    """The operator cancels a due job while another host's tick claims it: either the cancel wins (the
    job never runs, changes nothing, its string is gone) or the job ran once and the cancel says so."""
    outcomes = set()
    for attempt in range(12):
        names = [f"SEP0000000D{attempt:02X}{index:02X}" for index in range(3)]
        for name in names:
            add_phone(store, name)
        job = _declare_auth_job(store, names)
        start, ran = threading.Barrier(2), {}
        thread = threading.Thread(target=_tick_when_started, args=(hosts[attempt % 2], start, ran))
        thread.start()
        start.wait()
        cancelled = scheduler.cancel(store, job["id"])
        thread.join()
        statuses = [item["status"] for item in ran["jobs"] if item["id"] == job["id"]]
        rows = _rows(store, names)
        if cancelled["changed"]:
            outcomes.add("cancelled")
            assert statuses == [] and _job(store, job["id"])["status"] == "cancelled"
            assert all(row["key_order"] == "rsa" and row["auth_hash"] is None for row in rows.values())
        else:
            outcomes.add("ran")
            assert statuses == ["succeeded"] and cancelled["job"]["status"] == "succeeded", cancelled
            assert all(row["key_order"] == "ec" for row in rows.values())
        with store.read() as tx:
            assert not secretbox.exists(tx, _secret_name(job["id"]))
    assert outcomes  # which side wins is the threads' business; each outcome must be whole


def test_a_job_that_withdraws_an_operation_fails_the_csr_still_at_a_ca(store, hosts):
    """A scheduled job that changes a phone's operation fails the phone's CSR still at a CA with the
    reason and a ``csr.failed`` event (``via: bulk``), as every path that changes a phone does; a job
    that fails leaves the CSR waiting."""
    name, secure = "SEP00000000E001", "SEP00000000E002"
    for phone in (name, secure):
        add_phone(store, phone, operation="install_upgrade")
    phone_ids = [phone_row(store, phone)["id"] for phone in (name, secure)]
    with store.transaction() as tx:
        csr_ids = [csrs.add(tx, phone_id, f"{index:064x}", b"key") for index, phone_id in enumerate(phone_ids)]
    phone_config.converge(store, secure, settings={"security_mode": "authenticated"})
    failing = _declare_auth_job(store, [secure])
    withdrawing = bulk.converge(store, query={"names": [name, secure]}, settings={"certificate_operation": "delete"},
                                run_at="2090-06-01T00:00:01Z", now="2090-01-01T00:00:00Z")["job"]
    ran = scheduler.run_due(hosts[0], "2090-06-01T00:00:00Z")
    assert [item["status"] for item in ran["jobs"]] == ["failed"] and ran["jobs"][0]["id"] == failing["id"]
    with store.read() as tx:
        assert [csrs.status_of(tx, csr_id) for csr_id in csr_ids] == ["pending", "pending"]
    ran = scheduler.run_due(hosts[1], "2090-06-01T00:00:01Z")
    assert [(item["id"], item["status"]) for item in ran["jobs"]] == [(withdrawing["id"], "succeeded")]
    reason = "the operator changed the phone's operation from install_upgrade to delete"
    with store.read() as tx:
        assert [csrs.status_of(tx, csr_id) for csr_id in csr_ids] == ["failed", "failed"]
        events = [(row["actor"], row["subject"], row["details"]) for row in audit.events(tx, action="csr.failed")]
    assert sorted(events) == sorted((ACTOR, phone, {"csr_id": csr_id, "reason": reason, "via": "bulk"})
                                    for phone, csr_id in zip((name, secure), csr_ids))


def test_the_service_s_tick_logs_what_jobs_did_and_never_their_string(store, caplog):
    """The service's scheduler runs a due job with a string and one that fails: the log tells each
    job's status and result or reason, never the authentication string."""
    names = [f"SEP00000000F{index:03X}" for index in range(2)]
    for name in names:
        add_phone(store, name)
    phone_config.converge(store, names[1], settings=SECURE)
    yesterday = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    good, bad = (_declare_auth_job(store, [name], run_at=format_utc(yesterday + dt.timedelta(seconds=index + 1)),
                                   now=format_utc(yesterday), secret=secret)
                 for index, (name, secret) in enumerate(zip(names, SECRETS)))
    part = Scheduling(store)
    try:
        with caplog.at_level(logging.INFO, logger="opencapf.server"):
            part.tick()
    finally:
        part.close()
    text = caplog.text
    assert f"scheduler: job {good['id']} succeeded" in text and f"scheduler: job {bad['id']} failed" in text, text
    assert "must not be auth_string" in text
    assert not any(secret in text for secret in SECRETS), text


def test_a_job_that_meets_a_defect_is_recorded_failed_and_the_defect_raised(store, hosts):
    """A job whose stored spec this engine cannot read (a defect, not a rule it breaks) fails with the
    kind of the error, changes nothing and loses its string; the defect is raised for the caller to
    log with its traceback, and the next tick does not run the job again."""
    names = ["SEP00000000E101"]
    add_phone(store, names[0])
    job = _declare_auth_job(store, names)
    with store.transaction() as tx:
        tx.execute("UPDATE jobs SET spec = ? WHERE id = ?", ("{}", job["id"]))
    with pytest.raises(KeyError):
        scheduler.run_due(hosts[0], "2090-06-01T00:00:00Z")
    listed = _job(store, job["id"])
    assert listed["status"] == "failed" and "internal error (KeyError)" in listed["result"]["error"], listed
    assert phone_row(store, names[0])["auth_hash"] is None
    with store.read() as tx:
        assert not secretbox.exists(tx, _secret_name(job["id"]))
    assert scheduler.run_due(hosts[1], "2090-06-02T00:00:00Z")["jobs"] == []


def test_a_job_tells_the_named_phones_removed_before_it_ran(store, hosts):
    """A job for named phones, one removed after the job was submitted: the job changes the others
    and its result (and the log line of the service) names the phone it could not find."""
    names = ["SEP00000000E201", "SEP00000000E202"]
    for name in names:
        add_phone(store, name)
    job = bulk.converge(store, query={"names": names}, settings={"description": "moved"},
                        run_at="2090-06-01T00:00:00Z", now="2090-01-01T00:00:00Z")
    assert job["unmatched"] == []
    phone_config.converge(store, names[1], state="absent")
    ran = scheduler.run_due(hosts[0], "2090-06-01T00:00:00Z")
    (item,) = ran["jobs"]
    assert item["status"] == "succeeded" and item["result"]["counts"]["matched"] == 1
    assert item["result"]["warnings"] == ["query.names: 1 device name(s) not in the store were ignored: "
                                          "SEP00000000E202"], item
    assert _job(store, item["id"])["result"] == item["result"]


REDECLARATIONS = st.lists(st.tuples(st.sampled_from((None,) + SECRETS), st.booleans()), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from((None,) + SECRETS), REDECLARATIONS)
def test_a_redeclaration_without_a_secret_never_loses_the_stored_one(store, hosts, first, redeclarations):
    """A job declared with or without its authentication string, then declared again with the same
    settings (in check mode or not), each time with a string or without repeating it (a playbook's
    re-run): the stored string is the last one given, never dropped; ``changed`` is true exactly when
    a new string is stored, and the job, when it runs, gives the phones that string."""
    example = next(_examples)
    names = [f"SEP{example:06X}AA{index:04X}" for index in range(2)]
    for name in names:
        add_phone(store, name)
    job = _declare_auth_job(store, names, secret=first)
    stored = first
    for secret, check_mode in redeclarations:
        before = _events_after(store, 0)
        result = bulk.converge(store, query={"names": names}, settings=dict(AUTH_SETTINGS, key_order="ec"),
                               authentication_string=secret, run_at="2090-06-01T00:00:00Z",
                               now="2090-01-01T00:00:00Z", check_mode=check_mode)
        assert result["job"]["id"] == job["id"], "a job declared again is a new job"
        assert result["changed"] == (secret is not None and secret != stored), (secret, stored, result["changed"])
        if not check_mode and secret is not None:
            stored = secret
        with store.read() as tx:
            assert secretbox.get(tx, store.secret(), _secret_name(job["id"])) == stored
        if not result["changed"] or check_mode:
            assert _events_after(store, 0) == before, "a declaration that changes nothing is audited"
    ran = scheduler.run_due(hosts[0], "2090-06-01T00:00:00Z")
    (item,) = [item for item in ran["jobs"] if item["id"] == job["id"]]
    if stored is None:
        assert item["status"] == "failed" and "authentication_string is required" in item["result"]["error"], item
    else:
        assert item["status"] == "succeeded", item
        assert all(authstrings.matches(store.secret(), row["auth_salt"], row["auth_hash"], stored)
                   for row in _rows(store, names).values())


_EPOCH = dt.datetime(2050, 1, 1, tzinfo=dt.timezone.utc)
_OFFSETS = (dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8)))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.datetimes(min_value=dt.datetime(2049, 12, 31), max_value=dt.datetime(2200, 1, 1),
                    timezones=st.sampled_from(_OFFSETS)),
       st.booleans(), st.sampled_from(("text_z", "text_offset", "datetime")))
def test_a_job_s_run_time_is_what_was_declared_or_the_declaration_is_refused(store, moment, whole, form):
    """Whatever time ``run_at`` names, in whatever form: a job scheduled for it runs at exactly that
    instant as stored and listed, or the declaration is refused naming ``run_at`` and its rule (the
    store keeps whole seconds, so a fraction of a second is refused, never dropped) and nothing is
    stored or run."""
    if whole:
        moment = moment.replace(microsecond=0)
    name = "SEP0000000AB001"
    if phone_row(store, name) is None:
        add_phone(store, name)
    first_event = _last_event_id(store)
    declared = as_declared(moment, form)
    try:
        result = bulk.converge(store, query={"names": [name]}, settings={"description": "at"}, run_at=declared,
                               now=format_utc(_EPOCH))
    except ValidationError as exc:
        assert moment.microsecond != 0, exc
        assert exc.field == "run_at" and str(exc).startswith("run_at must be a whole second"), str(exc)
        assert _events_after(store, first_event) == [], "a refused declaration wrote to the store"
        return
    assert moment.microsecond == 0, ("a run_at with a fraction of a second was accepted", declared, result["job"])
    if moment > _EPOCH:
        job = result["job"]
        assert parse_utc(job["run_at"], "run_at") == moment and job["run_at"] == _job(store, job["id"])["run_at"]
        assert scheduler.cancel(store, job["id"])["changed"]
    else:
        assert result["job"] is None and result["counts"]["matched"] == 1


def _fails_by_rule(store, tmp_path, names):
    phone_config.converge(store, names[0], settings=SECURE)
    return _declare_auth_job(store, names[:1])["id"], "must not be auth_string"


def _fails_without_string(store, tmp_path, names):
    return _declare_auth_job(store, names[:1], secret=None)["id"], "authentication_string is required"


def _fails_by_file_system(store, tmp_path, names):
    (tmp_path / "not-a-directory").write_text("")
    return bulk.converge(store, query={"names": names[:1]}, settings=AUTH_SETTINGS,
                         generate_authentication_strings=True,
                         strings_file=str(tmp_path / "not-a-directory" / "strings.csv"),
                         run_at="2090-06-01T00:00:00Z", now="2090-01-01T00:00:00Z")["job"]["id"], "strings.csv"


def _fails_by_secret(store, tmp_path, names):
    job_id = _declare_auth_job(store, names[:1])["id"]
    with store.transaction() as tx:
        tx.execute("UPDATE secrets SET nonce = ? WHERE name = ?", (b"\0" * 12, _secret_name(job_id)))
    return job_id, "cannot be decrypted"


def _fails_by_defect(store, tmp_path, names):
    job_id = _declare_auth_job(store, names[:1])["id"]
    with store.transaction() as tx:
        tx.execute("UPDATE jobs SET spec = ? WHERE id = ?", ("{}", job_id))
    return job_id, "internal error (KeyError)"


@pytest.mark.parametrize("cause", [_fails_by_rule, _fails_without_string, _fails_by_file_system, _fails_by_secret,
                                   _fails_by_defect], ids=lambda cause: cause.__name__[len("_fails_"):])
def test_every_job_failed_event_names_its_reason(store, hosts, tmp_path, cause):
    """A job that fails, whatever failed (a rule, a missing string, the file system, a secret that no
    longer decrypts, a defect of ours): its ``job.failed`` event names the reason, the same text as the
    job's recorded error, never a secret."""
    names = ["SEP0000000AC001"]
    add_phone(store, names[0])
    job_id, reason = cause(store, tmp_path, names)
    first_event = _last_event_id(store)
    try:
        scheduler.run_due(hosts[0], "2090-06-01T00:00:00Z")
    except KeyError:
        assert cause is _fails_by_defect
    listed = _job(store, job_id)
    assert listed["status"] == "failed" and reason in listed["result"]["error"], listed
    (event,) = [event for event in _events_after(store, first_event) if event["action"] == "job.failed"]
    assert event["subject"] == str(job_id)
    assert event["details"] == {"kind": bulk.JOB_KIND, "reason": listed["result"]["error"]}, event
    assert not any(secret in json.dumps(event) for secret in SECRETS)


_run_due_examples = itertools.count(1)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(st.integers(min_value=-3 * 86400, max_value=3 * 86400), st.integers(min_value=-3, max_value=3),
                 st.integers(min_value=3500, max_value=3700)))
def test_run_due_never_acts_on_a_time_the_clock_has_not_reached(store, store_cli, capsys, offset):
    """``jobs run-due --now`` at any time around the host's clock: a time the clock has not reached is
    refused with exit status 2 naming ``--now`` and the rule, and nothing is written; any other runs
    the jobs due at it and lapses the deadlines passed at it, and nothing of what is still to come by
    the host's clock (a job an hour away, an operation whose deadline is an hour away)."""
    example = next(_run_due_examples)
    clock = utc_now()
    names = {when: f"SEP{example:06X}{index:06X}" for index, when in enumerate(("past", "future"))}
    deadlines = {"past": clock - dt.timedelta(hours=1), "future": clock + dt.timedelta(hours=1)}
    jobs = {}
    for when, name in names.items():
        add_phone(store, name)
        phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade",
                                                     "operation_completes_by": format_utc(deadlines[when])})
        jobs[when] = bulk.converge(store, query={"names": [name]}, settings={"description": f"job {example}"},
                                   run_at=format_utc(deadlines[when]),
                                   now=format_utc(deadlines[when] - dt.timedelta(days=1)))["job"]
    before = dump(store)
    now = clock + dt.timedelta(seconds=offset)
    capsys.readouterr()
    started = utc_now()
    try:
        code = cli_main([*store_cli, "--json", "jobs", "run-due", "--now", format_utc(now)])
    except SystemExit as stopped:
        code = stopped.code
    ended = utc_now()
    captured = capsys.readouterr()
    if now > ended:
        assert code == 2, (code, captured)
    if now <= started:
        assert code == 0, (code, captured)
    if code == 2:
        assert "error: argument --now: must not be later than this host's clock" in captured.err, captured.err
        assert "Traceback" not in captured.err and captured.out == ""
        assert dump(store) == before, "a refused run-due wrote to the store"
        return
    ran = {item["id"] for item in json.loads(captured.out)["jobs"]}
    for when, name in names.items():
        due = deadlines[when] <= now
        assert (jobs[when]["id"] in ran) == due, (when, now, jobs[when])
        assert _job(store, jobs[when]["id"])["status"] == ("succeeded" if due else "scheduled")
        assert phone_row(store, name)["operation_status"] == ("lapsed" if deadlines[when] < now else "pending")
        if not due:
            assert deadlines[when] > ended, "run-due acted on a time the host's clock has not reached"
