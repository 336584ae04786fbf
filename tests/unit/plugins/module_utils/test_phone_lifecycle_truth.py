"""A fleet's life, step by step: whatever the operator declares, however the phones' sessions go, and
however much time passes, what the store reports of each phone is true.

A state machine (hypothesis' ``RuleBasedStateMachine``) drives a store as the service and its users
do, in any order, for two phones: the operator declares a phone's operation, deadline and
authentication (null string, or a string) through ``phone_config.converge``, the path every module
and bulk job takes; revokes its LSCs; removes it and declares it again; regenerates the CAPF
certificate. The phone's user sets the string the phone sends (right or wrong). A phone connects
and its session runs an exchange at a time, several of a phone at once if it reconnects (the
service's sans-I/O ``ServerSession`` with its ``StoreDecider`` and the simulator's ``PhoneSession``:
the phone completing, losing power, or answering that it did not store its LSC; with the offline CA
it signs its CSR and keeps its key across sessions, or not). A connection is cut (the service notices
and ends the session); the service's process dies (its sessions end with nothing recorded); time
passes (a live session whose step deadline passes times out, as the service's driver ends it); the
offline CA's operator signs a waiting request and imports the LSC; the scheduler runs its round
(abandoned operations, jobs and lapses, expired LSCs' revocation and CRLs, automatic renewal). The
issuer is the CAPF itself or an offline CA, on SQLite and PostgreSQL. The clock is virtual: every
``utc_now`` of the engine reads it, and it only moves forward. LSCs live a day and are renewed a day
before expiry.

The invariants, checked after every step, for every phone:

* every view reports the same operation status: one phone's status (``capf_phone``,
  ``phones show``), the listing and its ``operation_status`` query (bulk jobs, ``phones list``), and
  the CAPF report's row;
* an operation is reported ``in_progress`` only while a session could still be running it: one that
  is live, or one whose process died no longer ago than its time bound and the liveness margin;
* what the scheduler's round records, of the operations and of the key requests, is what the views
  reported just before it (at the same clock);
* after the round, every revoked LSC the CAPF signed that is still valid is on its signer's current
  CRL, and no LSC that is not revoked is on any;
* no LSC is ``installed`` but the one the phone holds; the LSC the phone holds, issued by us and not
  yet expired, is reported ``installed`` once no session of the phone is still running (never
  ``issued``, ``stale`` or ``revoked``), unless the operator revoked it (then ``revoked``); none of this
  about an LSC a session of the phone sent before the phone was removed and added again, which its phone
  may still store (that session records nothing on the phone added again, which cannot know of it);
* an ``install_upgrade`` reported ``succeeded`` means the phone holds an LSC we issued; a ``delete``
  reported ``succeeded`` means it holds none (the same exception);
* an operation reported ``succeeded`` stays so until the operator (a declaration, a revocation, the
  phone's removal) or an automatic renewal arms it again: no session of the phone, whatever it sends
  (a wrong string, none), makes it anything else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import time

import psycopg

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from support.clock import VirtualTime, virtual_clock
from support.leads import cut
from support.sessions import BEHAVIOURS, SessionLeg
from support.third_party_ca import EnterprisePki, pem
from _opencapf.ca import authority
from _opencapf.dependencies import x509
from _opencapf.errors import StoreError
from _opencapf import (enrolment, phone_config, phone_query, renewal, reports, revocation, scheduler, service_config, trust,
                       vocabulary)
from _opencapf.protocol.constants import XCAP_PENDING_KEY, XCAPS_ALL
from _opencapf.server.decider import settle_abandoned
from _opencapf.server.scheduling import LEAD
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import open_store
from _opencapf.store import csrs as csr_records
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import CLOCK_SKEW, LIVENESS_MARGIN_SECONDS, format_utc, parse_utc

pytestmark = pytest.mark.both_backends

MAX_SESSION = 600  # SessionLeg's time bound (seconds)
OPERATIONS = ("install_upgrade", "install_upgrade", "delete", "none")
DEADLINES = (None, "none", 30, 3600, 2 * 86400)  # left as it is, cleared, or seconds from now
ADVANCES = (1, 31, 301, 700, 3600, 86400)
STRINGS = ("2468", "1357")  # the string the operator declares, and a wrong one
INITIAL = {"certificate_operation": "install_upgrade", "authentication_mode": "null_string", "key_order": "ec",
           "ec_key_size": 256}
_examples = itertools.count(1)


class FleetLife(RuleBasedStateMachine):
    store = None
    clock: VirtualTime
    pki: EnterprisePki | None = None  # the offline CA, when the store's issuer is ``offline_ca``
    spread = 0  # seconds the clock of the node that served a session may run ahead of the one reading its phone

    def __init__(self):
        super().__init__()
        example = next(_examples)
        self.names = [f"SEP{example:06X}{index:06X}" for index in range(2)]
        self.identities = {name: PhoneIdentity(PhoneSettings(name)) for name in self.names}
        self.live: list[tuple[str, SessionLeg]] = []
        self.died: list[tuple[str, float]] = []  # (phone, the moment its session's process died)
        self.issued: set[str] = set()  # serials of every LSC a session sent
        self.revoked: set[str] = set()  # serials the operator revoked
        self.rotated = False
        self.removed_under: set[int] = set()  # ids of the sessions whose phone was removed while they ran
        self.disowned: set[str] = set()  # serials such sessions sent: the phone may store one after it was added again
        self.finished: dict[str, tuple] = {}  # phone -> its operation as last reported succeeded
        self.session_ids = itertools.count(example * 1000)
        # Examples share the store and the clock only moves forward: a CAPF certificate near its end is
        # renewed as an operator would (the examples' time spans years in long runs).
        if parse_utc(authority.current(self.store)["not_after"], "not_after") - self.now < dt.timedelta(days=60):
            authority.regenerate(self.store, key_type="ec256")
        for name in self.names:
            phone_config.converge(self.store, name, settings=dict(INITIAL))

    # -- the clock --------------------------------------------------------------------------------

    @property
    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(int(self.clock.time()), dt.timezone.utc)

    def _serving(self, leg: SessionLeg):  # pylint: disable=unused-argument
        """What the service that runs ``leg`` works with meanwhile (one service here: nothing to choose)."""
        return contextlib.nullcontext()

    def _new_leg(self, name: str, behaviour: str, x_caps: int) -> SessionLeg:
        return SessionLeg(self.store, self.identities[name], next(self.session_ids), behaviour, x_caps=x_caps)

    # -- what happens -----------------------------------------------------------------------------

    @rule(phone=st.integers(0, 1), operation=st.sampled_from(OPERATIONS), deadline=st.sampled_from(DEADLINES),
          by_string=st.booleans())
    def declare(self, phone, operation, deadline, by_string):
        self.finished.pop(self.names[phone], None)
        wanted = {"certificate_operation": operation, "authentication_mode": "auth_string" if by_string else "null_string"}
        if deadline == "none":
            wanted["operation_completes_by"] = "none"
        elif deadline is not None:
            wanted["operation_completes_by"] = format_utc(self.now + dt.timedelta(seconds=deadline))
        auth = phone_config.AuthRequest(literal=STRINGS[0]) if by_string else None
        phone_config.converge(self.store, self.names[phone], settings=wanted, auth=auth)

    @precondition(lambda self: self.pki is not None)
    @rule(which=st.integers(0, 3))
    def offline_ca_signs(self, which):
        """The CA operator exports the pending requests, signs one and imports the LSC."""
        waiting = enrolment.pending_csrs(self.store, self.names)
        if waiting:
            request = waiting[which % len(waiting)]
            certificate = self.pki.sign_request(x509.load_pem_x509_csr(request.request))
            enrolment.import_certificates(self.store, "test", [(f"{request.device_name}.pem", pem(certificate).encode())])

    @rule(phone=st.integers(0, 1), by_string=st.booleans(), string=st.sampled_from(STRINGS[:1] * 3 + STRINGS[1:]))
    def user_sets_the_phone(self, phone, by_string, string):
        """The phone's user sets its CAPF authentication: a string (the right one or not), or none."""
        settings_ = self.identities[self.names[phone]].settings
        settings_.auth_mode, settings_.auth_string = ("auth_string", string) if by_string else ("null_string", "")

    @rule(phone=st.integers(0, 1))
    def operator_revokes(self, phone):
        """The operator revokes the phone's LSCs (``capf_phone`` ``revoke``), whatever it holds."""
        name = self.names[phone]
        self.finished.pop(name, None)
        with self.store.read() as tx:
            self.revoked.update(row["serial"] for row in revocation.plan_revocation(tx, name, None))
        phone_config.converge(self.store, name, settings={}, revoke={"reason": "key_compromise"})

    @precondition(lambda self: not self.rotated)
    @rule()
    def capf_certificate_rotated(self):
        """The operator regenerates the CAPF certificate (sessions under way keep theirs); once an example,
        as each retired certificate keeps its CRL until it expires."""
        authority.regenerate(self.store, key_type="ec256")
        self.rotated = True

    @rule(phone=st.integers(0, 1))
    def remove_and_add_again(self, phone):
        """The operator removes the phone (its LSCs go with it) and declares it again: what the phone
        still holds, and what its sessions under way were sent or will be, is no longer ours to report."""
        name = self.names[phone]
        self.finished.pop(name, None)
        phone_config.converge(self.store, name, state="absent")
        phone_config.converge(self.store, name, settings=dict(INITIAL))
        identity = self.identities[name]
        if identity.lsc is not None:
            self.issued.discard(format(identity.lsc.serial_number, "x"))
        for leg_name, leg in self.live:
            if leg_name == name and leg.server.outcome.device_name:  # it had read the phone removed
                self.issued.discard(leg.issued)
                if leg.issued is not None:
                    self.disowned.add(leg.issued)
                self.removed_under.add(leg.session_id)

    @rule(phone=st.integers(0, 1), behaviour=st.sampled_from(sorted(BEHAVIOURS)), exchanges=st.integers(1, 8),
          keeps_key=st.sampled_from((True, True, True, False)))
    def connect(self, phone, behaviour, exchanges, keeps_key):
        """A phone connects; its session runs ``exchanges`` exchanges at once (fewer if it ends). With a
        third-party CA the phone signs its CSR (X-CSR/1), keeping its key across sessions or not."""
        name = self.names[phone]
        x_caps = 0 if self.pki is None else XCAPS_ALL if keeps_key else XCAPS_ALL & ~XCAP_PENDING_KEY
        leg = self._new_leg(name, behaviour, x_caps)
        self.live.append((name, leg))
        for _exchange in range(exchanges):
            if leg.done:
                break
            self._step(leg)

    @precondition(lambda self: self.live)
    @rule(which=st.integers(0, 7))
    def exchange(self, which):
        _name, leg = self.live[which % len(self.live)]
        self._step(leg)

    @precondition(lambda self: self.live)
    @rule(which=st.integers(0, 7))
    def cut(self, which):
        """The phone's connection fails; the service notices and ends the session."""
        _name, leg = self.live[which % len(self.live)]
        with self._serving(leg):
            leg.server.connection_lost("peer closed the connection")
        self._forget_ended()

    @precondition(lambda self: self.live)
    @rule()
    def process_dies(self):
        """The service's process dies: its sessions end with nothing recorded."""
        self.died.extend((name, self.clock.now) for name, _leg in self.live)
        self.live.clear()

    @rule(seconds=st.sampled_from(ADVANCES))
    def time_passes(self, seconds):
        self.clock.now += seconds
        for _name, leg in self.live:  # the driver ends a session whose step deadline passed
            with self._serving(leg):
                deadline = leg.server.deadline
                if deadline is not None and self.clock.time() >= deadline:
                    leg.server.time_passed(self.clock.time())
        self._forget_ended()

    @rule()
    def scheduler_round(self):
        """The scheduler's round, as ``server/scheduling.py`` runs it: what it records of abandoned and
        lapsed operations is what the views reported at the same clock."""
        reported, reported_requests = self._reported(), self._requests(reported=True)
        settle_abandoned(self.store)
        scheduler.run_due(self.store, self.now)
        with self.store.read() as tx:
            stored = {name: (row["operation"], row["operation_status"], row["operation_reason"])
                      for name in self.names for row in [phone_records.get(tx, name)]}
        assert stored == reported, "the scheduler recorded what the views did not report"
        assert self._requests(reported=False) == reported_requests, "the scheduler recorded other key requests"
        revocation.run_duty(self.store, self.now)
        renewal.run(self.store, self.now)
        self.finished.clear()  # a renewal arms the operation again
        self._check_crls()

    def _check_crls(self) -> None:
        """Once the round has signed its CRLs: each revoked LSC of the phones still valid is on its
        signer's current CRL, and no LSC that is not revoked is on any."""
        served = revocation.current_crls(self.store, self.now)
        with self.store.read() as tx:
            lscs = tx.query("SELECT c.serial, c.status, c.not_after FROM certificates c JOIN phones p ON p.id = c.phone_id "
                            "WHERE c.kind = 'lsc' AND c.source = 'capf' AND p.name IN (?, ?)", tuple(self.names))
        listed = {format(entry.serial_number, "x") for row in served
                  for entry in x509.load_der_x509_crl(row["der"])}
        for lsc in lscs:
            valid = parse_utc(lsc["not_after"], "not_after") > self.now
            if lsc["status"] == "revoked" and valid:
                assert lsc["serial"] in listed, ("a revoked LSC still valid is missing from the CRLs", lsc)
            if lsc["status"] != "revoked":
                assert lsc["serial"] not in listed, ("an LSC that is not revoked is on a CRL", lsc)

    def _step(self, leg: SessionLeg) -> None:
        with self._serving(leg):
            event = leg.step(self.clock.time())
        if event == "issued" and leg.session_id not in self.removed_under:
            self.issued.add(leg.issued)
        self._forget_ended()

    def _forget_ended(self) -> None:
        self.live = [(name, leg) for name, leg in self.live if not leg.done]

    # -- what must hold ---------------------------------------------------------------------------

    def _reported(self) -> dict:
        with self.store.read() as tx:
            return {name: (view["operation"], view["operation_status"], view["operation_reason"])
                    for name in self.names
                    for view in [phone_query.phone_status(tx, name, clock_skew=self.store.clock_skew)]}

    def _requests(self, reported: bool) -> dict:
        """The phones' key requests: {id: (status, reason)} as the CSR views report them, or as stored."""
        with self.store.read() as tx:
            if reported:
                rows = csr_records.listing(tx, None, now=format_utc(self.now), clock_skew=self.store.clock_skew)
            else:
                rows = tx.query("SELECT r.id, p.name AS device_name, r.status, r.reason FROM csrs r "
                                "JOIN phones p ON p.id = r.phone_id")
        return {row["id"]: (row["status"], row["reason"]) for row in rows if row["device_name"] in self.names}

    @invariant()
    def every_view_reports_the_same_status(self):
        skew = self.store.clock_skew
        with self.store.read() as tx:
            for name in self.names:
                status = phone_query.phone_status(tx, name, clock_skew=skew)["operation_status"]
                (row,) = reports.phone_rows(tx, {"names": [name]}, clock_skew=skew)
                matching = phone_query.select(tx, {"names": [name], "operation_status": [status]}, clock_skew=skew)
                others = [other for other in vocabulary.OPERATION_STATUSES if other != status]
                unmatched = phone_query.select(tx, {"names": [name], "operation_status": others}, clock_skew=skew)
                assert len(matching) == 1 and not unmatched, (name, status)
                assert row["operation_status"] == status, (name, row["operation_status"], status)

    @invariant()
    def in_progress_only_while_a_session_may_run(self):
        window = MAX_SESSION + LIVENESS_MARGIN_SECONDS + self.store.clock_skew.total_seconds() + self.spread + 60
        for name, (_operation, status, _reason) in self._reported().items():
            if status != "in_progress":
                continue
            running = any(leg_name == name for leg_name, _leg in self.live)
            recent = any(dead == name and self.clock.now - moment <= window for dead, moment in self.died)
            assert running or recent, f"{name} reported in_progress with no session that may still run it"

    @invariant()
    def a_succeeded_operation_stays_succeeded(self):
        """Only the operator (or a renewal) arms an operation again: no session of the phone, whatever it
        sends, makes one reported succeeded anything else."""
        for name, reported in self._reported().items():
            if reported[1] == "succeeded":
                self.finished.setdefault(name, reported)
            elif name in self.finished:
                raise AssertionError(f"{name}: reported {reported} after {self.finished[name]}")

    @invariant()
    def the_store_reports_the_lsc_the_phone_holds(self):
        with self.store.read() as tx:
            for name in self.names:
                phone = phone_records.get(tx, name)
                lscs = {row["serial"]: row for row in tx.query(
                    "SELECT serial, status, not_after FROM certificates WHERE phone_id = ? AND kind = 'lsc'",
                    (phone["id"],))}
                identity = self.identities[name]
                held = None if identity.lsc is None else format(identity.lsc.serial_number, "x")
                if held in self.disowned:
                    # Stored from a session of the phone as it was before its removal, which had sent it before:
                    # nothing of the phone added again can tell (that session records nothing on it).
                    continue
                installed = sorted(serial for serial, row in lscs.items() if row["status"] == "installed")
                assert installed in ([], [held]), (name, installed, held)
                running = any(leg_name == name for leg_name, _leg in self.live)
                if held in self.issued and not running:
                    assert held in lscs, (name, "holds an LSC we issued that the store does not list", held)
                    if parse_utc(lscs[held]["not_after"], "not_after") > self.now:
                        expected = "revoked" if held in self.revoked else "installed"
                        assert lscs[held]["status"] == expected, (name, lscs[held])
                view = phone_query.phone_status(tx, name, clock_skew=self.store.clock_skew)
                if view["operation_status"] == "succeeded" and not running:
                    if view["operation"] == "install_upgrade":
                        assert held in self.issued, (name, held)
                    elif view["operation"] == "delete":
                        assert held is None, (name, held)


def _issuer(store, issuer: str) -> EnterprisePki | None:
    """The examples' service parameters with ``issuer``; the offline CA (its chain trusted), if it is one.
    The examples share the store: no daily renewal limit couples one to those before it."""
    service_config.converge(store, parameters_wanted={"validity_days": 1, "renew_before_days": 1,
                                                      "renew_max_per_day": 100000, "issuer": issuer})
    if issuer != "offline_ca":
        return None
    pki = EnterprisePki()
    trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    return pki


@pytest.fixture
def fleet_clock(monkeypatch):
    return virtual_clock(monkeypatch)


@pytest.mark.parametrize("issuer", ["capf", "offline_ca"])
def test_what_the_store_reports_of_a_fleet_stays_true(ca_store, fleet_clock, issuer):
    FleetLife.pki = _issuer(ca_store, issuer)
    FleetLife.store = ca_store
    FleetLife.clock = fleet_clock
    run_state_machine_as_test(FleetLife, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))


# -- a cluster ---------------------------------------------------------------------------------------

OFFSET = int(CLOCK_SKEW.total_seconds()) // 2  # seconds a node's clock may run ahead of or behind the operator's


class _NodeClocks(VirtualTime):
    """The clocks of the hosts: the operator's (``now``), and each node's, off from it by the node's offset;
    ``time()`` reads the clock of the one acting now (None: the operator)."""

    def __init__(self, start: float):
        super().__init__(start)
        self.offsets = [0, 0]
        self.acting: int | None = None


class ClusterLife(FleetLife):
    """The same fleet served by two nodes (docs/cluster.md), each a store connection of its own opened as
    ``serve`` opens it, the operator's changes made on a third: a phone connects to either node (and may
    reconnect to the other while its session on the first is still live); the scheduler's round runs on
    the node that holds its lead, whichever asks first; a node's process dies (its sessions end with nothing
    recorded, its store connection and its lead go with it, and it starts again); a node's PostgreSQL
    connection is lost (the transaction that meets the loss fails, the next connects again). On PostgreSQL
    each node's clock runs ahead of or behind the operator's by ``OFFSET`` (any two within ``CLOCK_SKEW``);
    an SQLite store's processes run on one host and read one clock. Every invariant holds through each
    node's views at its own clock, and the three connections' views agree at the same clock. A deeper run:
    ``OPENCAPF_CLUSTER_EXAMPLES`` (default 10), ``OPENCAPF_CLUSTER_STEPS`` (default 30) and
    ``OPENCAPF_CLUSTER_RANDOM`` (set: drawn anew at each run)."""

    clock: _NodeClocks
    watcher = None  # a PostgreSQL connection of its own, that ends a node's connection (pg_terminate_backend)

    def __init__(self):
        self.operator = type(self).operator_store
        super().__init__()
        self.nodes = [self._open(index) for index in range(2)]
        self.node_of: dict[int, int] = {}  # session id -> the node that serves it
        self.cut: dict[int, int] = {}  # node -> the backend pid of its connection that was ended, until it meets it

    def _open(self, index: int):
        return open_store(self.operator.location, state_dir=self.operator.state_dir, actor=f"node-{index}",
                          group_commit=True)

    def teardown(self):
        for node in self.nodes:
            node.close()
        self.clock.acting = None

    @property
    def store(self):
        return self.operator if self.clock.acting is None else self.nodes[self.clock.acting]

    @contextlib.contextmanager
    def _acting(self, node: int | None):
        before, self.clock.acting = self.clock.acting, node
        try:
            yield
        finally:
            self.clock.acting = before

    def _serving(self, leg: SessionLeg):
        return self._acting(self.node_of[leg.session_id])

    def _new_leg(self, name: str, behaviour: str, x_caps: int) -> SessionLeg:
        leg = SessionLeg(self.nodes[self.clock.acting], self.identities[name], next(self.session_ids), behaviour,
                         x_caps=x_caps)
        self.node_of[leg.session_id] = self.clock.acting
        return leg

    def _unaware(self, node: int) -> bool:
        """Whether ``node``'s connection was ended and no transaction of the node met the loss yet."""
        if node not in self.cut:
            return False
        connection = self.nodes[node].backend._connection  # pylint: disable=protected-access
        if connection.closed or connection.broken or connection.info.backend_pid != self.cut[node]:
            del self.cut[node]
            return False
        return True

    @initialize(offsets=st.tuples(*[st.sampled_from((-OFFSET, 0, OFFSET))] * 2))
    def clocks(self, offsets):
        if self.operator.clock_skew:  # nodes on several hosts
            self.clock.offsets = list(offsets)
            self.spread = max(0, *offsets) - min(0, *offsets)

    @rule(node=st.integers(0, 1), phone=st.integers(0, 1), behaviour=st.sampled_from(sorted(BEHAVIOURS)),
          exchanges=st.integers(1, 8), keeps_key=st.sampled_from((True, True, True, False)))
    def connect(self, node, phone, behaviour, exchanges, keeps_key):  # pylint: disable=arguments-differ
        with self._acting(node):
            FleetLife.connect(self, phone, behaviour, exchanges, keeps_key)

    @rule(node=st.integers(0, 1))
    def process_dies(self, node):  # pylint: disable=arguments-differ
        """Node ``node``'s process dies: its sessions end with nothing recorded; its store connection, and the
        leads it held, go with it; it starts again."""
        self.died.extend((name, self.clock.now) for name, leg in self.live if self.node_of[leg.session_id] == node)
        self.live = [(name, leg) for name, leg in self.live if self.node_of[leg.session_id] != node]
        self.nodes[node].close()
        self.cut.pop(node, None)
        self.nodes[node] = self._open(node)

    @precondition(lambda self: self.watcher is not None)
    @rule(node=st.integers(0, 1))
    def connection_lost(self, node):
        """Node ``node``'s PostgreSQL connection is lost (the leads it held go with it); the node does not
        know it until one of its transactions meets the loss."""
        if self._unaware(node):
            return
        with self.nodes[node].read() as tx:
            pid = tx.scalar("SELECT pg_backend_pid() AS pid")
        cut(self.watcher, pid)
        self.cut[node] = pid

    @rule(first=st.integers(0, 1))
    def scheduler_round(self, first):  # pylint: disable=arguments-differ
        """Each node's scheduler ticks, ``first`` first: the one that leads runs the round (a node whose
        connection was lost meets the loss at the tick's first read, and leads nothing in it)."""
        for node in (first, 1 - first):
            store = self.nodes[node]
            try:
                with store.read():
                    pass
            except StoreError:
                assert node in self.cut, "a node's store failed with its connection live"
                continue
            if store.try_lead(LEAD):
                with self._acting(node), store.leading(LEAD):
                    FleetLife.scheduler_round(self)
                return

    @invariant()
    def every_node_reports_the_truth(self):
        """The invariants, through each node's views at its own clock; and the views of every connection
        agree at the same clock."""
        reported = self._reported()
        for node in range(2):
            if self._unaware(node):
                continue
            with self._acting(node):
                FleetLife.every_view_reports_the_same_status(self)
                FleetLife.in_progress_only_while_a_session_may_run(self)
                FleetLife.a_succeeded_operation_stays_succeeded(self)
                FleetLife.the_store_reports_the_lsc_the_phone_holds(self)
            with self._acting(None):
                store, self.operator = self.operator, self.nodes[node]
                try:
                    assert self._reported() == reported, f"node {node} reports otherwise than the operator's view"
                finally:
                    self.operator = store


@pytest.mark.parametrize("issuer", ["capf", "offline_ca"])
def test_what_a_cluster_reports_of_a_fleet_stays_true(ca_store, monkeypatch, issuer):
    clock = _NodeClocks(float(int(time.time())))
    monkeypatch.setattr(vocabulary, "time", clock)
    ClusterLife.pki = _issuer(ca_store, issuer)
    ClusterLife.operator_store, ClusterLife.clock = ca_store, clock
    ClusterLife.watcher = None
    with contextlib.ExitStack() as stack:
        if ca_store.location.startswith("postgresql"):
            ClusterLife.watcher = stack.enter_context(psycopg.connect(ca_store.location, autocommit=True))
        run_state_machine_as_test(ClusterLife, settings=settings(
            max_examples=int(os.environ.get("OPENCAPF_CLUSTER_EXAMPLES", "10")),
            stateful_step_count=int(os.environ.get("OPENCAPF_CLUSTER_STEPS", "30")), deadline=None,
            derandomize=os.environ.get("OPENCAPF_CLUSTER_RANDOM") is None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
