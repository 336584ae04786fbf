"""Three nodes on one store, each with its own clock, never tell a lie about what they did.

Three store connections opened as ``serve`` opens them play three CAPF nodes (docs/cluster.md): each
runs its own scheduler (``server.scheduling.Scheduling``: jobs, lapses, abandoned operations, expiry
revocation and CRLs, automatic renewal, the certificate monitor mailing a real SMTP relay), serves
phone sessions (the service's sans-I/O ``ServerSession`` with its ``StoreDecider`` and the simulator's
phone, an exchange at a time, the phone sending keep-alives while it works), and takes operators'
changes (declared operations with a deadline, scheduled bulk jobs, revocations). Two nodes' schedulers
may also tick at once, each in a thread of its own, as on two hosts. Each node's clock is
the time the nodes share plus an offset of its own (``OFFSET``: on a PostgreSQL store the offsets of
any two nodes differ by at most ``CLOCK_SKEW``, as docs/cluster.md allows; the processes of an SQLite
store run on one host and read one clock, off from the shared time by one offset). The shared time
only moves on; the sessions' timers fire at their deadlines, as the service's event loop fires them.
A node's scheduler may stop (its leads go with its connection) and start again, so the leads move
between nodes whose clocks disagree. Any interleaving keeps, on both backends:

1. every job runs at most once, and once it ran it stays as it ran: one ``job.succeeded`` or
   ``job.failed`` event, never run before its ``run_at`` by the clock of the node that ran it, its
   recorded times not after that node's clock;
2. no event, job, CRL, renewal or monitor run is recorded at a time after the clock of the node that
   recorded it;
3. no operation is settled as abandoned ("the CAPF service stopped mid-session") while the session
   that serves it is live, whichever node's scheduler looks;
4. each monitor warning is mailed once per certificate and threshold (the relay's mails, their CSV
   attachments);
5. each LSC has at most one automatic renewal scheduled; LSC serials are unique;
6. each CAPF certificate's CRL numbers are unique and grow in the order the CRLs were signed, and a CRL
   starts no later than its signer's clock (a CRL of a node whose clock is behind may start before the
   one numbered before it: the number says which is newer, docs/lifecycle.md "Clocks");
7. what a node recorded is never undone by a node whose clock runs behind: a revoked LSC stays revoked,
   a lapsed operation stays lapsed until a change of the phone declares it again (or a session that had
   begun before the lapse, having read the operation pending, completes it), a job that ran stays as it
   ran, a recorded monitor warning stays recorded.

Not an invariant: the thisUpdate of the CRL served never going back. A node whose clock is behind signs
CRLs that start before the one numbered before them (docs/lifecycle.md "Clocks";
test_crl_truth.py checks the CRLs themselves with offsets of hours)."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import itertools
import json
import threading
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.protocol import add_phone
from support.sessions import SessionLeg
from support.smtp import PASSWORD, SmtpRelay
from _opencapf import bulk, phone_config, revocation, service_config, vocabulary
from _opencapf.protocol import codec
from _opencapf.protocol.codec import Message
from _opencapf.protocol.constants import Command
from _opencapf.protocol.session import WAIT_KEY
from _opencapf.server.decider import ABANDONED_REASON
from _opencapf.server.scheduling import Scheduling
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import open_store
from _opencapf.vocabulary import CLOCK_SKEW, format_utc, parse_utc

pytestmark = pytest.mark.both_backends

NODES = 3
PHONES = 3
OFFSET = int(CLOCK_SKEW.total_seconds()) // 2  # seconds a node's clock runs ahead of or behind the shared time
ABANDONED = ABANDONED_REASON.split(" (", 1)[0]
KEEPALIVE = 20  # seconds between a busy phone's keep-alives (a step waits 30 s for the next message)
WAITS = (1, 10, 25, 60, 200, 590, 3600, 6 * 3600, 86400)
_examples = itertools.count(1)
_sessions = itertools.count(1)

STEP = st.one_of(
    st.tuples(st.just("tick"), st.integers(0, NODES - 1)),
    st.tuples(st.just("race"), st.integers(0, NODES - 1), st.integers(0, NODES - 1)),
    st.tuples(st.just("wait"), st.sampled_from(WAITS)),
    st.tuples(st.just("enrol"), st.integers(0, NODES - 1), st.integers(0, PHONES - 1),
              st.sampled_from(["key", "issued", "done"])),
    st.tuples(st.sampled_from(["step", "keepalive"]), st.integers(0, 5)),
    st.tuples(st.just("finish"), st.integers(0, 5)),
    st.tuples(st.just("hold"), st.integers(0, 5), st.sampled_from([120, 560, 600])),
    st.tuples(st.just("declare"), st.integers(0, NODES - 1), st.integers(0, PHONES - 1),
              st.sampled_from([None, 1, 5, 120])),
    st.tuples(st.just("job"), st.integers(0, NODES - 1), st.integers(1, 2 ** PHONES - 1), st.sampled_from([1, 5, 60])),
    st.tuples(st.just("revoke"), st.integers(0, NODES - 1), st.integers(0, PHONES - 1)),
    st.tuples(st.sampled_from(["restart", "crash"]), st.integers(0, NODES - 1)),
)


class _Clocks:
    """The host clocks the engine reads (``vocabulary.utc_now`` reads ``time.time()``): the shared time
    plus the offset of the node acting now in the calling thread (none acting: the shared time)."""

    def __init__(self):
        self.shared = int(time.time())  # only moves on, across the examples too
        self.offsets = [0] * NODES
        self._thread = threading.local()

    @property
    def acting(self) -> int | None:
        return getattr(self._thread, "node", None)

    @acting.setter
    def acting(self, node: int | None) -> None:
        self._thread.node = node

    def time(self) -> float:
        node = self.acting
        return float(self.shared + (0 if node is None else self.offsets[node]))

    def of(self, node: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.shared + self.offsets[node], dt.timezone.utc)


class _Leg:
    """A phone session served by ``node``: the session, and when its bound ends it (shared seconds)."""

    def __init__(self, node: int, name: str, leg: SessionLeg, started: int):
        self.node, self.name, self.leg = node, name, leg
        self.ends_by = started + leg.server.max_duration
        self.begun = 0  # the step it began in (set by the run)
        self.killed = False  # its node's process died: it neither ends nor records anything any more
        self.live_until: str | None = None  # the bound it recorded on the phone with its operation in progress

    @property
    def done(self) -> bool:
        return self.killed or self.leg.done

    def live(self, now: int) -> bool:
        return not self.done and now < self.ends_by


class _Cluster:
    def __init__(self, store, clocks: _Clocks, relay: SmtpRelay):
        self.watcher, self.clocks, self.relay = store, clocks, relay
        self.shared_clock = not store.location.startswith("postgresql")  # one host: one clock
        self.nodes = [open_store(store.location, state_dir=store.state_dir, actor=f"node-{index}", group_commit=True)
                      for index in range(NODES)]
        self.schedulers = [Scheduling(node) for node in self.nodes]
        self.legs: list[_Leg] = []
        self.step_number = 0
        self.jobs: dict[int, dict] = {}  # id -> the row once it ran
        self.events = self._last_event()
        self.crls: set[int] = set()  # the CRL numbers seen
        self.runs = self._last("monitor_runs")
        self.renewals = self._last("renewals")
        self.mails = 0
        self.mailed: set[tuple[str, int]] = set()
        self.revoked: set[str] = set()
        self.warnings: set[tuple[str, int]] = set()

    def close(self) -> None:
        for part in self.schedulers:
            part.close()
        for node in self.nodes:
            node.close()

    def resync(self) -> None:
        """Start looking from what the store holds now (an example that failed stopped looking part-way)."""
        self.events, self.runs, self.renewals = self._last_event(), self._last("monitor_runs"), self._last("renewals")
        with self.watcher.read() as tx:
            self.revoked = {row["serial"] for row in tx.query("SELECT serial FROM certificates WHERE status = 'revoked'")}
            self.warnings = {(row["fingerprint"], int(row["threshold"])) for row in
                             tx.query("SELECT fingerprint, threshold FROM monitor_warnings")}
            self.jobs = {row["id"]: row for row in tx.query(
                "SELECT id, status, run_at, started_at, finished_at, result FROM jobs WHERE status != 'scheduled'")}

    def _last(self, table: str) -> int:
        with self.watcher.read() as tx:
            return tx.scalar(f"SELECT COALESCE(MAX(id), 0) FROM {table}")

    def _last_event(self) -> int:
        return self._last("audit_events")

    @contextlib.contextmanager
    def acting(self, node: int | None):
        """Node ``node``'s clock is the one the engine reads meanwhile (in this thread)."""
        self.clocks.acting = node
        try:
            yield
        finally:
            self.clocks.acting = None

    # -- the time that passes --------------------------------------------------------------------

    def wait(self, seconds: int) -> list:
        """The shared time moves on by ``seconds``; each session's timer fires at its deadline, on its node."""
        end = self.clocks.shared + seconds
        fired = []
        while True:
            due = [leg for leg in self.legs if not leg.done and leg.leg.server.deadline is not None
                   and leg.leg.server.deadline <= end]
            if not due:
                break
            leg = min(due, key=lambda item: item.leg.server.deadline)
            self.clocks.shared = max(self.clocks.shared, int(leg.leg.server.deadline + 0.999))
            with self.acting(leg.node):
                leg.leg.server.time_passed(self.clocks.shared)
            fired.append(leg.node)
        self.clocks.shared = end
        return fired

    def race(self, first: int, second: int) -> list[int]:
        failures = []

        def tick(node: int) -> None:
            self.clocks.acting = node
            try:
                self.schedulers[node].tick()
            except BaseException as exc:  # pylint: disable=broad-except  # raised again in the test's thread
                failures.append(exc)

        threads = [threading.Thread(target=tick, args=(node,)) for node in sorted({first, second})]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        if failures:
            raise failures[0]
        return sorted({first, second})

    def keep_alive(self, leg: _Leg) -> None:
        """The phone of ``leg`` says it is still at work (REQUEST_IN_PROGRESS)."""
        leg.leg.server.receive_data(codec.encode(Message(Command.REQUEST_IN_PROGRESS, leg.leg.session_id, ())),
                                    self.clocks.shared)

    def hold(self, leg: _Leg, seconds: int) -> list[int]:
        """``seconds`` pass while the phone of ``leg`` sends a keep-alive every ``KEEPALIVE`` seconds."""
        acted = [leg.node]
        end = self.clocks.shared + seconds
        while self.clocks.shared < end and not leg.done:
            acted += self.wait(min(KEEPALIVE, end - self.clocks.shared))
            if not leg.done:
                with self.acting(leg.node):
                    self.keep_alive(leg)
        return acted + self.wait(end - self.clocks.shared)

    def advance(self, leg: _Leg, until: str) -> None:
        """Step ``leg`` (its node acting) once ("step"), until the server waits for the phone's key ("key"),
        until it issued the LSC ("issued"), or to its end ("done")."""
        for _exchange in range(30):
            if leg.done:
                return
            if leg.leg.step(self.clocks.shared) == "issued":
                self.started(leg)
                if until == "issued":
                    return
            if until == "step" or (until == "key" and leg.leg.server.state == WAIT_KEY):
                return

    def started(self, leg: _Leg) -> None:
        """``leg`` issued its LSC: the bound its session start recorded on the phone, when it put the operation
        in progress."""
        with self.watcher.read() as tx:
            row = tx.one("SELECT operation_status, operation_live_until FROM phones WHERE name = ?", (leg.name,))
        if row["operation_status"] == "in_progress":
            leg.live_until = row["operation_live_until"]

    # -- the invariants, after each step ---------------------------------------------------------

    def check(self, step, acted: list[int], names: list[str], lapsed_before: dict[str, int]) -> dict[str, int]:
        """Check what ``step`` recorded, done by the nodes ``acted``; the phones of ``names`` lapsed now, each
        with the step its lapse was first seen after (``lapsed_before``: the same before ``step``)."""
        latest = max((self.clocks.of(node) for node in acted), default=None)
        with self.watcher.read() as tx:
            events = tx.query("SELECT id, at, actor, action, subject, details FROM audit_events WHERE id > ? "
                              "ORDER BY id", (self.events,))
            jobs = {row["id"]: row for row in tx.query(
                "SELECT id, status, run_at, started_at, finished_at, result FROM jobs")}
            crls = tx.query("SELECT number, signer_fingerprint, this_update FROM crls ORDER BY number")
            runs = tx.query("SELECT checked_at, finished_at FROM monitor_runs WHERE id > ?", (self.runs,))
            renewals = tx.query("SELECT id, certificate_id, scheduled_at FROM renewals")
            twice = tx.query("SELECT serial FROM certificates GROUP BY issuer, serial HAVING COUNT(*) > 1")
            revoked = {row["serial"] for row in tx.query("SELECT serial FROM certificates WHERE status = 'revoked'")}
            warnings = {(row["fingerprint"], int(row["threshold"])) for row in
                        tx.query("SELECT fingerprint, threshold FROM monitor_warnings")}
            phones = {row["name"]: row for row in tx.query(
                "SELECT name, operation_status FROM phones WHERE name IN (%s)" % ", ".join("?" * len(names)), names)}
        for event in events:
            event["details"] = json.loads(event["details"])
        # 2. nothing recorded after the clock of the node that recorded it
        if events:
            assert latest is not None, ("events recorded by no node", step, events)
        if runs:
            assert latest is not None, ("a monitor run recorded by no node", step, runs)
        for moment in [event["at"] for event in events] + [run["checked_at"] for run in runs] + \
                [run["finished_at"] for run in runs]:
            assert parse_utc(moment, "at") <= latest, ("recorded after its node's clock", step, moment, latest)
        # 1. jobs: each runs once, not before its time, and stays as it ran
        for event in events:
            if event["action"] in ("job.succeeded", "job.failed"):
                job_id = int(event["subject"])
                assert job_id not in self.jobs, ("a job ran twice", job_id, step)
                row = jobs[job_id]
                assert row["status"] == event["action"].split(".")[1], (row, event)
                assert row["run_at"] <= row["started_at"] <= row["finished_at"], ("a job ran before its time", row)
                assert parse_utc(row["finished_at"], "finished_at") <= latest, (row, latest)
                self.jobs[job_id] = row
        for job_id, row in self.jobs.items():
            assert jobs[job_id] == row, ("a job that ran was changed", row, jobs[job_id])
        # 3. no live session's operation settled as abandoned
        for event in events:
            if event["action"] == "phone.operation_failed" and event["details"]["reason"].startswith(ABANDONED):
                live = [leg for leg in self.legs if leg.name == event["subject"] and leg.live(self.clocks.shared)
                        and leg.live_until == event["details"]["live_until"]]
                assert not live, ("a live session's operation was settled as abandoned", step, event,
                                  [(leg.node, self.clocks.offsets[leg.node], leg.ends_by) for leg in live],
                                  self.clocks.shared, self.clocks.offsets)
        # 4. each monitor warning mailed once per certificate and threshold
        with self.relay.lock:
            mails = self.relay.messages[self.mails:]
            self.mails = len(self.relay.messages)
        for mail in mails:
            rows = _csv_rows(mail["message"])
            for row in rows:
                key = (row["fingerprint"], int(row["threshold"]))
                assert key not in self.mailed, ("a warning was mailed twice", key, step)
                self.mailed.add(key)
        # 5. one renewal per LSC at most, recorded at its node's clock; unique serials
        counts: dict[int, int] = {}
        for row in renewals:
            counts[row["certificate_id"]] = counts.get(row["certificate_id"], 0) + 1
        assert all(count == 1 for count in counts.values()), ("an LSC renewed twice", counts)
        for row in renewals:
            if row["id"] > self.renewals:
                assert parse_utc(row["scheduled_at"], "scheduled_at") <= latest, (row, latest, step)
        self.renewals = max([self.renewals] + [row["id"] for row in renewals])
        assert not twice, ("a serial given twice", twice)
        # 6. CRL numbers unique (the key of the table) and growing in the order the CRLs were signed;
        # thisUpdate not after the signer's clock
        for row in crls:
            if row["number"] not in self.crls:
                assert row["number"] > max(self.crls, default=-1), ("a CRL number went back", row, step)
                assert parse_utc(row["this_update"], "this_update") <= latest, (row, latest, step)
        self.crls |= {row["number"] for row in crls}  # (the oldest CRLs are dropped in time)
        # 7. never undone
        assert self.revoked <= revoked, ("a revocation was undone", self.revoked - revoked, step)
        assert self.warnings <= warnings, ("a recorded warning was forgotten", self.warnings - warnings, step)
        # A lapse stands until a change of the phone declares its operation again; a session that had begun
        # before it (it read the operation pending) completes it, and only that session.
        touched = {event["subject"] for event in events if event["action"] == "phone.update"}
        for name in set(lapsed_before) - touched:
            status = phones[name]["operation_status"]
            earlier = [leg for leg in self.legs if leg.name == name and leg.begun < lapsed_before[name]]
            assert status == "lapsed" or (status == "succeeded" and earlier), ("a lapse was undone", name, status, step)
        self.revoked, self.warnings = revoked, warnings
        self.events = events[-1]["id"] if events else self.events
        self.runs = self._last("monitor_runs")
        self.step_number += 1
        return {name: lapsed_before.get(name, self.step_number) for name, row in phones.items()
                if row["operation_status"] == "lapsed"}


def _csv_rows(message) -> list[dict]:
    for part in message.iter_attachments():
        if part.get_filename() == "expiring-certificates.csv":
            return list(csv.DictReader(io.StringIO(part.get_content() if isinstance(part.get_content(), str)
                                                   else part.get_content().decode("utf-8"))))
    return []


def _names(example: int) -> list[str]:
    return [f"SEP{example:06X}{index:06X}" for index in range(PHONES)]


class _Run:
    def __init__(self, cluster: _Cluster, example: int):
        self.cluster = cluster
        self.names = _names(example)
        self.identities = {name: PhoneIdentity(PhoneSettings(name)) for name in self.names}
        self.declared: set[str] = set()  # phones an operator's change touched in the current step

    def step(self, step) -> list[int]:
        """Run one step; the nodes that acted in it."""
        cluster, kind = self.cluster, step[0]
        if kind == "wait":
            return cluster.wait(step[1])
        if kind == "hold":  # a phone busy storing its LSC (or making its key) keeps its session up
            live = [leg for leg in cluster.legs if not leg.done]
            return cluster.hold(live[step[1] % len(live)], step[2]) if live else []
        if kind in ("step", "keepalive", "finish"):
            live = [leg for leg in cluster.legs if not leg.done]
            if not live:
                return []
            leg = live[step[1] % len(live)]
            with cluster.acting(leg.node):
                if kind != "keepalive":
                    cluster.advance(leg, "step" if kind == "step" else "done")
                else:
                    cluster.keep_alive(leg)
            return [leg.node]
        if kind == "race":  # two nodes' schedulers tick at once, each in its thread, as on two hosts
            return cluster.race(step[1], step[2])
        node = step[1]
        store = cluster.nodes[node]
        with cluster.acting(node):
            if kind == "tick":
                cluster.schedulers[node].tick()
            elif kind in ("restart", "crash"):  # a crash also ends the node's sessions without a word
                cluster.schedulers[node].close()
                cluster.schedulers[node] = Scheduling(store)
                for leg in cluster.legs:
                    leg.killed = leg.killed or (kind == "crash" and leg.node == node)
            elif kind == "enrol":  # a phone connects, and its session goes as far as ``step[3]``
                name = self.names[step[2]]
                leg = _Leg(node, name, SessionLeg(store, self.identities[name], next(_sessions)), cluster.clocks.shared)
                leg.begun = cluster.step_number
                cluster.legs.append(leg)
                cluster.advance(leg, step[3])
            elif kind == "declare":
                name, minutes = self.names[step[2]], step[3]
                deadline = None if minutes is None else format_utc(cluster.clocks.of(node) + dt.timedelta(minutes=minutes))
                phone_config.converge(store, name, settings={"certificate_operation": "install_upgrade",
                                                             "operation_completes_by": deadline})
            elif kind == "job":
                chosen = [name for index, name in enumerate(self.names) if step[2] >> index & 1]
                now = cluster.clocks.of(node)
                bulk.converge(store, query={"names": chosen},
                              settings={"description": f"job {next(_sessions)}",
                                        "certificate_operation": "install_upgrade"},
                              run_at=format_utc(now + dt.timedelta(minutes=step[3])), now=format_utc(now))
            elif kind == "revoke":
                revocation.revoke_lsc(store, self.names[step[2]], "key_compromise")
        return [node]


@pytest.fixture
def relay(tmp_path):
    running = SmtpRelay(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def clocks(monkeypatch):
    made = _Clocks()
    monkeypatch.setattr(vocabulary, "time", made)
    return made


@pytest.fixture
def cluster(ca_store, relay, clocks):
    service_config.converge(ca_store, parameters_wanted=dict(
        relay.settings(), validity_days=2, renew_before_days=1, monitor_warn_days=[1], monitor_interval_hours=1,
        crl_validity_hours=24), monitor_smtp_password=PASSWORD)
    made = _Cluster(ca_store, clocks, relay)
    yield made
    made.close()


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# A session whose phone is slow to store its LSC, on a node whose clock is behind, while the scheduler of
# a node whose clock is ahead looks (its first tick: it takes the lead).
@example(offsets=[0, -100, 100], steps=[("enrol", 1, 0, "issued"), ("hold", 0, 560), ("tick", 2), ("finish", 0)])
# A deadline passes while a session waits for the phone's key; the scheduler lapses the operation, then the
# session, begun before, completes it.
@example(offsets=[0, 0, 0], steps=[("declare", 0, 0, 1), ("enrol", 1, 0, "key"), ("wait", 200), ("tick", 0),
                                   ("tick", 1), ("tick", 2), ("finish", 0)])
@given(offsets=st.lists(st.integers(-OFFSET, OFFSET), min_size=NODES, max_size=NODES),
       steps=st.lists(STEP, min_size=4, max_size=16))
def test_no_node_tells_a_lie_whatever_its_clock(cluster, offsets, steps):
    cluster.clocks.offsets = [offsets[0]] * NODES if cluster.shared_clock else list(offsets)
    example = next(_examples)
    run = _Run(cluster, example)
    with cluster.acting(None):
        for name in run.names:
            add_phone(cluster.watcher, name, operation="install_upgrade", key_order="ec")
    cluster.resync()
    lapsed: dict[str, int] = {}
    for step in steps:
        acted = run.step(step)
        lapsed = cluster.check(step, acted, run.names, lapsed)
    for leg in cluster.legs:  # the next example starts with no session of this one under way
        leg.killed = True
