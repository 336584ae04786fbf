# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Section 1: what one core of this machine allows, measured in the same run.

Every figure here runs pinned to one core. The per-core ceiling for one enrolment combines
the server's CPU time for a full TLS handshake, one LSC build-and-sign with the real engine, and
one store write of the kind an issuance makes (``synchronous=FULL``, so it includes the fsync).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import ssl
import tempfile
import threading
import time

from _opencapf.ca import authority, keys, lsc
from _opencapf.ca import certificates as c
from _opencapf.dependencies import ec, hashes, padding, x509
from _opencapf.phone_config import PhoneRequest, converge_many
from _opencapf.store import audit, open_store
from _opencapf.store import certificates as certificate_records
from _opencapf.store import phones as phone_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import format_utc

from .harness import Figure, batches, benchmark, derived, inputs_needed, pin, rate

KEY_TYPES = {"rsa2048": "RSA-2048", "ec256": "EC P-256"}
GREETING = b"\x55\x01" + b"\x00" * 10  # stands in for the server's first message (S speaks first)
REPLY = b"\x01"
SERVER_THREADS = 4
CLIENT_THREADS = 4


def _capf_store(ctx, key_type: str):
    """A fresh store in the scratch directory with a CAPF certificate of ``key_type``."""
    directory = tempfile.mkdtemp(prefix=f"limits-{key_type}-", dir=ctx.work_dir)
    store = open_store(os.path.join(directory, "capf.db"), actor="bench")
    authority.ensure(store, key_type=key_type)
    return store, authority.signer(store), directory


def _phone_public_key(key_type: str):
    """A phone key of the same family as the CAPF key (RSA-2048 or EC P-256)."""
    return keys.generate(key_type).public_key()


def _sign_operation(private_key, data: bytes):
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        algorithm = ec.ECDSA(hashes.SHA256())
        return lambda: private_key.sign(data, algorithm)
    scheme = padding.PKCS1v15()
    return lambda: private_key.sign(data, scheme, hashes.SHA256())


def _signatures(ctx, key_type: str) -> dict:
    pin(ctx.core)
    store, signer, _directory = _capf_store(ctx, key_type)
    try:
        sample = lsc.build_lsc(signer, "SEP00000000B0B0", _phone_public_key(key_type), 365, 1)
    finally:
        store.close()
    tbs = sample.tbs_certificate_bytes
    value, details = rate(_sign_operation(signer.private_key, tbs), seconds=ctx.size(1.0, 0.05),
                          rounds=ctx.size(3, 1), clock="cpu")
    details.update(signed_bytes=len(tbs), digest="SHA-256", core=ctx.core)
    baseline = None if key_type == "rsa2048" else "limits.rsa2048_sign"
    return {f"limits.{key_type}_sign": Figure(
        value, "signatures/s/core",
        f"{KEY_TYPES[key_type]} CAPF-key signatures over a SHA-256 digest of LSC-TBS-sized data, "
        "per second of CPU on one pinned core",
        baseline, details)}


@benchmark("limits.rsa2048_sign")
def rsa2048_sign(ctx):
    return _signatures(ctx, "rsa2048")


@benchmark("limits.ec256_sign")
def ec256_sign(ctx):
    return _signatures(ctx, "ec256")


def _lsc_build(ctx, key_type: str) -> dict:
    pin(ctx.core)
    store, signer, _directory = _capf_store(ctx, key_type)
    store.close()
    phone_key = _phone_public_key(key_type)
    serial = x509.random_serial_number()

    def build():
        return lsc.build_lsc(signer, "SEP00000000B0B0", phone_key, 365, serial)

    def encode():  # what the service does: the signer's template (its first LSC is the builder's)
        return lsc.lsc_der(signer, "SEP00000000B0B0", phone_key, 365, serial)

    value, details = rate(build, seconds=ctx.size(1.0, 0.05), rounds=ctx.size(3, 1), clock="cpu")
    certificate = build()
    encoded = x509.load_der_x509_certificate(encode())
    for made in (certificate, encoded):
        if not c.signed_by(made, signer.certificate):
            raise AssertionError("the benchmarked LSC does not verify against the CAPF certificate")
    if encoded.tbs_certificate_bytes != certificate.tbs_certificate_bytes:
        raise AssertionError("the LSC encoded from the template differs from the builder's")
    service_rate, service_details = rate(encode, seconds=ctx.size(1.0, 0.05), rounds=ctx.size(3, 1), clock="cpu")
    details.update(phone_key=KEY_TYPES[key_type], lsc_der_bytes=len(c.to_der(certificate)), core=ctx.core,
                   template_per_second=round(service_rate, 3), template_ms=round(1000 / service_rate, 6),
                   template_rounds_per_cpu_second=service_details["rounds_per_cpu_second"])
    return {f"limits.lsc_build_{key_type}": Figure(
        value, "LSCs/s/core",
        f"full LSC build-and-sign with the library's certificate builder (ca.lsc.build_lsc), {KEY_TYPES[key_type]} "
        "CAPF key and phone key, per second of CPU on one pinned core (the service encodes LSCs from a template, "
        "ca.lsc.lsc_der: template_ms in the details)",
        f"limits.{key_type}_sign", details)}


@benchmark("limits.lsc_build_rsa2048")
def lsc_build_rsa2048(ctx):
    return _lsc_build(ctx, "rsa2048")


@benchmark("limits.lsc_build_ec256")
def lsc_build_ec256(ctx):
    return _lsc_build(ctx, "ec256")


# --- TLS handshakes ------------------------------------------------------------------------------

def _tls_server(cert_path: str, key_path: str, core: int, threads: int, pipe) -> None:
    """A TLS server pinned to one core: handshake, send the greeting, read one byte, close."""
    pin(core)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    listener.settimeout(0.2)
    stop = threading.Event()
    done = [0] * threads
    failed = [0] * threads
    versions: set = set()

    def serve(slot: int) -> None:
        while not stop.is_set():
            try:
                raw, _peer = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            raw.settimeout(10)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(GREETING)
                    if tls.recv(1) == REPLY:
                        done[slot] += 1
                        versions.add(tls.version())
                    else:
                        failed[slot] += 1
            except (OSError, ssl.SSLError):
                failed[slot] += 1
            finally:
                raw.close()

    cpu_start = time.process_time()
    workers = [threading.Thread(target=serve, args=(slot,), daemon=True) for slot in range(threads)]
    for worker in workers:
        worker.start()
    pipe.send({"port": listener.getsockname()[1]})
    if pipe.poll(600):
        pipe.recv()
    stop.set()
    for worker in workers:
        worker.join(15)
    pipe.send({"handshakes": sum(done), "failures": sum(failed), "cpu_seconds": time.process_time() - cpu_start,
               "versions": sorted(versions)})


def _recv_exactly(tls, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = tls.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _tls_client(port: int, cafile: str, core: int, threads: int, seconds: float, warmup: int, pipe) -> None:
    """Full handshakes only: a new connection and no session for each; verify the CAPF certificate."""
    pin(core)
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False  # phones check the CAPF certificate, not a host name

    def once() -> tuple[bool, str]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with context.wrap_socket(raw) as tls:
                if _recv_exactly(tls, len(GREETING)) != GREETING:
                    raise ConnectionError("greeting missing")
                tls.sendall(REPLY)
                return tls.session_reused, tls.cipher()[0]

    for _warm in range(warmup):
        once()
    done = [0] * threads
    failed = [0] * threads
    reused = [0] * threads
    ciphers: set = set()
    gate = threading.Barrier(threads + 1)
    end = [0.0]

    def drive(slot: int) -> None:
        gate.wait()
        while time.perf_counter() < end[0]:
            try:
                was_reused, cipher = once()
            except (OSError, ssl.SSLError, ConnectionError):
                failed[slot] += 1
                continue
            done[slot] += 1
            reused[slot] += int(was_reused)
            ciphers.add(cipher)

    workers = [threading.Thread(target=drive, args=(slot,), daemon=True) for slot in range(threads)]
    for worker in workers:
        worker.start()
    start = time.perf_counter()
    end[0] = start + seconds
    gate.wait()
    for worker in workers:
        worker.join(seconds + 60)
    elapsed = time.perf_counter() - start
    pipe.send({"handshakes": sum(done), "failures": sum(failed), "reused": sum(reused), "seconds": elapsed,
               "ciphers": sorted(ciphers)})


def _receive(pipe, timeout: float, what: str) -> dict:
    if not pipe.poll(timeout):
        raise TimeoutError(f"no answer from the {what} within {timeout:.0f} s")
    return pipe.recv()


def _tls_handshakes(ctx, key_type: str) -> dict:
    store, signer, directory = _capf_store(ctx, key_type)
    store.close()
    cert_path = os.path.join(directory, "capf.pem")
    key_path = os.path.join(directory, "capf.key")
    with open(cert_path, "w", encoding="ascii") as handle:
        handle.write(c.to_pem(signer.certificate))
    keys.save_private_key(key_path, signer.private_key)
    seconds = ctx.size(3.0, 0.3)
    processes = multiprocessing.get_context("fork")
    server_end, server_pipe = processes.Pipe()
    client_end, client_pipe = processes.Pipe()
    server = processes.Process(target=_tls_server, args=(cert_path, key_path, ctx.core, SERVER_THREADS, server_pipe),
                               daemon=True)
    client = None
    server.start()
    try:
        port = _receive(server_end, 30, "TLS server")["port"]
        client = processes.Process(target=_tls_client, args=(port, cert_path, ctx.client_core, CLIENT_THREADS, seconds,
                                                             ctx.size(20, 3), client_pipe), daemon=True)
        client.start()
        measured = _receive(client_end, seconds + 120, "TLS client")
        server_end.send("stop")
        served = _receive(server_end, 60, "TLS server")
    finally:
        for process in (client, server):
            if process is not None:
                process.join(20)
                if process.is_alive():
                    process.terminate()
    if measured["failures"] or served["failures"] or measured["reused"] or not measured["handshakes"]:
        raise AssertionError(f"TLS handshake benchmark was not clean: client {measured}, server {served}")
    per_core = served["handshakes"] / served["cpu_seconds"]
    loopback = measured["handshakes"] / measured["seconds"]
    details = {
        "server_core": ctx.core, "client_core": ctx.client_core, "server_threads": SERVER_THREADS,
        "client_threads": CLIENT_THREADS, "window_seconds": round(measured["seconds"], 6),
        "client_handshakes": measured["handshakes"], "server_handshakes": served["handshakes"],
        "server_cpu_seconds": round(served["cpu_seconds"], 6),
        "server_cpu_ms_per_handshake": round(1000 / per_core, 6),
        "server_busy_share": round(loopback / per_core, 4), "session_reuse": measured["reused"],
        "tls_versions": served["versions"], "ciphers": measured["ciphers"],
        "shared_core": ctx.client_core == ctx.core,
    }
    label = KEY_TYPES[key_type]
    return {
        f"limits.tls_handshake_{key_type}": Figure(
            per_core, "handshakes/s/core",
            f"full TLS handshakes per second of server CPU (user + system, one pinned core) on loopback with a "
            f"{label} CAPF certificate, including accept, the first message and close",
            f"limits.{key_type}_sign", details),
        f"limits.tls_handshake_{key_type}_loopback": Figure(
            loopback, "handshakes/s",
            "the same handshakes counted on the wall clock; below the per-core figure when the client (one core, "
            "its own process) cannot keep the server busy",
            f"limits.tls_handshake_{key_type}", {"server_busy_share": details["server_busy_share"],
                                                 "shared_core": details["shared_core"]}),
    }


@benchmark("limits.tls_handshake_rsa2048",
           ("limits.tls_handshake_rsa2048", "limits.tls_handshake_rsa2048_loopback"))
def tls_handshake_rsa2048(ctx):
    return _tls_handshakes(ctx, "rsa2048")


@benchmark("limits.tls_handshake_ec256", ("limits.tls_handshake_ec256", "limits.tls_handshake_ec256_loopback"))
def tls_handshake_ec256(ctx):
    return _tls_handshakes(ctx, "ec256")


# --- the store ----------------------------------------------------------------------------------

def _record_issuance(store, name: str, certificate, public_key, signer) -> None:
    """The write transaction of ``ca.lsc.issue`` around an already signed LSC."""
    serial = format(certificate.serial_number, "x")
    with store.transaction() as tx:
        if certificate_records.serial_taken(tx, lsc.CAPF_ISSUER, serial):
            raise AssertionError(f"serial {serial} repeated")
        service_records.read(tx)
        phone = phone_records.get(tx, name)
        if phone is None:  # a device not declared yet, created as ca.lsc.issue creates it
            converge_many(tx, store.actor, store.secret(), [(None, PhoneRequest(name, {}))], via="issue")
            phone = phone_records.get(tx, name)
        not_after = format_utc(c.not_after(certificate))
        certificate_id = certificate_records.insert(
            tx, phone_id=phone["id"], kind="lsc", serial=serial, issuer=lsc.CAPF_ISSUER,
            fingerprint=c.fingerprint(certificate), public_key_fingerprint=c.public_key_fingerprint(public_key),
            status="issued", source="bench", pem=c.to_pem(certificate),
            not_before=format_utc(c.not_before(certificate)), not_after=not_after,
        )
        audit.record(tx, store.actor, "certificate.issued", name, certificate_id=certificate_id, serial=serial,
                     issuer=lsc.CAPF_ISSUER, signer=signer.common_name, source="bench", not_after=not_after)


def _count_lscs(store) -> int:
    with store.read() as tx:
        return tx.scalar("SELECT count(*) FROM certificates WHERE kind = 'lsc'")


def _store_settings(store) -> dict:
    with store.read() as tx:
        return {"journal_mode": tx.scalar("PRAGMA journal_mode"), "synchronous": tx.scalar("PRAGMA synchronous")}


@benchmark("limits.store_write")
def store_write(ctx):
    pin(ctx.core)
    store, signer, _directory = _capf_store(ctx, "rsa2048")
    count, rounds = ctx.size(300, 10), ctx.size(3, 1)
    needed = inputs_needed(count, rounds)
    public_key = _phone_public_key("rsa2048")
    names = [f"SEP{index:012X}" for index in range(needed)]
    certificates = [lsc.build_lsc(signer, name, public_key, 365, x509.random_serial_number()) for name in names]
    try:
        value, details = batches(lambda i: _record_issuance(store, names[i], certificates[i], public_key, signer),
                                 count=count, rounds=rounds)
        stored = _count_lscs(store)
        details.update(_store_settings(store))
    finally:
        store.close()
    if stored != needed:
        raise AssertionError(f"expected {needed} LSC rows in the store, found {stored}")
    details.update(core=ctx.core, rows_written=stored)
    return {"limits.store_write": Figure(
        value, "writes/s",
        "one issuance's store transaction (phone row, LSC row, audit event) committed with synchronous=FULL, "
        "per wall-clock second (the fsync is waiting, not CPU)",
        None, details)}


@benchmark("limits.lsc_issue_rsa2048")
def lsc_issue_rsa2048(ctx):
    pin(ctx.core)
    store, _signer, _directory = _capf_store(ctx, "rsa2048")
    count, rounds = ctx.size(200, 5), ctx.size(3, 1)
    needed = inputs_needed(count, rounds)
    public_key = _phone_public_key("rsa2048")
    names = [f"SEP{index:012X}" for index in range(needed)]
    try:
        value, details = batches(lambda i: lsc.issue(store, names[i], public_key, source="bench"),
                                 count=count, rounds=rounds)
        stored = _count_lscs(store)
    finally:
        store.close()
    if stored != needed:
        raise AssertionError(f"expected {needed} issued LSCs in the store, found {stored}")
    details.update(core=ctx.core, rows_written=stored)
    return {"limits.lsc_issue_rsa2048": Figure(
        value, "LSCs/s",
        "ca.lsc.issue end to end (sign, then record in one transaction), RSA-2048 CAPF key, one core, wall clock",
        "limits.lsc_build_rsa2048", details)}


def _ceiling(figures: dict, key_type: str) -> Figure:
    handshake = 1 / figures[f"limits.tls_handshake_{key_type}"].value
    sign = 1 / figures[f"limits.lsc_build_{key_type}"].value
    write = 1 / figures["limits.store_write"].value
    write_cpu = figures["limits.store_write"].details.get("cpu_ms_per_operation")
    total = handshake + sign + write
    return Figure(
        1 / total, "enrolments/s/core",
        f"per-core ceiling for one enrolment with a {KEY_TYPES[key_type]} CAPF key: "
        "1 / (server handshake CPU + LSC build-and-sign + store write)",
        f"limits.{key_type}_sign",
        {"handshake_ms": round(1000 * handshake, 4), "lsc_sign_ms": round(1000 * sign, 4),
         "store_write_ms": round(1000 * write, 4),
         "shares": {"handshake": round(handshake / total, 4), "lsc_sign": round(sign / total, 4),
                    "store_write": round(write / total, 4)},
         # While one enrolment waits for its fsync the core can serve others; with the waits fully
         # overlapped (or commits grouped) only the store write's CPU time would count.
         "store_write_cpu_ms": write_cpu,
         "ceiling_if_fsync_waits_overlap": round(1 / (handshake + sign + write_cpu / 1000), 3) if write_cpu else None},
    )


def ceiling_now(ctx, key_type: str) -> Figure:
    """The per-core ceiling measured again, parts and all, on the same cores as section 1: for a run
    that is judged against it, just before and just after that run (the machine's speed drifts
    within a run; a ratio of two measurements minutes apart carries the drift)."""
    figures = {**_tls_handshakes(ctx, key_type), **_lsc_build(ctx, key_type), **store_write(ctx)}
    return _ceiling(figures, key_type)


@derived("limits.enrolment_ceiling_rsa2048",
         ("limits.tls_handshake_rsa2048", "limits.lsc_build_rsa2048", "limits.store_write"))
def enrolment_ceiling_rsa2048(figures):
    return _ceiling(figures, "rsa2048")


@derived("limits.enrolment_ceiling_ec256",
         ("limits.tls_handshake_ec256", "limits.lsc_build_ec256", "limits.store_write"))
def enrolment_ceiling_ec256(figures):
    return _ceiling(figures, "ec256")
