# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sections 2 and 3: enrolments over real TLS with the simulator fleet, and the speed-up from a
second server process.

The server is the real ``serve`` command (``python -m _opencapf serve``) in its own process,
pinned to its cores; the simulated phones (``simulator.client.enrol``) run in another process.
Phone keys are generated before the timed part (EC P-256: one per phone; RSA-2048: a pool of
distinct keys shared round-robin, because 10,000 RSA keys would take ten minutes to make; the
server's work does not depend on it). The simulator runs on uvloop when it is installed. Every
enrolment is verified: the simulator must end with ``ok`` and the LSC it installed must carry its own
key and be signed by the CAPF certificate, and afterwards the store must hold one installed LSC and
one succeeded session per phone.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from _opencapf.ca import authority, keys
from _opencapf.ca import certificates as c
from _opencapf.dependencies import InvalidSignature, UnsupportedAlgorithm, hashes, padding, rsa
from _opencapf.protocol.phone import PhoneSession
from _opencapf.protocol.session import ServerSession
from _opencapf.server import event_loop
from _opencapf.server.service import CapfServer
from _opencapf.simulator.client import Target, enrol
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import open_store
from _opencapf.store import service as service_records

from . import ENGINE_PATH, limits
from .harness import Figure, benchmark, derived, pin

KEY_TYPES = {"rsa2048": "RSA-2048", "ec256": "EC P-256"}
CONCURRENCY = (1, 50, 500)
RSA_KEY_POOL = 64
WARMUP = 20
PHONE_TIMEOUT = 10.0  # seconds per read, as capfc (phones) wait
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


FULL_RUNS = ((1, 1000), (50, 1000), (500, 1000), (50, 10_000), (500, 10_000))
SMOKE_SIZES = {1: 4, 50: 10, 500: 12}


def _runs(ctx) -> list[tuple[int, int, int]]:
    """(concurrency, full size, size of this run): 10,000 only at 50 and 500 (sequential enrolments
    show their latency well within 1,000, and 10,000 of them would take minutes)."""
    return [(concurrency, size, ctx.size(size, SMOKE_SIZES[concurrency])) for concurrency, size in FULL_RUNS]


def figure_name(key_type: str, concurrency: int, size: int) -> str:
    return f"enrol.{key_type}_c{concurrency}_n{size}"


# --- the server process ---------------------------------------------------------------------------

def _prepare_store(directory: str, key_type: str, names: list[str]) -> tuple[str, str]:
    """A fresh store with a CAPF certificate of ``key_type`` and every phone waiting for an LSC."""
    path = os.path.join(directory, "capf.db")
    store = open_store(path, actor="bench")
    try:
        authority.ensure(store, key_type=key_type)
        family = "ec" if key_type.startswith("ec") else "rsa"
        with store.transaction() as tx:
            tx.executemany(
                "INSERT INTO phones (name, created_at, updated_at, operation, operation_status, key_order) "
                "VALUES (?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'install_upgrade', 'pending', ?)",
                [(name, family) for name in names])
            # Every simulated phone connects from 127.0.0.1: allow all of them from that one address.
            service_records.write(tx, "bench", {"max_sessions_per_address": 1000})
        return path, authority.current(store)["pem"]
    finally:
        store.close()


def start_server(store_path: str, cores, processes: int, log_path: str,
                 cpu_affinity: bool = False) -> tuple[subprocess.Popen, int]:
    """The real ``serve`` command confined to ``cores``; return it and its port once it listens.
    ``cpu_affinity``: ``--cpu-affinity`` (worker i on the i-th core, taking the connections its core
    receives); without it the kernel spreads connections over the workers' sockets and the workers
    run on any of the cores."""
    command = [sys.executable, "-m", "_opencapf", "--store", store_path, "serve", "--listen", "127.0.0.1",
               "--port", "0", "--processes", str(processes), "--queue-timeout", "300", "--enrolment-interval", "0"]
    if cpu_affinity:
        command.append("--cpu-affinity")
    with open(log_path, "a", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                   env={**os.environ, "PYTHONPATH": ENGINE_PATH},
                                   preexec_fn=lambda: os.sched_setaffinity(0, set(cores)))
    line = process.stdout.readline()
    if not line.startswith("listening on"):
        process.kill()
        process.wait()
        with open(log_path, encoding="utf-8") as log:
            raise AssertionError(f"serve did not start: {line!r}\n{log.read()[-2000:]}")
    return process, int(line.split()[-1])


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.returncode != 0:
        raise AssertionError(f"serve exited with {process.returncode}")


def _server_pids(pid: int) -> list[int]:
    """The serving processes: the serve process itself, or its worker processes under a supervisor."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            children = [int(child) for child in handle.read().split()]
    except OSError:
        children = []
    return [pid, *children]


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of the server process and its workers so far."""
    total = 0
    for each in _server_pids(pid):
        with open(f"/proc/{each}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(") ", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def server_waiting(pid: int) -> float:
    """Seconds the server's threads spent ready to run but waiting for a CPU (``/proc/*/schedstat``):
    the time other work on the machine took from it."""
    total = 0
    for each in _server_pids(pid):
        try:
            threads = os.listdir(f"/proc/{each}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{each}/task/{thread}/schedstat", encoding="ascii") as handle:
                    total += int(handle.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def server_peak_rss(pid: int) -> dict:
    """Peak resident memory (VmHWM) of each serving process, in bytes."""
    peaks = {}
    for each in _server_pids(pid):
        with open(f"/proc/{each}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    peaks[each] = int(line.split()[1]) * 1024
    return peaks


# --- the simulated phones ---------------------------------------------------------------------------

def _identity(name: str, key) -> PhoneIdentity:
    return PhoneIdentity(PhoneSettings(name), key_factory=lambda _kind, _size: key)


class LscCheck:
    """Whether an enrolled phone holds what it should: an LSC that carries the phone's own key and
    whose signature the CAPF certificate's key verifies. What is the same for every phone is made
    once: the CAPF certificate's subject and public key, and the public key DER of each phone key
    (the RSA pool's keys serve many phones each)."""

    def __init__(self, capf_pem: str):
        capf = c.load_pem_certificate(capf_pem)
        self.subject = capf.subject
        self.capf_key = capf.public_key()
        self._key_der: dict = {}

    def key_der(self, key) -> bytes:
        der = self._key_der.get(key)
        if der is None:
            der = self._key_der[key] = c.public_key_der(key.public_key())
        return der

    def signed(self, lsc) -> bool:
        """The CAPF certificate names the LSC's issuer and its key verifies the LSC's signature (as
        ``certificates.signed_by``, with the CAPF key decoded once)."""
        if lsc.issuer != self.subject:
            return False
        parameters = lsc.signature_algorithm_parameters  # RSA: the padding; EC: ECDSA with its hash
        try:
            if isinstance(self.capf_key, rsa.RSAPublicKey):
                self.capf_key.verify(lsc.signature, lsc.tbs_certificate_bytes, parameters, lsc.signature_hash_algorithm)
            else:
                self.capf_key.verify(lsc.signature, lsc.tbs_certificate_bytes, parameters)
        except (InvalidSignature, UnsupportedAlgorithm, TypeError, ValueError):
            return False
        return True

    def failure(self, identity: PhoneIdentity, key) -> str | None:
        """Why the phone's LSC is not right, or None."""
        lsc = identity.lsc
        if lsc is None or c.public_key_der(lsc.public_key()) != self.key_der(key):
            return "no LSC with the phone's key"
        if not self.signed(lsc):
            return "LSC not signed by the CAPF certificate"
        return None


async def _enrol_all(identities, target: Target, concurrency: int, check: LscCheck) -> tuple[list[float], dict]:
    """Enrol every identity, ``concurrency`` at a time; the latency of each (from its connect) and
    the failures by reason. An enrolment counts only when the phone ended with an installed LSC
    that carries its own key and is signed by the CAPF certificate."""
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures: dict[str, int] = {}

    async def one(identity):
        async with limit:
            started = time.perf_counter()
            result = await enrol(identity, target, retries=0)
            elapsed = time.perf_counter() - started
        if result.outcome != "ok":
            reason = f"{result.outcome}: {result.detail}" if result.detail else result.outcome
        else:
            reason = check.failure(identity, identity.key_factory("", 0))
            if reason is None:
                latencies.append(elapsed)
                return
        failures[reason] = failures.get(reason, 0) + 1

    await asyncio.gather(*(one(identity) for identity in identities))
    return latencies, failures


def fleet_loop() -> str:
    """The simulator's event loop: uvloop when installed (its loop costs the phones' process less
    per enrolment, so that the load generator does not limit the server), else asyncio."""
    return event_loop.resolve("auto")


def _fleet(port: int, capf_pem: str, warm: list, timed: list, concurrency: int, cores, pipe) -> None:
    """The client process: warm up, wait for "go", enrol the timed phones, send what happened."""
    os.sched_setaffinity(0, set(cores))
    target = Target(("127.0.0.1",), port, cadata=capf_pem, timeout=PHONE_TIMEOUT)
    check = LscCheck(capf_pem)
    loop = fleet_loop()
    _latencies, warm_failures = event_loop.run(
        _enrol_all([_identity(*item) for item in warm], target, min(concurrency, 10), check), loop)
    identities = [_identity(*item) for item in timed]
    pipe.send({"warm_failures": warm_failures})
    pipe.recv()
    cpu_start = time.process_time()
    start = time.perf_counter()
    latencies, failures = event_loop.run(_enrol_all(identities, target, concurrency, check), loop)
    pipe.send({"seconds": time.perf_counter() - start, "client_cpu_seconds": time.process_time() - cpu_start,
               "latencies": latencies, "failures": failures, "client_event_loop": loop})


def _receive(pipe, timeout: float, what: str) -> dict:
    if not pipe.poll(timeout):
        raise TimeoutError(f"no answer from the {what} within {timeout:.0f} s")
    return pipe.recv()


def key_pool(key_type: str, count: int, smoke: bool) -> list:
    """Phone keys made before anything is timed: one per phone for EC, a pool for RSA."""
    if key_type == "ec256":
        return [keys.generate("ec256") for _index in range(count)]
    return [keys.generate("rsa2048") for _index in range(min(count, 4 if smoke else RSA_KEY_POOL))]


def run_load(directory: str, key_type: str, size: int, concurrency: int, *, server_cores, client_cores,
             processes: int = 1, pool=None, warmup: int = WARMUP, client_processes: int = 1,
             cpu_affinity: bool = False, client_per_core: bool = True) -> dict:
    """One measured run against a fresh store: warm-up, then ``size`` enrolments at ``concurrency``,
    generated by ``client_processes`` simulator processes (each with its share of the phones and of
    the concurrency). ``client_per_core``: with as many simulator processes as client cores, each
    keeps to one of them; otherwise each may run on any client core. ``cpu_affinity``: the server
    runs with ``--cpu-affinity``."""
    names = [f"SEP{0xB0000000 + index:012X}" for index in range(warmup + size)]
    pool = pool or key_pool(key_type, len(names), size < 100)
    phones = [(name, pool[index % len(pool)]) for index, name in enumerate(names)]
    store_path, capf_pem = _prepare_store(directory, key_type, names)
    log_path = os.path.join(directory, "serve.log")
    server, port = start_server(store_path, server_cores, processes, log_path, cpu_affinity)
    context = multiprocessing.get_context("fork")
    clients, pipes = [], []
    for index in range(client_processes):
        parent_end, child_end = context.Pipe()
        share = max(1, concurrency // client_processes + (index < concurrency % client_processes))
        # One simulator process per core when there are as many: each keeps to its core, as the
        # server's workers do, like the receive queues of a network card spread over the CPUs.
        cores = (client_cores[index],) if client_per_core and client_processes == len(client_cores) > 1 \
            else client_cores
        clients.append(context.Process(target=_fleet, daemon=True, args=(
            port, capf_pem, phones[:warmup][index::client_processes], phones[warmup:][index::client_processes],
            share, cores, child_end)))
        pipes.append(parent_end)
    try:
        for client in clients:
            client.start()
        for pipe in pipes:
            warm = _receive(pipe, 300, "simulator (warm-up)")
            if warm["warm_failures"]:
                raise AssertionError(f"warm-up enrolments failed: {warm['warm_failures']}")
        cpu_start, waiting_start = server_cpu(server.pid), server_waiting(server.pid)
        started = time.perf_counter()
        for pipe in pipes:
            pipe.send("go")
        parts = [_receive(pipe, 1800, "simulator") for pipe in pipes]
        measured = {"seconds": time.perf_counter() - started,
                    "client_cpu_seconds": sum(part["client_cpu_seconds"] for part in parts),
                    "latencies": [latency for part in parts for latency in part["latencies"]],
                    "failures": {}}
        for part in parts:
            for reason, count in part["failures"].items():
                measured["failures"][reason] = measured["failures"].get(reason, 0) + count
        client_loop = parts[0]["client_event_loop"]
        cpu = server_cpu(server.pid) - cpu_start
        measured["server_waiting_seconds"] = server_waiting(server.pid) - waiting_start
        peaks = server_peak_rss(server.pid)
    finally:
        for client in clients:
            client.join(30)
            if client.is_alive():
                client.terminate()
        stop_server(server)
    with open(log_path, encoding="utf-8") as log:
        if "Traceback" in log.read():
            raise AssertionError(f"the server logged a traceback; see {log_path}")
    result = _verified(store_path, warmup, measured, cpu, peaks, size, concurrency, processes, key_type,
                       server_cores, client_cores)
    result["client_processes"] = client_processes
    result["client_event_loop"] = client_loop
    result["cpu_affinity"] = cpu_affinity
    result["client_processes_pinned_per_core"] = client_per_core and client_processes == len(client_cores) > 1
    return result


def _verified(store_path, warmup, measured, cpu, peaks, size, concurrency, processes, key_type, server_cores,
              client_cores) -> dict:
    store = open_store(store_path, actor="bench")
    try:
        with store.read() as tx:
            installed = tx.scalar("SELECT COUNT(DISTINCT phone_id) FROM certificates "
                                  "WHERE kind = 'lsc' AND status = 'installed'")
            serials = tx.scalar("SELECT COUNT(DISTINCT serial) FROM certificates WHERE kind = 'lsc'")
            succeeded = tx.scalar("SELECT COUNT(*) FROM sessions WHERE outcome = 'succeeded'")
    finally:
        store.close()
    ok = len(measured["latencies"])
    failures = sum(measured["failures"].values())
    if ok + failures != size:
        raise AssertionError(f"{ok} enrolled + {failures} failed != {size}")
    if installed < ok + warmup or succeeded < ok + warmup or serials < installed:
        raise AssertionError(f"the store does not show every enrolment: {installed} phones with an installed LSC, "
                             f"{succeeded} succeeded sessions, {serials} serials for {ok + warmup} enrolments")
    latencies = sorted(measured["latencies"]) or [0.0]
    seconds = measured["seconds"]
    return {
        "key_type": key_type, "enrolments": size, "phones": size, "warmup_enrolments": warmup,
        "concurrency": concurrency, "server_processes": processes,
        "ok": ok, "failures": failures, "failed_by_reason": measured["failures"],
        "seconds": round(seconds, 4), "rate": ok / seconds,
        "p50_ms": round(1000 * statistics.median(latencies), 3),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_ms_per_enrolment": round(1000 * cpu / max(ok, 1), 4),
        "server_busy_cores": round(cpu / seconds, 4),
        # Ready to run but kept off the CPU by other work (summed over threads; one core's worth is
        # the wall time): high on a shared machine, and then a wall-clock rate says little.
        "server_runnable_waiting_seconds": round(measured["server_waiting_seconds"], 3),
        "client_cpu_ms_per_enrolment": round(1000 * measured["client_cpu_seconds"] / max(ok, 1), 4),
        "server_peak_rss_bytes": sum(peaks.values()), "server_peak_rss_by_process": list(peaks.values()),
        "server_cores": sorted(server_cores), "client_cores": sorted(client_cores),
        "store_installed_lscs": installed, "store_succeeded_sessions": succeeded,
    }


# --- section 2 ---------------------------------------------------------------------------------------

def _enrolment_benchmark(ctx, key_type: str) -> dict:
    figures = {}
    pool = key_pool(key_type, 0, ctx.smoke) if key_type == "rsa2048" else None
    for concurrency, full_size, size in _runs(ctx):
        judged = (concurrency, full_size) == JUDGED_RUN

        def run(concurrency=concurrency, size=size):
            directory = tempfile.mkdtemp(prefix=f"enrol-{key_type}-c{concurrency}-", dir=ctx.work_dir)
            return run_load(directory, key_type, size, concurrency, server_cores=(ctx.core,),
                            client_cores=(ctx.client_core,), pool=pool, warmup=ctx.size(WARMUP, 2))

        result = _judged_sittings(ctx, key_type, run) if judged else run()
        result["cores_given"] = 1
        result["shared_core"] = ctx.core == ctx.client_core
        sittings = f", the sitting of median ratio to the ceiling of {len(result['sittings'])}" if judged else ""
        figures[figure_name(key_type, concurrency, full_size)] = Figure(
            result["rate"], "enrolments/s",
            f"{full_size:,} enrolments over TLS at concurrency {concurrency}, {KEY_TYPES[key_type]} CAPF and phone "
            f"keys, one server process on one core, the simulator on another; every enrolment verified{sittings}",
            f"limits.enrolment_ceiling_{key_type}", result)
    return figures


JUDGED_RUN = (50, 10_000)  # (concurrency, enrolments) of the runs the ceiling targets judge
JUDGED_SITTINGS = 3  # full runs: how many times a judged run is measured, each between two ceilings
CEILING_PARTS = ("handshake_ms", "lsc_sign_ms", "store_write_ms")


def _judged_sittings(ctx, key_type: str, run) -> dict:
    """A judged run measured in ``JUDGED_SITTINGS`` sittings (one at smoke sizes), the per-core
    ceiling measured before the first, between each two and after the last, so that each sitting
    has its own ceiling of the same minutes (``ceiling_beside``). On a machine whose speed drifts
    by more than a code change moves the figures, one sitting decides more than the code; the
    median of several does not. The result is the sitting of median ratio to its ceiling, with
    every sitting's figures in ``sittings``."""
    ceilings = [limits.ceiling_now(ctx, key_type)]
    results = []
    for _sitting in range(ctx.size(JUDGED_SITTINGS, 1)):
        result = run()
        ceilings.append(limits.ceiling_now(ctx, key_type))
        result["ceiling_beside"] = _ceiling_beside(ceilings[-2], ceilings[-1])
        results.append(result)
    summaries = [_sitting_summary(result) for result in results]
    chosen = _median_index([summary["ratio_to_ceiling"] for summary in summaries])
    return {**results[chosen], "sittings": summaries, "sitting_chosen": chosen}


def _sitting_summary(result: dict) -> dict:
    """What the judged figures need of one sitting: its own rate, CPU and ceiling, and the two ratios."""
    beside = result["ceiling_beside"]
    cpu = result["server_cpu_ms_per_enrolment"]
    return {"enrolments": result["enrolments"], "rate": round(result["rate"], 3),
            "server_busy_cores": result["server_busy_cores"],
            "server_cpu_ms_per_enrolment": cpu, "failures": result["failures"], "p99_ms": result["p99_ms"],
            "ceiling_beside": beside,
            # enrolments per second per core used over the ceiling per core: the ceiling's CPU per
            # enrolment over the server's
            "ratio_to_ceiling": round(result["rate"] / result["server_busy_cores"] / beside["ceiling_per_core"], 4),
            "cpu_over_unavoidable": round(cpu / (beside["handshake_ms"] + beside["lsc_sign_ms"]), 4)}


def _median_index(values: list[float]) -> int:
    """The index of the median of ``values`` (of the lower middle one when they are even in number)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    return order[(len(values) - 1) // 2]


def _ceiling_beside(before: Figure, after: Figure) -> dict:
    """The per-core ceiling of the minutes of a run: each part the mean of its measurements just
    before and just after the run; both measurements are kept."""
    parts = {part: round((before.details[part] + after.details[part]) / 2, 4) for part in CEILING_PARTS}
    return {**parts, "ceiling_per_core": round(1000 / sum(parts.values()), 3),
            "before": {part: before.details[part] for part in CEILING_PARTS},
            "after": {part: after.details[part] for part in CEILING_PARTS}}


def _figure_names(key_type: str) -> tuple[str, ...]:
    return tuple(figure_name(key_type, concurrency, size) for concurrency, size in FULL_RUNS)


@benchmark("enrol.rsa2048", _figure_names("rsa2048"), timeout=1500)
def enrol_rsa2048(ctx):
    return _enrolment_benchmark(ctx, "rsa2048")


@benchmark("enrol.ec256", _figure_names("ec256"), timeout=1500)
def enrol_ec256(ctx):
    return _enrolment_benchmark(ctx, "ec256")


@derived("enrol.c50_ceiling_ratio", ("enrol.rsa2048_c50_n10000", "enrol.ec256_c50_n10000",
                                     "limits.enrolment_ceiling_rsa2048", "limits.enrolment_ceiling_ec256"))
def c50_ceiling_ratio(figures):
    """Enrolments per second per core used over the per-core ceiling. "Cores used" is the server's
    CPU time over the wall time of the run (from /proc): on a machine shared with other work the
    server's core is not all its own, and a core it waits on the disk with is a core it does not
    use. The ceiling is the one measured just before and after the run (``ceiling_beside``), and the
    run is the sitting of median ratio of the judged run's sittings (``_judged_sittings``; every
    sitting's ratio is in the details); the ratio to section 1's ceiling, measured minutes earlier,
    and the ratio with the one core the server was given are in the details too."""
    ratios = {}
    for key_type in KEY_TYPES:
        run = figures[f"enrol.{key_type}_c50_n10000"]
        ceiling = run.details["ceiling_beside"]["ceiling_per_core"]
        section_1 = figures[f"limits.enrolment_ceiling_{key_type}"].value
        used = run.details["server_busy_cores"]
        ratios[key_type] = {"rate": round(run.value, 3), "cores_used": used, "ceiling_per_core": ceiling,
                            "ratio": _sitting_summary(run.details)["ratio_to_ceiling"],
                            "ratio_per_core_given": round(run.value / run.details["cores_given"] / ceiling, 4),
                            "ceiling_beside": run.details["ceiling_beside"],
                            "section_1_ceiling_per_core": round(section_1, 3),
                            "ratio_to_section_1_ceiling": round(run.value / used / section_1, 4),
                            "server_cpu_ms_per_enrolment": run.details["server_cpu_ms_per_enrolment"],
                            "enrolments": run.details["enrolments"],
                            "sittings_ratios": [sitting["ratio_to_ceiling"] for sitting in run.details.get("sittings", ())]}
    worst = min(ratios.values(), key=lambda item: item["ratio"])
    return Figure(worst["ratio"], "of ceiling/core",
                  "enrolments per second per core used (server CPU seconds / wall seconds) at concurrency 50, over "
                  "the per-core ceiling measured just before and after that run, the median of the run's sittings; "
                  "the lower of the RSA-2048 and EC P-256 runs", None,
                  {"by_key_type": ratios, "phones": min(item["enrolments"] for item in ratios.values())})


@derived("enrol.c500_failures", tuple(figure_name(key_type, 500, size) for key_type in KEY_TYPES
                                      for size in (1000, 10_000)))
def c500_failures(figures):
    failures = {name: figure.details["failures"] for name, figure in figures.items()}
    reasons = {name: figure.details["failed_by_reason"] for name, figure in figures.items()
               if figure.details["failed_by_reason"]}
    return Figure(sum(failures.values()), "failures",
                  "failed enrolments at concurrency 500 over every key type and size (phones wait 10 s per read, "
                  "no retries)", None, {"by_run": failures, "reasons": reasons,
                                        "enrolments": sum(figure.details["enrolments"] for figure in figures.values()),
                                        "phones": max(figure.details["enrolments"] for figure in figures.values())})


# The CPU target of the throughput issue is stated for one machine: at most 1.9 ms of server CPU per
# RSA-2048 enrolment at concurrency 50 where the ceiling's two parts that no server avoids, the TLS
# handshake and the LSC build-and-sign, cost 1.32 ms. Other machines are judged by the same ratio.
CPU_TARGET_MS, UNAVOIDABLE_REFERENCE_MS = 1.9, 1.32


@derived("enrol.c50_cpu_over_unavoidable_rsa2048", ("enrol.rsa2048_c50_n10000", "limits.enrolment_ceiling_rsa2048"))
def c50_cpu_over_unavoidable(figures):
    """Server CPU per RSA-2048 enrolment at concurrency 50 over what no server avoids: the handshake's
    and the LSC build-and-sign's CPU, measured just before and after that run (section 1's in the
    details), the median of the judged run's sittings (``_judged_sittings``)."""
    run = figures["enrol.rsa2048_c50_n10000"].details
    sittings = run.get("sittings") or [_sitting_summary(run)]
    chosen = _median_index([sitting["cpu_over_unavoidable"] for sitting in sittings])
    run = sittings[chosen]
    ceiling = run["ceiling_beside"]
    section_1 = figures["limits.enrolment_ceiling_rsa2048"].details
    unavoidable = ceiling["handshake_ms"] + ceiling["lsc_sign_ms"]
    cpu = run["server_cpu_ms_per_enrolment"]
    ratio = cpu / unavoidable
    return Figure(ratio, "x handshake+sign",
                  "server CPU per enrolment at concurrency 50 (RSA-2048, one process) over the CPU of a TLS handshake "
                  "and an LSC build-and-sign measured just before and after that run, the median of the run's sittings "
                  "(the target: 1.9 ms where those cost 1.32 ms)",
                  None, {"server_cpu_ms_per_enrolment": cpu, "handshake_ms": ceiling["handshake_ms"],
                         "lsc_sign_ms": ceiling["lsc_sign_ms"], "unavoidable_ms": round(unavoidable, 4),
                         "section_1_unavoidable_ms": round(section_1["handshake_ms"] + section_1["lsc_sign_ms"], 4),
                         "ratio_to_section_1": round(cpu / (section_1["handshake_ms"] + section_1["lsc_sign_ms"]), 4),
                         "unavoidable_share": round(unavoidable / cpu, 4),
                         "avoidable_ms": round(cpu - unavoidable, 4),
                         "reference_equivalent_ms": round(ratio * UNAVOIDABLE_REFERENCE_MS, 4),
                         "target_ratio": round(CPU_TARGET_MS / UNAVOIDABLE_REFERENCE_MS, 4),
                         "sitting": chosen, "sittings": [sitting["cpu_over_unavoidable"] for sitting in sittings],
                         "phones": run["enrolments"]})


@derived("enrol.c500_p99_seconds", tuple(figure_name(key_type, 500, size) for key_type in KEY_TYPES
                                         for size in (1000, 10_000)))
def c500_p99_seconds(figures):
    """The worst p99 latency at concurrency 500 (one server process), and the server's peak memory there."""
    by_run = {name: round(figure.details["p99_ms"] / 1000, 4) for name, figure in figures.items()}
    return Figure(max(by_run.values()), "s",
                  "p99 latency (from the phone's connect to its END_SESSION) at concurrency 500, one server process, "
                  "the worst over every key type and size", None,
                  {"by_run": by_run,
                   "server_peak_rss_bytes": {name: figure.details["server_peak_rss_bytes"]
                                             for name, figure in figures.items()},
                   "phones": max(figure.details["enrolments"] for figure in figures.values())})


# --- where an enrolment's server time goes: the session without TLS or sockets ---------------------

def _session_cpu(ctx, key_type: str) -> Figure:
    """The server's side of whole enrolments (the sans-I/O session, its decider and the store, the
    session record) with the phone simulated in memory: no TLS, no sockets, no event loop. The
    fsyncs are made but not counted (the service shares each one between sessions). Its CPU time
    per enrolment, next to the handshake's and the measured server's, tells how much of an
    enrolment over TLS is the session itself and how much the driver around it."""
    pin(ctx.core)
    size, warmup = ctx.size(1000, 10), ctx.size(50, 2)
    names = [f"SEP{0xC0000000 + index:012X}" for index in range(warmup + size)]
    directory = tempfile.mkdtemp(prefix=f"session-{key_type}-", dir=ctx.work_dir)
    store_path, _pem = _prepare_store(directory, key_type, names)
    pool = key_pool(key_type, len(names), ctx.smoke)
    store = open_store(store_path, actor="bench", group_commit=True)
    store.defer_durability()  # as the service does: durable commits are synced before answering
    server = CapfServer(store)
    cpu = [0.0]

    def on_server(function, *args):
        start = time.process_time()
        result = function(*args)
        cpu[0] += time.process_time() - start
        return result

    def enrol_one(index: int, name: str) -> None:
        parameters, signer = on_server(server._connection_state)  # pylint: disable=protected-access
        record = dict(session_id=index + 1, device_name="", peer="bench", operation="", started_at="2026-01-01T00:00:00Z")
        # As the service does: the decider writes the session record with the session's end.
        decider = on_server(server.session_decider, record, lambda: 1, parameters, signer)
        session = on_server(ServerSession, index + 1, decider)
        out = on_server(session.start, 0.0)
        phone = PhoneSession(_identity(name, pool[index % len(pool)]))
        while not session.closed:
            reply = phone.receive_data(out)
            out = on_server(session.receive_data, reply, 0.0) if reply else b""
            store.sync(store.durable_mark)  # made, not counted: the service shares each fsync between sessions
        outcome = session.outcome
        on_server(server._record_session, record, session, lambda: 1)  # pylint: disable=protected-access
        store.sync(store.durable_mark)
        phone.receive_data(out)
        if outcome.outcome != "succeeded" or not phone.result.stored:
            raise AssertionError(f"{name}: the session ended {outcome.outcome} ({outcome.reason})")

    try:
        for index in range(warmup):
            enrol_one(index, names[index])
        cpu[0] = 0.0
        for index in range(warmup, warmup + size):
            enrol_one(index, names[index])
        with store.read() as tx:
            installed = tx.scalar("SELECT COUNT(*) FROM certificates WHERE kind = 'lsc' AND status = 'installed'")
    finally:
        store.close()
    if installed != warmup + size:
        raise AssertionError(f"{installed} installed LSCs for {warmup + size} enrolments")
    return Figure(size / cpu[0], "enrolments/s/core",
                  f"the server's side of whole enrolments with a {KEY_TYPES[key_type]} CAPF key (session, decider, "
                  "store, session record; fsyncs made, not counted) with the phone in memory: no TLS, no sockets, no "
                  "event loop",
                  f"limits.enrolment_ceiling_{key_type}",
                  {"enrolments": size, "cpu_seconds": round(cpu[0], 4),
                   "cpu_ms_per_enrolment": round(1000 * cpu[0] / size, 4), "installed_lscs": installed})


@benchmark("enrol.session", ("enrol.session_rsa2048", "enrol.session_ec256"), timeout=900)
def enrol_session(ctx):
    return {f"enrol.session_{key_type}": _session_cpu(ctx, key_type) for key_type in KEY_TYPES}


# --- section 3 -----------------------------------------------------------------------------------

def _busy_work(core: int, iterations: int, pipe) -> None:
    """A fixed piece of CPU work like an enrolment's (Python code, DER, an RSA signature); sends
    the CPU seconds it took on ``core``."""
    os.sched_setaffinity(0, {core})
    signing_key = keys.generate("rsa2048")
    subject = keys.generate("ec256").public_key()
    pipe.recv()
    start = time.process_time()
    for index in range(iterations):
        der = c.public_key_der(subject)
        signing_key.sign(der + index.to_bytes(4, "big"), padding.PKCS1v15(), hashes.SHA256())
        sum(value * value for value in range(400))
    pipe.send(time.process_time() - start)


def core_contention(cores, iterations: int, rounds: int = 3) -> dict:
    """CPU seconds the same work takes on one core while the other cores idle, and on every core at
    once: on a virtual machine whose cores share physical resources, each does less per CPU-second
    when all are busy, which bounds the speed-up any program can show."""
    context = multiprocessing.get_context("fork")

    def run(on) -> list[float]:
        pipes, workers = [], []
        for core in on:
            parent_end, child_end = context.Pipe()
            workers.append(context.Process(target=_busy_work, args=(core, iterations, child_end), daemon=True))
            pipes.append(parent_end)
        for worker in workers:
            worker.start()
        for pipe in pipes:
            pipe.send("go")
        seconds = [_receive(pipe, 300, "calibration") for pipe in pipes]
        for worker in workers:
            worker.join(30)
        return seconds

    alone, together = [], []
    for _round in range(rounds):  # alternated: the machine's speed drifts
        alone.append(run(cores[:1])[0])
        together.append(statistics.mean(run(cores)))
    return {"cpu_seconds_alone": [round(s, 4) for s in alone],
            "cpu_seconds_all_cores_busy": [round(s, 4) for s in together],
            "per_core_efficiency_all_busy": round(statistics.median(alone) / statistics.median(together), 4),
            "iterations": iterations, "rounds": rounds}


WORKER_FIGURES = ("workers.one_process", "workers.two_processes", "workers.speedup_1_to_2",
                  "workers.two_processes_shared", "workers.speedup_1_to_2_shared", "workers.cpu_efficiency_2_over_1")


def _speedup_details(one: dict, two: dict, figure: str, size: int, cores: int, contention) -> dict:
    return {"one_process": one["rate"], "two_processes": two["rate"], "two_processes_figure": figure,
            "enrolments": size, "cores_available": cores,
            "server_cpu_ms_per_enrolment": [one["server_cpu_ms_per_enrolment"], two["server_cpu_ms_per_enrolment"]],
            "client_cpu_ms_per_enrolment": [one["client_cpu_ms_per_enrolment"], two["client_cpu_ms_per_enrolment"]],
            "server_busy_cores": [one["server_busy_cores"], two["server_busy_cores"]],
            # Enrolments per server CPU-second, two processes over one: whether the work got dearer when spread.
            "cpu_efficiency_2_over_1": round(one["server_cpu_ms_per_enrolment"] / two["server_cpu_ms_per_enrolment"], 4),
            # The same of the simulator, whose code is the same in both runs: how much dearer the machine
            # makes any program's work when both cores run it (the server's figure over this one: what
            # spreading costs the server beyond that).
            "simulator_cpu_efficiency_2_over_1": round(
                one["client_cpu_ms_per_enrolment"] / two["client_cpu_ms_per_enrolment"], 4),
            # The same fixed work on one core alone and on both at once: the per-core
            # efficiency with both busy bounds what a second core can add on this machine.
            "core_contention": contention}


def _speedup_sittings(sittings: list[dict], key: str) -> dict:
    """The details of the sitting of median ``key`` (one of ``_speedup_details``'s ratios, or the
    speed-up itself, ``two_processes`` over ``one_process``), with every sitting's figures in ``sittings``."""
    def ratio(details: dict) -> float:
        return details["two_processes"] / details["one_process"] if key == "speedup" else details[key]

    chosen = _median_index([ratio(details) for details in sittings])
    summaries = [{"one_process": round(d["one_process"], 1), "two_processes": round(d["two_processes"], 1),
                  "speedup": round(d["two_processes"] / d["one_process"], 4),
                  "cpu_efficiency_2_over_1": d["cpu_efficiency_2_over_1"],
                  "simulator_cpu_efficiency_2_over_1": d["simulator_cpu_efficiency_2_over_1"]} for d in sittings]
    return {**sittings[chosen], "sittings": summaries, "sitting_chosen": chosen, "judged_by": key}


@benchmark("workers.speedup_1_to_2", WORKER_FIGURES, timeout=1200)
def speedup(ctx):
    """The same load (RSA-2048, concurrency 50) against one server process on one core, then twice
    against two server processes on two cores. The machine has only two cores, so the simulator runs
    on the server's cores in every run, as one process per core given; each run measures what the
    whole system (service and load) does with the cores it has.

    * ``workers.two_processes``: ``--cpu-affinity``, each simulator process kept to one core, so
      each worker serves the simulator on its own core and a connection never crosses cores (a
      network card spreading its receive queues over the CPUs, with ``--cpu-affinity``).
    * ``workers.two_processes_shared``: the default (``processes`` 0 gives two here): no
      ``--cpu-affinity``, the kernel spreads connections over the workers' sockets, and the
      workers and the simulator processes run on either core, as the scheduler places them.

    The three runs make a sitting, measured ``JUDGED_SITTINGS`` times (once at smoke sizes); each ratio
    is that of the sitting of its median.
    """
    size = ctx.size(4000, 12)
    pool = key_pool("rsa2048", 0, ctx.smoke)
    two_cores = tuple(ctx.cores[:2]) if len(ctx.cores) >= 2 else tuple(ctx.cores)
    setups = {"one": (1, tuple(ctx.cores[:1]), False), "two": (2, two_cores, True), "shared": (2, two_cores, False)}
    runs, pinned_sittings, spread_sittings = [], [], []
    for _sitting in range(ctx.size(JUDGED_SITTINGS, 1)):
        results = {}
        for name, (processes, cores, steered) in setups.items():
            directory = tempfile.mkdtemp(prefix=f"workers-{name}-", dir=ctx.work_dir)
            results[name] = run_load(directory, "rsa2048", size, 50, server_cores=cores, client_cores=cores,
                                     processes=processes, pool=pool, warmup=ctx.size(WARMUP, 2),
                                     client_processes=len(cores), cpu_affinity=steered and processes > 1,
                                     client_per_core=steered)
        contention = core_contention(tuple(ctx.cores[:2]), ctx.size(2000, 20), ctx.size(3, 1)) \
            if len(ctx.cores) >= 2 else None
        runs.append(results)
        pinned_sittings.append(_speedup_details(results["one"], results["two"], "workers.two_processes", size,
                                                len(ctx.cores), contention))
        spread_sittings.append(_speedup_details(results["one"], results["shared"], "workers.two_processes_shared",
                                                size, len(ctx.cores), contention))
    # Each ratio is that of the sitting of its median (a sitting: the three runs, one after another): on a
    # shared machine one run's rate moves by a fifth between minutes, more than the ratios' targets allow.
    pinned = _speedup_sittings(pinned_sittings, "speedup")
    spread = _speedup_sittings(spread_sittings, "speedup")
    efficiency = _speedup_sittings(spread_sittings, "cpu_efficiency_2_over_1")
    one, two = runs[pinned["sitting_chosen"]]["one"], runs[pinned["sitting_chosen"]]["two"]
    shared = runs[spread["sitting_chosen"]]["shared"]
    description = ("{} enrolments/s at concurrency 50 (RSA-2048), {} server process(es) and as many simulator "
                   "processes sharing {} core(s){}")
    chosen = ", the sitting of median speed-up"
    return {
        "workers.one_process": Figure(one["rate"], "enrolments/s", description.format(f"{size:,}", 1, 1, chosen),
                                      None, one),
        "workers.two_processes": Figure(two["rate"], "enrolments/s", description.format(
            f"{size:,}", 2, 2, ", --cpu-affinity and one simulator process kept to each core" + chosen),
            "workers.one_process", two),
        "workers.speedup_1_to_2": Figure(
            two["rate"] / one["rate"], "x",
            "enrolment rate with two server processes on two cores (--cpu-affinity, one simulator process kept to "
            "each core) over one process on one core, same load, the median of the sittings", None, pinned),
        "workers.two_processes_shared": Figure(shared["rate"], "enrolments/s", description.format(
            f"{size:,}", 2, 2, ", default settings: no --cpu-affinity, server and simulator on either core, the "
            "sitting of median speed-up at default settings"), None, shared),
        "workers.speedup_1_to_2_shared": Figure(
            spread["two_processes"] / spread["one_process"], "x",
            "enrolment rate with two server processes on two cores at default settings (no --cpu-affinity; the "
            "kernel spreads connections, server and simulator share both cores) over one process on one core, the "
            "median of the sittings", None, spread),
        "workers.cpu_efficiency_2_over_1": Figure(
            efficiency["cpu_efficiency_2_over_1"], "of one process",
            "enrolments per server CPU-second with two server processes at default settings (no --cpu-affinity, the "
            "simulator sharing the cores) over one process: 1 when spreading the work makes it no dearer; the median "
            "of the sittings", None, efficiency),
    }
