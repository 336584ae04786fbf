"""Several server processes behind one port (``serve --processes``), over real TLS, one SQLite store.

SQLite only: these are about the supervisor and its worker processes, which do the same whatever the
store; ``serve --processes 2`` on a PostgreSQL store is in test_cluster.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket

import pytest

from support.phones import SteppedConnection
from support.protocol import openssl_verify_all
from support.serving import Serving, alive, children, wait_for
from support.store_phones import create_phone
from support.tools import run_cli
from _opencapf.ca import authority
from _opencapf.ca import certificates as c
from _opencapf.ca import crl as crl_module
from _opencapf.dependencies import ec, x509
from _opencapf.protocol.constants import Command
from _opencapf.errors import ValidationError
from _opencapf.simulator.client import Target
from _opencapf.simulator.fleet import run_fleet
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.sockets import has_nodelay, set_nodelay
from _opencapf.store import service as service_records

COUNT = 60
HELD = 12
STOPPED = re.compile(r"CAPF worker (\d) \(pid (\d+)\) stopped after serving (\d+) sessions")


def _start(store, log_path, *extra):
    """``serve`` with a long step timeout (a fleet of 60 at once on 2 cores is slow); started."""
    return Serving.on(store, log_path).start("--step-timeout", "60", *extra)


def test_two_processes_enrol_a_fleet_and_stop_together(ca_store, tmp_path):
    names = [f"SEP{index:012X}" for index in range(0xA1, 0xA1 + COUNT)]
    with ca_store.transaction() as tx:
        for name in names:
            create_phone(tx, name, operation="install_upgrade", key_order="ec")
    capf_pem = authority.current(ca_store)["pem"]
    identities = [PhoneIdentity(PhoneSettings(name), key_factory=lambda kind, size: ec.generate_private_key(ec.SECP256R1()))
                  for name in names]
    with _start(ca_store, tmp_path / "serve.log", "--processes", "2") as serving:
        workers = children(serving.pid)
        assert len(workers) == 2

        async def fleet():
            barrier = asyncio.Barrier(COUNT)  # all sessions open at once: both processes must take some
            return await asyncio.wait_for(run_fleet(identities, Target(("127.0.0.1",), serving.port, cadata=capf_pem,
                                                                       timeout=60),
                                                    concurrency=COUNT, retries=0, barrier=barrier), 170)
        summary = asyncio.run(fleet())
    errors = serving.log()
    assert summary["failed_by_reason"] == {} and summary["ok"] == COUNT
    assert serving.returncode == 0 and "Traceback" not in errors, errors
    assert not any(alive(pid) for pid in workers), "SIGTERM must stop every worker process"
    served = {int(pid): int(count) for _index, pid, count in STOPPED.findall(errors)}
    assert sorted(served) == sorted(workers), errors
    assert sum(served.values()) == COUNT and all(count > 0 for count in served.values()), served
    with ca_store.read() as tx:
        rows = tx.query("SELECT serial, pem FROM certificates WHERE status = 'installed' AND kind = 'lsc'")
        outcomes = tx.query("SELECT outcome, COUNT(*) AS n FROM sessions GROUP BY outcome")
        installed = tx.scalar("SELECT COUNT(*) FROM phones WHERE operation_status = 'succeeded'")
        audited = tx.scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'session.succeeded'")
    assert len(rows) == COUNT and len({row["serial"] for row in rows}) == COUNT
    assert outcomes == [{"outcome": "succeeded", "n": COUNT}]
    assert installed == COUNT and audited == COUNT
    assert openssl_verify_all(capf_pem, [row["pem"] for row in rows], tmp_path) == COUNT


def test_a_capf_rotation_reaches_every_worker_and_the_sessions_under_way(ca_store, tmp_path):
    """Invariant: every LSC is signed by the CAPF certificate active when it is issued, whichever worker
    process issues it and whatever CAPF certificate that process read when its phone connected. Phones
    connect to ``serve --processes 2`` and are asked for their keys; this process regenerates the CAPF
    certificate in the store; then they answer. Each LSC comes from the new certificate (signature,
    issuer, AKI, CRL distribution point), although each phone's TLS connection still shows the old one."""
    crl_url = "http://capf.example.com:8080/capf.crl"
    names = [f"SEP{index:012X}" for index in range(0xC1, 0xC1 + HELD)]
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"crl_url": crl_url})
        for name in names:
            create_phone(tx, name, operation="install_upgrade", key_order="ec")
    old = authority.signer(ca_store).certificate
    with _start(ca_store, tmp_path / "serve.log", "--processes", "2") as serving:
        workers = children(serving.pid)
        # Both workers have read the old certificate; a dozen connections reach both (all on one: 1 in 2048).
        connections = [SteppedConnection(serving.port, PhoneIdentity(
            PhoneSettings(name), key_factory=lambda kind, size: ec.generate_private_key(ec.SECP256R1())))
            for name in names]
        for connection in connections:
            connection.until(Command.KEY_GENERATE_REQUEST)
        authority.regenerate(ca_store, "ec256")
        new = authority.signer(ca_store).certificate
        for connection in connections:
            connection.answer_and_end()
    errors = serving.log()
    assert serving.returncode == 0 and "Traceback" not in errors, errors
    served = {int(pid): int(count) for _index, pid, count in STOPPED.findall(errors)}
    assert sorted(served) == sorted(workers) and all(count > 0 for count in served.values()), served
    assert {connection.server_certificate for connection in connections} == {c.to_der(old)}
    with ca_store.read() as tx:
        rows = tx.query("SELECT pem FROM certificates WHERE status = 'installed' AND kind = 'lsc'")
    assert len(rows) == HELD
    location = crl_module.issuer_location(crl_url, c.fingerprint(new))
    for row in rows:
        lsc = c.load_pem_certificate(row["pem"])
        assert c.signed_by(lsc, new) and lsc.issuer == new.subject and not c.signed_by(lsc, old)
        assert lsc.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value == \
            c.authority_key_identifier(new)
        (point,) = lsc.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert point.full_name[0].value == location
    assert openssl_verify_all(c.to_pem(new), [row["pem"] for row in rows], tmp_path) == HELD


def test_a_worker_that_dies_is_replaced(ca_store, tmp_path):
    with _start(ca_store, tmp_path / "serve.log", "--processes", "2") as serving:
        first = children(serving.pid)
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: len(children(serving.pid)) >= 2 and first[0] not in children(serving.pid), 30, 0.1)
        now = children(serving.pid)
        assert len(now) == 2 and first[0] not in now and first[1] in now
        with socket.create_connection(("127.0.0.1", serving.port), timeout=10):
            pass  # still accepting
    text = serving.log()
    assert serving.returncode == 0 and f"(pid {first[0]}) exited unexpectedly (signal 9); starting a new one" in text, text


def test_a_stop_right_after_a_worker_was_started_again_is_a_clean_stop(ca_store, tmp_path):
    """SIGTERM reaches the worker started in place of a dead one before its event loop handles it: the
    worker ends by the signal's default action, which is the stop asked for, and the service exits 0."""
    for _attempt in range(3):
        with _start(ca_store, tmp_path / "serve.log", "--processes", "2") as serving:
            first = children(serving.pid)
            os.kill(first[0], signal.SIGKILL)
            wait_for(lambda: first[0] not in children(serving.pid) and len(children(serving.pid)) >= 2, 30, 0.01)
        assert serving.returncode == 0, serving.log()


def test_daemon_with_processes_returns_once_listening_and_stops_on_sigterm(ca_store, store_path, tmp_path):
    pid_file, log_file = tmp_path / "capf.pid", tmp_path / "capf.log"
    done = run_cli("--store", store_path, "serve", "--daemon", "--processes", "2", "--listen", "127.0.0.1",
                   "--port", "0", "--pid-file", str(pid_file), "--log-file", str(log_file), timeout=60)
    assert done.returncode == 0, done.stderr
    port = int(re.search(r"port (\d+)", done.stdout).group(1))
    supervisor = int(pid_file.read_text())
    workers = children(supervisor)
    assert len(workers) == 2
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass
    os.kill(supervisor, signal.SIGTERM)
    wait_for(lambda: not any(alive(pid) for pid in [supervisor, *workers]), 60, 0.1)
    assert not any(alive(pid) for pid in [supervisor, *workers])
    assert not pid_file.exists()


def _allowed_cpus(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def test_cpu_affinity_keeps_each_worker_on_its_own_cpu(ca_store, store_path, tmp_path):
    """``--cpu-affinity``: worker i on the i-th usable CPU (its sockets take the connections that CPU
    receives); without it the workers may run anywhere. More processes than CPUs is refused."""
    cpus = sorted(os.sched_getaffinity(0))
    too_many = run_cli("--store", store_path, "serve", "--processes", str(len(cpus) + 1), "--cpu-affinity",
                       "--port", "0")
    assert too_many.returncode == 1 and "--cpu-affinity needs at most one process per usable CPU" in too_many.stderr
    processes = min(2, len(cpus))
    phone_records_names = [f"SEP{index:012X}" for index in range(0xE1, 0xE1 + 4)]
    with ca_store.transaction() as tx:
        for name in phone_records_names:
            create_phone(tx, name, operation="install_upgrade", key_order="ec")
    identities = [PhoneIdentity(PhoneSettings(name), key_factory=lambda kind, size: ec.generate_private_key(ec.SECP256R1()))
                  for name in phone_records_names]
    with _start(ca_store, tmp_path / "serve.log", "--processes", str(processes), "--cpu-affinity") as serving:
        workers = children(serving.pid)
        pinned = [_allowed_cpus(pid) for pid in workers]
        summary = asyncio.run(run_fleet(identities, Target(("127.0.0.1",), serving.port,
                                                           cadata=authority.current(ca_store)["pem"], timeout=60),
                                        concurrency=4, retries=0))
    assert serving.returncode == 0 and summary["ok"] == 4, summary
    if processes > 1:
        assert sorted(pinned) == [str(cpu) for cpu in cpus[:processes]], pinned


def test_prefer_cpu_sets_the_incoming_cpu_of_a_listening_socket():
    from _opencapf.sockets import prefer_cpu
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert prefer_cpu(sock, 0)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_INCOMING_CPU) == 0


@pytest.mark.parametrize("value", ["-1", "100000"])
def test_processes_outside_its_range_is_refused_naming_the_option(ca_store, store_path, value):
    done = run_cli("--store", store_path, "serve", "--processes", value, "--port", "0")
    assert done.returncode == 2 and "argument --processes: must be 0\u201364" in done.stderr


def test_processes_beyond_this_machine_is_refused_naming_the_option(ca_store, store_path):
    """Within the table's 0-64 but above four per core of this machine (a machine with 16 cores or
    more reaches the table's maximum first)."""
    from _opencapf.cli.serve import max_processes
    value = max_processes() + 1
    done = run_cli("--store", store_path, "serve", "--processes", str(value), "--port", "0")
    if value <= 64:
        assert done.returncode == 1 and f"--processes must be between 0 and {value - 1}" in done.stderr
    else:
        assert done.returncode == 2 and "argument --processes: must be 1\u201364" in done.stderr


def test_set_nodelay_turns_off_nagle_on_tcp_sockets_only():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()) as client:
            accepted, _peer = listener.accept()
            with accepted:
                assert not has_nodelay(accepted)
                assert set_nodelay(accepted) and has_nodelay(accepted)
                assert set_nodelay(client) and has_nodelay(client)
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert not set_nodelay(left)
    assert not set_nodelay(None)


def test_the_server_sets_nodelay_on_every_accepted_connection(ca_store, store_path, monkeypatch):
    from support.protocol import RunningServer
    from _opencapf.server import service

    seen = []
    original = service.CapfServer._accept  # pylint: disable=protected-access

    async def accept(self, sock):
        seen.append(has_nodelay(sock))
        await original(self, sock)

    monkeypatch.setattr(service.CapfServer, "_accept", accept)
    server = RunningServer(store_path)
    try:
        for _attempt in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10):
                pass
        wait_for(lambda: len(seen) >= 3, 10, 0.05)
    finally:
        server.stop()
    assert seen == [True, True, True]


def test_processes_service_parameter_is_the_default(ca_store, store_path, tmp_path):
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"processes": 2})
    with Serving.on(ca_store, tmp_path / "serve.log", processes=None).start() as serving:
        assert len(children(serving.pid)) == 2
    one = run_cli("--store", store_path, "serve", "--processes", "1", "--port", "0", "--listen", "127.0.0.1",
                  "--daemon", "--pid-file", str(tmp_path / "one.pid"), "--log-file", str(tmp_path / "one.log"))
    assert one.returncode == 0, one.stderr
    pid = int((tmp_path / "one.pid").read_text())
    try:
        assert children(pid) == []  # --processes wins over the parameter
    finally:
        os.kill(pid, signal.SIGTERM)


def test_processes_service_parameter_beyond_this_machine_is_refused(ca_store, store_path, monkeypatch):
    """Four processes per core at most: on a 2-core machine a stored 9 is refused by name."""
    from _opencapf.cli import serve as serve_command
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"processes": 9})
    monkeypatch.setattr(serve_command.os, "cpu_count", lambda: 2)
    with pytest.raises(ValidationError, match=r"^the processes service parameter must be at most 8 on this machine"
                                              r".*got 9$"):
        serve_command._check(argparse.Namespace(store=store_path, processes=None, store_threads=4, metrics_address=None))


def _serving_processes(serving) -> int:
    """How many processes serve phones: the supervisor's workers, or the ``serve`` process itself."""
    return len(children(serving.pid)) or 1


@pytest.mark.parametrize("stored, option", [(None, None), (0, None), (1, None), (2, None), (1, "0")],
                         ids=["never set", "stored 0", "stored 1", "stored 2", "--processes 0"])
def test_processes_defaults_to_one_per_usable_core_and_an_explicit_value_wins(ca_store, tmp_path, stored, option):
    """A store that never set ``processes`` (as every store that kept the old default of 1 holds no
    value for it) or holds 0, and ``--processes 0``, serve with one process per usable core, at most
    the cap; an explicit value, stored (1 too) or given, is the number of processes."""
    from _opencapf.server.supervisor import automatic_processes
    if stored is not None:  # a row in the store, whatever the default: set to another value first
        with ca_store.transaction() as tx:
            service_records.write(tx, "test", {"processes": 3})
            service_records.write(tx, "test", {"processes": stored})
        with ca_store.read() as tx:
            assert tx.scalar("SELECT value FROM service_parameters WHERE name = 'processes'") == str(stored)
    extra = ("--processes", option) if option is not None else ()
    with Serving.on(ca_store, tmp_path / "serve.log", processes=None).start(*extra) as serving:
        running = _serving_processes(serving)
    automatic = stored in (None, 0) or option == "0"
    assert running == (automatic_processes() if automatic else stored), serving.log()
    if automatic:
        assert f"processes 0: {running} worker process(es), one per usable core" in serving.log()


def test_automatic_processes_is_one_per_usable_core_up_to_the_cap(monkeypatch):
    from _opencapf.server import supervisor
    from _opencapf.vocabulary import AUTOMATIC_PROCESSES_CAP
    for cores, expected in ((1, 1), (2, 2), (AUTOMATIC_PROCESSES_CAP, AUTOMATIC_PROCESSES_CAP),
                            (64, AUTOMATIC_PROCESSES_CAP)):
        monkeypatch.setattr(supervisor.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert supervisor.usable_cores() == cores and supervisor.automatic_processes() == expected


SPREAD = 200


def test_the_kernel_spreads_connections_evenly_over_the_workers_without_cpu_affinity(ca_store, tmp_path):
    """Each worker has a listening socket of its own on the port (SO_REUSEPORT), and the kernel hashes
    every new connection to one of them: of 200 phone sessions through ``serve --processes 2`` (no
    ``--cpu-affinity``) each worker, by its own count, served at least 30 %. The phones are unknown
    to the store, so each session is a TLS handshake and a short CAPF exchange."""
    identities = [PhoneIdentity(PhoneSettings(f"SEP{index:012X}")) for index in range(0x5000, 0x5000 + SPREAD)]
    with _start(ca_store, tmp_path / "serve.log", "--processes", "2") as serving:
        workers = children(serving.pid)
        target = Target(("127.0.0.1",), serving.port, cadata=authority.current(ca_store)["pem"], timeout=30)
        summary = asyncio.run(run_fleet(identities, target, concurrency=10, retries=0))
    text = serving.log()
    assert serving.returncode == 0 and "Traceback" not in text, text
    assert summary["total"] == SPREAD
    served = {int(pid): int(count) for _index, pid, count in STOPPED.findall(text)}
    assert sorted(served) == sorted(workers) and sum(served.values()) == SPREAD, (served, summary["failed_by_reason"])
    assert all(count >= 0.3 * SPREAD for count in served.values()), served
