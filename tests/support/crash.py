"""Crash-safety harness: a real ``opencapf serve`` process killed (SIGKILL) at named crash points
and at random moments while a simulated fleet enrols, restarted every time, and the invariants
that must hold in the store afterwards. Used by tests/e2e/test_crash_faults.py; documented in
docs/reliability.md ("Crash safety")."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from support.protocol import add_phone
from support.tools import ENGINE_PATH, openssl
from _opencapf import bulk, faults
from _opencapf.ca import authority
from _opencapf.ca import certificates as c
from _opencapf.server.decider import LIVENESS_MARGIN_SECONDS, settle_abandoned
from _opencapf.simulator.client import Target, enrol
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.simulator.manufacturing import ManufacturingCa
from _opencapf.store import LATEST_VERSION, Store, migrate
from _opencapf.store.sqlite import SqliteBackend
from _opencapf.vocabulary import utc_now

SEED_ENV = "OPENCAPF_CRASH_SEED"
# Crash points the CAPF service passes while serving phones (faults.POINTS has them all).
SERVICE_POINTS = ("lsc.signed", "lsc.committed", "install.recording", "install.committed", "session.recorded")
TIMER = "random time"
AUTH_MODES = ("null_string", "auth_string", "existing_cert_mic", "existing_cert_lsc")
AUTH_STRING = "20261127"
SESSION_OUTCOMES = {"ok": "succeeded", "no_operation": "no_operation"}
SESSION_BOUND = 30  # serve --max-session-seconds: far above a session of this run, short enough to reason about
ABANDONED = "session ended without a result: the CAPF service stopped mid-session"


@dataclass
class CrashConfig:
    phones: int = 100
    min_enrolments: int = 1000  # install/upgrade operations completed
    min_kills: int = 50  # of the CAPF service
    max_rounds: int = 30
    point_share: float = 0.6  # lives that end at a named crash point; the rest end at a random moment
    max_pass: int = 30  # a named point kills at its 1st..max_pass-th pass
    max_sessions: int = 30  # a random kill comes after 1..max_sessions phone sessions ended
    bulk_crash_share: float = 0.3  # rounds whose re-arming bulk update is first killed part-way
    deadline: float = 600.0  # seconds: a phone that has not completed by then is a failure
    concurrency: int = 25  # phones in a session at once (fewer in flight: less work lost per kill)


class AckingPhone(PhoneIdentity):
    """A simulated phone that remembers the fingerprint of every LSC it acknowledged storing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.acknowledged: set[str] = set()

    def store_lsc(self, der: bytes, private_key) -> bool:
        ok = super().store_lsc(der, private_key)
        if ok:
            self.acknowledged.add(c.fingerprint(self.lsc))
        return ok


def phone_name(index: int) -> str:
    return "SEPC0A5E0%06X" % index


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare(workdir: str, count: int, schema_version: int = 1):
    """A store at ``schema_version`` (the service's first start migrates it) with an EC CAPF
    certificate, a trusted manufacturing CA and ``count`` phones of mixed authentication modes."""
    path = os.path.join(workdir, "crash.db")
    backend = SqliteBackend(path)
    migrate(backend, target=schema_version)
    store = Store(backend, workdir, "crash-test")
    authority.ensure(store, "ec256")
    mic_ca = ManufacturingCa.create(os.path.join(workdir, "mic-ca"))
    mic_ca.trust_in(store)
    phones = []
    for index in range(count):
        name, mode = phone_name(index), AUTH_MODES[index % len(AUTH_MODES)]
        add_phone(store, name, auth_mode=mode, key_order="ec", ec_key_size=256,
                  auth_string=AUTH_STRING if mode == "auth_string" else None)
        settings = PhoneSettings(name, auth_mode=mode, auth_string=AUTH_STRING if mode == "auth_string" else "")
        phones.append(AckingPhone.create(None, settings, mic_ca=mic_ca, mic_key_type="ec256"))
    capf_pem = authority.current(store)["pem"]
    store.close()
    return path, capf_pem, phones


# ``opencapf serve`` forked from a parent that has already imported the engine (a zygote): every
# restart is a fresh process running the real command line, without paying the interpreter's
# start-up and the engine's imports again (half a CPU second each, times every kill). The parent
# reports each child's pid and exit status on its standard output, between the child's lines.
ZYGOTE = r"""
import json, os, sys, traceback
sys.path.insert(0, sys.argv[1])
from _opencapf.cli.main import main
os.write(1, b"ready\n")
for line in sys.stdin:
    order = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.update(order["env"])
        try:
            code = main(order["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 70
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.write(1, f"started {pid}\n".encode())
    _pid, status = os.waitpid(pid, 0)
    os.write(1, f"exited {os.waitstatus_to_exitcode(status)}\n".encode())
"""


class Service:
    """``opencapf serve`` as a child process on a fixed loopback port, restartable at once."""

    def __init__(self, store_path: str, port: int, log_path: str):
        self.store_path, self.port, self.log_path = store_path, port, log_path
        self.pid: int | None = None
        self._zygote: asyncio.subprocess.Process | None = None
        self._exit: asyncio.Future | None = None

    async def _line(self) -> bytes:
        return await asyncio.wait_for(self._zygote.stdout.readline(), 120)

    async def _exited(self) -> int:
        line = await self._line()
        if not line.startswith(b"exited "):
            raise AssertionError(f"unexpected line from the service: {line!r}; see {self.log_path}")
        return int(line.split()[1])

    async def start(self, crash_at: str | None) -> bool:
        """Start; True once it listens, False when it died first (a crash point during start-up)."""
        if self._zygote is None:
            env = {key: value for key, value in os.environ.items() if key != faults.ENV_CRASH_AT}
            with open(self.log_path, "ab") as log:
                self._zygote = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", ZYGOTE, ENGINE_PATH, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, stderr=log, env=env)
            if await self._line() != b"ready\n":
                raise AssertionError(f"the service launcher did not start; see {self.log_path}")
        with open(self.log_path, "ab") as log:
            log.write(f"--- {'crash at ' + crash_at if crash_at else 'to be killed at a random moment'}\n".encode())
        order = {"env": {faults.ENV_CRASH_AT: crash_at} if crash_at else {},
                 "argv": ["--store", self.store_path, "serve", "--listen", "127.0.0.1", "--port", str(self.port),
                          "--processes", "1", "--enrolment-interval", "0", "--step-timeout", "5",
                          "--max-session-seconds", str(SESSION_BOUND)]}
        self._zygote.stdin.write(json.dumps(order).encode() + b"\n")
        await self._zygote.stdin.drain()
        self.pid = int((await self._line()).split()[1])
        line = await self._line()
        if line.startswith(b"exited "):
            self._exit = asyncio.get_running_loop().create_future()
            self._exit.set_result(int(line.split()[1]))
            return False
        if not line.startswith(b"listening on"):
            raise AssertionError(f"unexpected line from the service: {line!r}; see {self.log_path}")
        self._exit = asyncio.ensure_future(self._exited())
        return True

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit is not None and self._exit.done() else None

    async def wait(self) -> int:
        return await self._exit

    async def kill(self) -> int:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # it has just died by itself
                pass
        return await self.wait()

    async def stop(self) -> int:
        code = 0
        if self._exit is not None and self.returncode is None:
            os.kill(self.pid, signal.SIGTERM)
            code = await asyncio.wait_for(self.wait(), 30)
        if self._zygote is not None:
            self._zygote.stdin.close()
            await asyncio.wait_for(self._zygote.wait(), 30)
            self._zygote = None
        return code


class Supervisor:
    """Starts the service, lets it die at a named crash point or kills it at a random moment,
    restarts it, and counts every kill by where it happened.

    Random moments are paced by the fleet's progress, not by the clock alone (a service killed
    every few hundred milliseconds on a busy machine would make no progress at all): the service
    is killed a random 0-200 ms after a random number of phone sessions have ended since it
    started listening."""

    def __init__(self, service: Service, rng: random.Random, config: CrashConfig, progress):
        self.service, self.rng, self.config, self.progress = service, rng, config, progress
        self.kills: Counter = Counter()
        self.history: list[str] = []
        self.unexpected: list[str] = []
        self.settled = 0  # operations a kill left in progress, settled by the scheduler pass after it

    def _choose(self):
        if self.rng.random() < self.config.point_share:
            return ("point", self.rng.choice(SERVICE_POINTS), self.rng.randint(1, self.config.max_pass))
        return ("timer", self.rng.randint(1, self.config.max_sessions), round(self.rng.uniform(0, 0.2), 3))

    def _settle(self) -> None:
        """No process serves the store: what the successor's scheduler does once the sessions' bound
        has passed leaves no operation in progress, each settled one with its reason."""
        problems, settled = scheduler_pass(self.service.store_path)
        self.unexpected.extend(problems)
        self.settled += settled

    def _died_at(self, plan, code: int) -> None:
        if code == -signal.SIGKILL:
            self.kills[plan[1]] += 1
            self.history.append(f"{plan[1]}:{plan[2]}")
        else:
            self.unexpected.append(f"service exited with {code} (armed {plan}); see {self.service.log_path}")

    async def _until(self, stop: asyncio.Event, sessions: int) -> None:
        """Return once ``sessions`` more phone sessions have ended, or the process died, or ``stop``."""
        goal = self.progress() + sessions
        while self.progress() < goal and not stop.is_set() and self.service.returncode is None:
            await asyncio.sleep(0.02)

    async def run(self, stop: asyncio.Event, first=None) -> None:
        plan = first
        while not stop.is_set():
            plan = plan or self._choose()
            crash_at = f"{plan[1]}:{plan[2]}" if plan[0] == "point" else None
            if not await self.service.start(crash_at):
                self._died_at(plan, await self.service.wait())
                self._settle()
                plan = None
                continue
            # A named point normally comes long before this many sessions; if not, kill from outside.
            await self._until(stop, plan[1] if plan[0] == "timer" else 4 * self.config.max_pass)
            if stop.is_set():
                return
            if plan[0] == "timer":
                await asyncio.sleep(plan[2])
            if self.service.returncode is not None:
                self._died_at(plan, self.service.returncode)
            else:
                await self.service.kill()
                self.kills[TIMER] += 1
                self.history.append(f"{TIMER}:{plan[1]}+{plan[2]}s" if plan[0] == "timer"
                                    else f"{TIMER}(armed {crash_at})")
            self._settle()
            plan = None


@dataclass
class FleetRecord:
    completed: list = field(default_factory=list)  # (device, session id, outcome) for each END_SESSION seen
    unexpected: list = field(default_factory=list)
    interrupted: set = field(default_factory=set)  # (round, device) that needed a retry
    attempts: int = 0


async def complete(identity: AckingPhone, target: Target, record: FleetRecord, round_number: int,
                   deadline: float) -> None:
    """One phone's operation to its end: enrol, and when the service is away try again."""
    while True:
        result = await enrol(identity, target, retries=3, retry_interval=0.1, string_entered=True)
        record.attempts += 1
        if result.end_reason is not None and result.session_id is not None:
            record.completed.append((identity.device_name, result.session_id, result.outcome))
        if result.outcome in SESSION_OUTCOMES:
            if result.attempts > 1:  # enrol's own retries got through
                record.interrupted.add((round_number, identity.device_name))
            return
        if result.outcome != "communication_failure":
            record.unexpected.append(f"round {round_number} {identity.device_name}: {result.outcome} {result.detail}")
        record.interrupted.add((round_number, identity.device_name))
        if time.monotonic() > deadline:
            raise AssertionError(f"{identity.device_name} did not complete round {round_number}: {result.detail}")
        await asyncio.sleep(0.05)


BULK_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from _opencapf import bulk
from _opencapf.store import open_store
work = json.loads(sys.argv[3])
with open_store(sys.argv[2], actor="crash-bulk") as store:
    for operation, names in work:
        bulk.converge(store, query={"names": names}, settings={"certificate_operation": operation}, reissue=True)
"""


def _phone_state(store_path: str) -> list:
    connection = sqlite3.connect(store_path)
    try:
        return connection.execute("SELECT name, operation, operation_status, updated_at FROM phones "
                                  "ORDER BY name").fetchall() + connection.execute(
            "SELECT count(*) FROM audit_events WHERE actor = 'crash-bulk'").fetchall()
    finally:
        connection.close()


async def rearm(store_path: str, work: list, crash: bool, problems: list) -> bool:
    """Arm the round's operations with bulk updates; with ``crash`` a first attempt is killed in
    the middle of its transaction and must have changed nothing. True when a kill happened."""
    killed = False
    if crash:
        before = _phone_state(store_path)
        env = dict(os.environ, PYTHONPATH=ENGINE_PATH, **{faults.ENV_CRASH_AT: "bulk.updated:1"})
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", BULK_CHILD, ENGINE_PATH, store_path,
                                                     json.dumps(work), env=env, stderr=asyncio.subprocess.PIPE)
        _out, err = await child.communicate()
        if child.returncode != -signal.SIGKILL:
            problems.append(f"bulk update armed to crash exited with {child.returncode}: {err.decode()[-500:]}")
        killed = True
        if _phone_state(store_path) != before:
            problems.append("a bulk update killed mid-transaction left some of its changes behind")
    backend = SqliteBackend(store_path)
    store = Store(backend, os.path.dirname(store_path), "crash-test")
    try:
        for operation, names in work:
            bulk.converge(store, query={"names": names}, settings={"certificate_operation": operation}, reissue=True)
    finally:
        store.close()
    return killed


def operations_for(round_number: int, count: int) -> dict:
    """install_upgrade for most phones, delete for one in eight from the second round on."""
    deletes = [phone_name(i) for i in range(count) if round_number and (i + round_number) % 8 == 0]
    installs = [phone_name(i) for i in range(count) if phone_name(i) not in set(deletes)]
    return {"install_upgrade": installs, "delete": deletes}


@dataclass
class RunReport:
    seed: int
    seconds: float = 0.0
    rounds: int = 0
    enrolments: int = 0
    deletes: int = 0
    kills: Counter = field(default_factory=Counter)
    history: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    fleet: FleetRecord = field(default_factory=FleetRecord)

    @property
    def service_kills(self) -> int:
        return sum(count for point, count in self.kills.items() if point != "bulk.updated")

    def summary(self) -> str:
        lines = [f"crash-safety run: seed {self.seed} ({SEED_ENV}={self.seed} to repeat the choices)",
                 f"  {self.enrolments} enrolments (install/upgrade) + {self.deletes} deletes by "
                 f"{self.figures.get('phones')} phones in {self.rounds} rounds, {self.seconds:.1f} s",
                 f"  {self.service_kills} kills of the CAPF service, {self.kills.get('bulk.updated', 0)} of a bulk "
                 "update; by point: " + ", ".join(f"{k} {v}" for k, v in sorted(self.kills.items()))]
        lines += [f"  {key}: {value}" for key, value in sorted(self.figures.items()) if key != "phones"]
        lines += [f"  PROBLEM: {problem}" for problem in self.problems]
        return "\n".join(lines)


async def crash_run(workdir: str, config: CrashConfig, seed: int) -> tuple[RunReport, str, str, list]:
    rng = random.Random(seed)
    report = RunReport(seed)
    started = time.monotonic()
    store_path, capf_pem, phones = prepare(workdir, config.phones)
    service = Service(store_path, free_port(), os.path.join(workdir, "service.log"))
    supervisor = Supervisor(service, rng, config, lambda: len(report.fleet.completed))
    stop = asyncio.Event()
    # The first start finds the store one migration behind and dies inside that migration.
    task = asyncio.ensure_future(supervisor.run(stop, first=("point", "migration.statement", 1)))
    target = Target(("127.0.0.1",), service.port, cadata=capf_pem, timeout=5.0)
    deadline = time.monotonic() + config.deadline
    try:
        for round_number in range(config.max_rounds):
            if report.enrolments >= config.min_enrolments and supervisor.kills.total() >= config.min_kills:
                break
            work = operations_for(round_number, config.phones)
            crash = round_number == 1 or (round_number > 1 and rng.random() < config.bulk_crash_share)
            if await rearm(store_path, [(op, names) for op, names in work.items() if names], crash, report.problems):
                report.kills["bulk.updated"] += 1
            limit = asyncio.Semaphore(config.concurrency)

            async def one(phone, round_number=round_number, limit=limit):
                async with limit:
                    await complete(phone, target, report.fleet, round_number, deadline)

            await asyncio.gather(*(one(phone) for phone in phones))
            report.problems.extend(_round_problems(store_path, round_number))
            report.enrolments += len(work["install_upgrade"])
            report.deletes += len(work["delete"])
            report.rounds += 1
            if task.done():
                break
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 60)
        finally:
            await service.stop()
    report.kills.update(supervisor.kills)
    report.figures["operations_left_in_progress_by_a_kill_and_settled"] = supervisor.settled
    report.history = supervisor.history
    report.problems.extend(supervisor.unexpected)
    report.problems.extend(report.fleet.unexpected)
    report.seconds = time.monotonic() - started
    return report, store_path, capf_pem, phones


def scheduler_pass(store_path: str) -> tuple[list, int]:
    """One pass of the scheduler's settling (``decider.settle_abandoned``) at a moment when every
    session of a dead service is past its bound. Returns the problems (an operation still in
    progress, or settled without the reason) and how many operations it settled."""
    store = Store(SqliteBackend(store_path), os.path.dirname(store_path), "scheduler")
    try:
        if store.schema_version() != LATEST_VERSION:  # killed in its migration: no session ran
            return [], 0
        settled = settle_abandoned(store, utc_now() + dt.timedelta(seconds=SESSION_BOUND + LIVENESS_MARGIN_SECONDS + 1))
        with store.read() as tx:
            rows = tx.query("SELECT name, operation_status, operation_reason FROM phones WHERE operation_status = "
                            "'in_progress' OR (operation_status = 'failed' AND operation_reason = '')")
            reasons = {row["name"]: row["operation_reason"] for row in tx.query(
                "SELECT name, operation_reason FROM phones WHERE operation_status = 'failed'")}
    finally:
        store.close()
    problems = [f"{row['name']}: operation {row['operation_status']} with reason {row['operation_reason']!r} "
                "after a scheduler pass with no live session" for row in rows]
    problems += [f"{name}: settled without the reason ({reasons.get(name)!r})" for name in settled
                 if not reasons.get(name, "").startswith(ABANDONED)]
    return problems, len(settled)


def _round_problems(store_path: str, round_number: int) -> list:
    connection = sqlite3.connect(store_path)
    try:
        rows = connection.execute("SELECT name, operation_status FROM phones WHERE operation_status != 'succeeded'"
                                  ).fetchall()
    finally:
        connection.close()
    return [f"round {round_number}: {name} ended with operation_status {status}" for name, status in rows]


def check_invariants(store_path: str, capf_pem: str, phones: list, report: RunReport, workdir: str) -> list:
    """Every invariant of docs/reliability.md ("Crash safety"); returns the violations."""
    problems = []
    connection = sqlite3.connect(store_path)
    connection.row_factory = sqlite3.Row
    try:
        if connection.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("PRAGMA integrity_check is not ok")
        if connection.execute("PRAGMA foreign_key_check").fetchall():
            problems.append("PRAGMA foreign_key_check reports rows")
        version = connection.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        if version != LATEST_VERSION:
            problems.append(f"schema version {version}, expected {LATEST_VERSION} after the killed migration")
        certificates = [dict(row) for row in connection.execute(CERTIFICATE_ROWS)]
        sessions = [dict(row) for row in connection.execute("SELECT * FROM sessions")]
        audit = [dict(row) for row in connection.execute(AUDIT_ROWS)]
        pending_csrs = connection.execute("SELECT count(*) FROM csrs WHERE status = 'pending'").fetchone()[0]
    finally:
        connection.close()
    problems += lsc_problems(certificates, audit, phones, capf_pem, workdir)
    problems += _session_problems(sessions, audit, report)
    if pending_csrs:
        problems.append(f"{pending_csrs} key request(s) (csrs) left pending after every phone completed")
    successes = Counter(event["subject"] for event in audit if event["action"] == "phone.operation_succeeded")
    wrong = {phone.device_name: successes[phone.device_name] for phone in phones
             if successes[phone.device_name] != report.rounds}
    if wrong:
        problems.append(f"operations recorded as succeeded other than once per round: {dict(list(wrong.items())[:5])}")
    problems += scheduler_pass(store_path)[0]  # the run is over: no session is live
    report.figures.update(
        phones=len(phones), certificates=len(certificates), sessions_recorded=len(sessions),
        sessions_completed_by_phones=len(report.fleet.completed),
        interrupted_operations_completed_on_retry=len(report.fleet.interrupted),
        phone_attempts=report.fleet.attempts,
        stale_lscs=sum(1 for row in certificates if row["status"] == "stale"))
    return problems


CERTIFICATE_ROWS = "SELECT c.*, p.name AS phone_name FROM certificates c LEFT JOIN phones p ON p.id = c.phone_id"
AUDIT_ROWS = "SELECT action, actor, subject, details FROM audit_events"


def lsc_problems(certificates: list, audit: list, phones: list, capf_pem: str, workdir: str) -> list:
    """The certificate invariants, whichever store backend the rows (``CERTIFICATE_ROWS``, ``AUDIT_ROWS``)
    come from: serials unique per issuer, every phone's one installed LSC the one it acknowledged, one
    ``certificate.issued`` audit event per certificate, every LSC verified by ``openssl`` against the
    CAPF certificate."""
    problems = _certificate_problems(certificates, phones)
    issued_events = sum(1 for event in audit if event["action"] == "certificate.issued")
    if issued_events != len(certificates):
        problems.append(f"{len(certificates)} certificates but {issued_events} certificate.issued audit events")
    return problems + _openssl_problems(certificates, capf_pem, workdir)


def _certificate_problems(certificates: list, phones: list) -> list:
    problems = []
    by_name = {phone.device_name: phone for phone in phones}
    keys = Counter((row["issuer"], row["serial"]) for row in certificates)
    problems += [f"serial {serial} of {issuer} recorded {n} times" for (issuer, serial), n in keys.items() if n > 1]
    parsed = {row["id"]: c.load_pem_certificate(row["pem"]) for row in certificates}
    serials = Counter((cert.issuer.rfc4514_string(), cert.serial_number) for cert in parsed.values())
    problems += [f"certificate serial {serial:x} of {issuer} appears {n} times" for (issuer, serial), n in serials.items()
                 if n > 1]
    for row in certificates:
        if row["phone_name"] is None:
            problems.append(f"certificate {row['id']} (serial {row['serial']}) has no phone")
            continue
        if row["issuer"] == "capf" and c.common_name(parsed[row["id"]].subject) != row["phone_name"]:
            problems.append(f"certificate {row['id']} is not issued to its phone {row['phone_name']}")
        phone = by_name.get(row["phone_name"])
        if row["installed_at"] and (phone is None or row["fingerprint"] not in phone.acknowledged):
            problems.append(f"certificate {row['id']} of {row['phone_name']} marked installed "
                            "without the phone's acknowledgement")
    for phone in phones:
        installed = {row["fingerprint"] for row in certificates
                     if row["phone_name"] == phone.device_name and row["status"] == "installed"}
        holds = {c.fingerprint(phone.lsc)} if phone.lsc is not None else set()
        if installed != holds:
            problems.append(f"{phone.device_name}: the store has {len(installed)} installed LSC(s) "
                            f"{sorted(installed)[:2]}, the phone holds {sorted(holds)}")
    return problems


def _session_problems(sessions: list, audit: list, report: RunReport) -> list:
    problems = []
    recorded = Counter((row["device_name"], row["session_id"]) for row in sessions)
    outcomes = {(row["device_name"], row["session_id"]): row["outcome"] for row in sessions}
    events = Counter()
    for event in audit:
        if event["action"].startswith("session."):
            events[(event["subject"], json.loads(event["details"]).get("session_id"), event["action"])] += 1
    for row in sessions:
        if events[(row["device_name"], row["session_id"], "session." + row["outcome"])] != 1:
            problems.append(f"session {row['session_id']} of {row['device_name']} has no single audit event")
    for device, session_id, outcome in report.fleet.completed:
        key = (device, session_id)
        if recorded[key] != 1:
            problems.append(f"session {session_id} of {device} ended at the phone ({outcome}) but has "
                            f"{recorded[key]} session records")
        elif outcomes[key] != SESSION_OUTCOMES.get(outcome, outcome):
            problems.append(f"session {session_id} of {device}: the phone saw {outcome}, the record says "
                            f"{outcomes[key]}")
    # A session cut by a crash after its operation result committed has no session record; the
    # result's audit event names it, so the log still accounts for it.
    cut = 0
    for event in audit:
        if event["action"] != "phone.operation_succeeded" or event["actor"] != "capf-server":
            continue
        session_id = json.loads(event["details"]).get("session_id")
        key = (event["subject"], session_id)
        if session_id is None:
            problems.append(f"an operation result of {event['subject']} names no session")
        elif key not in outcomes:
            cut += 1
        elif outcomes[key] != "succeeded":
            problems.append(f"session {session_id} of {event['subject']} succeeded, its record says {outcomes[key]}")
    report.figures["sessions_cut_after_their_result_committed"] = cut
    seen = {(device, session_id) for device, session_id, _outcome in report.fleet.completed}
    report.figures["sessions_recorded_but_end_lost"] = sum(1 for key in recorded if key not in seen)
    report.figures["session_outcomes"] = dict(Counter(row["outcome"] for row in sessions))
    return problems


def _openssl_problems(certificates: list, capf_pem: str, workdir: str) -> list:
    directory = os.path.join(workdir, "lsc")
    os.makedirs(directory, exist_ok=True)
    ca_file = os.path.join(directory, "capf.pem")
    with open(ca_file, "w", encoding="ascii") as handle:
        handle.write(capf_pem)
    files = []
    for row in certificates:
        if row["issuer"] != "capf":
            continue
        path = os.path.join(directory, f"{row['id']}.pem")
        with open(path, "w", encoding="ascii") as handle:
            handle.write(row["pem"])
        files.append(path)
    problems = []
    for start in range(0, len(files), 400):
        batch = files[start:start + 400]
        result = openssl("verify", "-CAfile", ca_file, *batch, check=False)
        good = result.stdout.decode().count(": OK")
        if result.returncode != 0 or good != len(batch):
            problems.append(f"openssl verify: {len(batch) - good} of {len(batch)} LSCs do not verify against the "
                            f"CAPF certificate: {result.stderr.decode()[-300:]}")
    return problems
